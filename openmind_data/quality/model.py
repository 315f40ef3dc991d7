"""The IQS model: image-quality metrics in, one score from 1 (best) to 5 (worst) out.

The score is ``IQS = 1 + 4 p``, ``p`` the model's probability that a rater would exclude the
image (for the shipped model: ABIDE's raters, through MRIQC's metrics; see
``scripts/fit_default_iqs.py``). IQS 3 is a coin toss; 2 is one chance in four. Three steps,
each a part of the parameter file (``iqs_default.json``, shipped with the package;
``openmind quality calibrate`` writes new ones):

1. *Standardize against the peers.* Each metric is turned so that larger is worse (``-log`` of
   the ratios SNR, CNR, FBER, WM2MAX and the WM share; ``log`` of the FWHM; CJV, EFC, QI1, INU
   and ghosting as they are) and standardized robustly, ``z = (x - median) / scale``
   (``scale`` the MAD times 1.4826, never below the metric's floor). The median and scale
   come from the image's peers where it has enough (:mod:`openmind_data.quality.peers`: its
   source dataset, else its modality in the collection), drawn towards the model's own
   references, its *prior*; an image scored alone is scored against the prior. A modality the
   model has no reference for uses the pooled one (``"*"``).
2. *A bounded, monotone badness per metric.* ``c_m = sum_j w_mj * clip(z_m - knot_j, 0,
   cap - knot_j)``: piecewise linear in ``z`` with a bend at each knot, every weight >= 0 (no
   metric can make an image look better by being worse), flat beyond ``cap`` robust SDs. So no
   metric moves the score by more than ``bound(m) = sum_j w_mj (cap - knot_j)``, a figure the
   fit sets. A null metric (it does not apply to the modality) adds nothing.
3. *Logistic.* ``p = 1 / (1 + exp(-(intercept + sum_m c_m)))``.

Fitting (:mod:`openmind_data.quality.fit`) is a non-negative logistic regression of the
targets' exclusion probabilities on the clipped hinges of step 2.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from importlib.resources import files
from pathlib import Path
from typing import Any

import numpy as np

from openmind_data.errors import ConfigError

__all__ = [
    "DATASET_METRICS",
    "DEFAULT_MODEL",
    "METRICS",
    "POOLED",
    "IqsModel",
    "Reference",
    "iqs_of_log_odds",
    "load_model",
    "robust_reference",
    "turn",
    "turned_values",
]

#: Metric column -> how it is made "larger is worse": 'neglog' (-log x), 'log' (log x, for a
#: width, where changes are relative) or 'identity'.
METRICS: dict[str, str] = {
    "iqm_snr": "neglog",
    "iqm_cnr": "neglog",
    "iqm_fber": "neglog",
    "iqm_cjv": "identity",
    "iqm_efc": "identity",
    "iqm_qi1": "identity",
    "iqm_inu": "identity",
    "iqm_ghost": "identity",
    "iqm_fwhm": "log",
    "iqm_wm2max": "neglog",
    "iqm_icvs_wm": "neglog",
}
#: The smallest scale a metric is standardized by (in its turned units): below it differences
#: are within what the metric itself resolves. -log units are relative changes.
SCALE_FLOORS: dict[str, float] = {
    "iqm_snr": 0.05,
    "iqm_cnr": 0.03,
    "iqm_fber": 0.10,
    "iqm_cjv": 0.01,
    "iqm_efc": 0.01,
    "iqm_qi1": 0.005,
    "iqm_inu": 0.01,
    "iqm_ghost": 0.005,
    "iqm_fwhm": 0.03,
    "iqm_wm2max": 0.02,
    "iqm_icvs_wm": 0.02,
}
#: The metrics whose level the acquisition sets as much as the image's quality: the voxel size
#: and reconstruction (FWHM, in voxels), the field strength, coil and sequence (SNR, CNR,
#: FBER). These are standardized against the image's source dataset (its "site"); the
#: artefact measures (CJV, EFC, QI1, INU, ghosting, WM2MAX) against its modality in the
#: collection only, so that a dataset full of artefacts does not look clean against itself.
DATASET_METRICS = ("iqm_snr", "iqm_cnr", "iqm_fber", "iqm_fwhm")
POOLED = "*"
MAD_TO_SD = 1.4826
DEFAULT_MODEL = "iqs_default.json"
FORMAT = "openmind-iqs/2"


def turn(column: str, value: Any) -> float | None:
    """``value`` of metric ``column`` made larger-is-worse, or None where it is missing."""
    if value is None:
        return None
    x = float(value)
    if not math.isfinite(x):
        return None
    if METRICS[column] == "neglog":
        return -math.log(x) if x > 0 else None
    if METRICS[column] == "log":
        return math.log(x) if x > 0 else None
    return x


def turned_values(
    rows: Sequence[Mapping[str, Any]], keys: Sequence[Any]
) -> dict[Any, dict[str, list[float]]]:
    """Key -> metric -> the turned values of the rows with that key (``keys[i]`` is row i's);
    missing and null metrics left out."""
    out: dict[Any, dict[str, list[float]]] = {}
    for row, key in zip(rows, keys, strict=True):
        metrics = out.setdefault(key, {})
        for column in row:
            if column in METRICS:
                value = turn(column, row[column])
                if value is not None:
                    metrics.setdefault(column, []).append(value)
    return out


@dataclass(frozen=True)
class Reference:
    """Robust location and scale of one turned metric over a set of images."""

    median: float
    scale: float
    images: int = 0  # how many images it was measured on (0: not from images, e.g. a prior)


def robust_reference(column: str, values: Sequence[float]) -> Reference:
    """Median and MAD-scale (floored) of turned values of ``column``."""
    x = np.asarray(values, dtype=np.float64)
    median = float(np.median(x))
    mad = float(np.median(np.abs(x - median))) * MAD_TO_SD
    return Reference(median, max(mad, SCALE_FLOORS[column]), len(x))


@dataclass(frozen=True)
class IqsModel:
    """A versioned IQS model (see the module's docstring). ``name`` and ``version`` go into the
    image table's ``iqs_model`` column as ``name/version``."""

    name: str
    version: str
    knots: tuple[float, ...]
    cap: float
    weights: dict[str, tuple[float, ...]]  # metric -> one weight per knot
    intercept: float
    references: dict[str, dict[str, Reference]]  # modality -> metric -> the prior
    #: Peers: a group needs ``min_peers`` images with a metric to have references of its own,
    #: and the prior counts as ``prior_images`` images in them; only ``dataset_metrics`` are
    #: referenced against the image's source dataset (the rest against its modality).
    min_peers: int = 10
    prior_images: int = 10
    dataset_metrics: tuple[str, ...] = DATASET_METRICS
    description: str = ""
    fitted_on: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        unknown = set(self.weights) - set(METRICS)
        if unknown:
            raise ConfigError(f"IQS model {self.name}: unknown metrics {sorted(unknown)}")
        if list(self.knots) != sorted(self.knots) or not self.knots or self.cap <= self.knots[-1]:
            raise ConfigError(
                f"IQS model {self.name}: knots must increase and lie below the cap "
                f"(knots {list(self.knots)}, cap {self.cap})"
            )
        for column, ws in self.weights.items():
            if len(ws) != len(self.knots) or any(w < 0 for w in ws):
                raise ConfigError(
                    f"IQS model {self.name}: {column} needs {len(self.knots)} weights >= 0"
                )
        if POOLED not in self.references:
            raise ConfigError(f"IQS model {self.name}: no pooled ('*') reference")
        if self.min_peers < 2 or self.prior_images < 0:
            raise ConfigError(f"IQS model {self.name}: min_peers >= 2, prior_images >= 0")
        if set(self.dataset_metrics) - set(METRICS):
            raise ConfigError(
                f"IQS model {self.name}: unknown dataset metrics "
                f"{sorted(set(self.dataset_metrics) - set(METRICS))}"
            )

    @property
    def label(self) -> str:
        return f"{self.name}/{self.version}"

    def prior(self, modality: str, column: str) -> Reference | None:
        """The model's own reference for ``column`` in ``modality`` (else the pooled one)."""
        own = self.references.get(modality, {}).get(column)
        return own or self.references[POOLED].get(column)

    def hinges(self, z: float) -> list[float]:
        """The clipped hinges of one standardized badness, one per knot."""
        return [min(max(z - k, 0.0), self.cap - k) for k in self.knots]

    def standardized(
        self,
        metrics: Mapping[str, Any],
        modality: str,
        references: Mapping[str, Reference] | None = None,
    ) -> dict[str, float]:
        """Metric -> z against ``references`` (an image's peers) where given, else the prior;
        absent and null metrics are left out."""
        out: dict[str, float] = {}
        for column in self.weights:
            turned = turn(column, metrics.get(column))
            reference = (references or {}).get(column) or self.prior(modality, column)
            if turned is not None and reference is not None:
                out[column] = (turned - reference.median) / reference.scale
        return out

    def contributions(
        self,
        metrics: Mapping[str, Any],
        modality: str,
        references: Mapping[str, Reference] | None = None,
    ) -> dict[str, float]:
        """Metric -> its share of the log-odds (the intercept is not included)."""
        return {
            column: float(np.dot(self.weights[column], self.hinges(z)))
            for column, z in self.standardized(metrics, modality, references).items()
        }

    def bound(self, column: str) -> float:
        """The most ``column`` can add to the log-odds."""
        pairs = zip(self.weights[column], self.knots, strict=True)
        return float(sum(w * (self.cap - k) for w, k in pairs))

    def score(
        self,
        metrics: Mapping[str, Any],
        modality: str,
        references: Mapping[str, Reference] | None = None,
    ) -> float | None:
        """The IQS of one image, or None when none of the model's metrics is present."""
        parts = self.contributions(metrics, modality, references)
        if not parts:
            return None
        return iqs_of_log_odds(self.intercept + sum(parts.values()))

    # -- the parameter file -----------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "name": self.name,
            "version": self.version,
            "description": self.description,
            "fitted_on": self.fitted_on,
            "transforms": {k: METRICS[k] for k in self.weights},
            "knots": [_round(k) for k in self.knots],
            "cap": _round(self.cap),
            "intercept": _round(self.intercept),
            "weights": {k: [_round(w) for w in ws] for k, ws in self.weights.items()},
            "peers": {
                "min_peers": self.min_peers,
                "prior_images": self.prior_images,
                "dataset_metrics": list(self.dataset_metrics),
            },
            "references": {
                modality: {
                    k: {"median": _round(r.median), "scale": _round(r.scale), "images": r.images}
                    for k, r in sorted(metrics.items())
                }
                for modality, metrics in sorted(self.references.items())
            },
        }

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.to_dict(), indent=2) + "\n", encoding="utf-8")
        return path

    @classmethod
    def from_dict(cls, values: Mapping[str, Any], where: str = "IQS model") -> IqsModel:
        if values.get("format") != FORMAT:
            raise ConfigError(
                f"{where}: not an IQS model file of this toolkit (format "
                f"{values.get('format')!r}, expected {FORMAT!r}); fit one with "
                "`openmind quality calibrate`"
            )
        for column, transform in values.get("transforms", {}).items():
            if METRICS.get(column) != transform:
                raise ConfigError(
                    f"{where}: {column} transform {transform!r} is not this toolkit's"
                )
        try:
            peers = values.get("peers", {})
            return cls(
                name=str(values["name"]),
                version=str(values["version"]),
                description=str(values.get("description", "")),
                fitted_on=dict(values.get("fitted_on", {})),
                knots=tuple(float(k) for k in values["knots"]),
                cap=float(values["cap"]),
                intercept=float(values["intercept"]),
                weights={
                    str(k): tuple(float(w) for w in ws) for k, ws in values["weights"].items()
                },
                min_peers=int(peers.get("min_peers", 10)),
                prior_images=int(peers.get("prior_images", 10)),
                # files written before the split referenced every metric against the dataset
                dataset_metrics=tuple(peers.get("dataset_metrics", values["weights"])),
                references={
                    str(modality): {
                        str(k): Reference(
                            float(r["median"]), float(r["scale"]), int(r.get("images", 0))
                        )
                        for k, r in metrics.items()
                    }
                    for modality, metrics in values["references"].items()
                },
            )
        except (KeyError, TypeError, ValueError) as error:
            raise ConfigError(f"{where}: malformed IQS model ({error!r})") from error


def iqs_of_log_odds(s: float) -> float:
    """``1 + 4 p`` for the log-odds ``s`` of exclusion."""
    return 1.0 + 4.0 / (1.0 + math.exp(-s)) if s > -700 else 1.0


def _round(x: float) -> float:
    return float(f"{x:.6g}")


def load_model(path: str | Path | None = None) -> IqsModel:
    """The IQS model in ``path``, or the one shipped with the package."""
    if path is None:
        text = files("openmind_data.quality").joinpath(DEFAULT_MODEL).read_text(encoding="utf-8")
        where = f"openmind_data/quality/{DEFAULT_MODEL}"
    else:
        try:
            text = Path(path).read_text(encoding="utf-8")
        except OSError as error:
            raise ConfigError(f"IQS model {path}: cannot be read ({error})") from error
        where = str(path)
    try:
        values = json.loads(text)
    except json.JSONDecodeError as error:
        raise ConfigError(f"{where}: not JSON ({error})") from error
    return IqsModel.from_dict(values, where)

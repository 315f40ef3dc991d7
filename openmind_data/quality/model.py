"""The IQS model: image-quality metrics in, one score from 1 (best) to 5 (worst) out.

Three steps, each a line of the parameter file (``iqs_default.json``, shipped with the package;
``openmind quality calibrate`` writes new ones):

1. *Badness per metric.* Each metric is turned so that larger is worse (``-log`` of the ratios
   SNR, CNR and FBER; ``log`` of the FWHM; CJV, EFC, QI1, INU and ghosting as they are) and
   standardized robustly against its modality's reference: ``z = (x - median) / scale``,
   ``scale`` the MAD times 1.4826, never below the metric's floor. A modality the model has no
   reference for uses the pooled one (``"*"``). Only what is clearly worse than the reference
   counts: ``h = max(z - tolerance, 0)``, with a tolerance of one robust standard deviation by
   default (the spread between good images: head size against the field of view moves EFC,
   the scanner's own coil profile INU).
2. *Monotone combination.* ``s = intercept + sum_k weight_k * h_k`` with every weight >= 0, so
   no metric can make an image look better by being worse. A null metric (it does not apply to
   the modality) adds nothing.
3. *Scale.* ``IQS = 1 + 4 * (1 - exp(-s))``: 1 for a reference image, approaching 5, strictly
   increasing in every badness, so severities never tie at the top of the scale.

Calibration fits the references (per-modality medians and scales of the images given) and the
weights (non-negative least squares of ``s`` on the badness, the ratings mapped through the
inverse of step 3). Ratings may be per image or per (dataset, modality) group, as OpenMind
released them; a group counts once, however many images it has.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from importlib.resources import files
from pathlib import Path
from typing import Any

import numpy as np
from scipy.optimize import nnls

from openmind_data.errors import ConfigError

__all__ = [
    "DEFAULT_MODEL",
    "METRICS",
    "IqsModel",
    "fit_model",
    "load_model",
    "rating_to_badness",
]

#: Metric column -> how it is made "larger is worse": 'neglog' (-log x), 'log' (log x, for a
#: width in mm, where changes are relative) or 'identity'.
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
}
POOLED = "*"
MAD_TO_SD = 1.4826
#: Ratings are clipped below 5 before the inverse of ``1 + 4(1 - exp(-s))``, which is infinite.
MAX_RATING = 4.95
DEFAULT_MODEL = "iqs_default.json"
FORMAT = "openmind-iqs/1"


def rating_to_badness(rating: float) -> float:
    """The combined badness ``s`` that scores ``rating`` (the inverse of step 3)."""
    r = min(max(float(rating), 1.0), MAX_RATING)
    return -math.log(1.0 - (r - 1.0) / 4.0)


def _turn(column: str, value: float) -> float | None:
    if METRICS[column] == "neglog":
        return -math.log(value) if value > 0 else None
    if METRICS[column] == "log":
        return math.log(value) if value > 0 else None
    return value


@dataclass(frozen=True)
class Reference:
    median: float
    scale: float


@dataclass(frozen=True)
class IqsModel:
    """A versioned IQS model (see the module's docstring). ``name`` and ``version`` go into the
    image table's ``iqs_model`` column as ``name/version``."""

    name: str
    version: str
    weights: dict[str, float]
    intercept: float
    references: dict[str, dict[str, Reference]]  # modality -> metric -> reference
    tolerance: float = 1.0  # robust standard deviations of badness that count as normal
    description: str = ""
    fitted_on: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        unknown = set(self.weights) - set(METRICS)
        if unknown:
            raise ConfigError(f"IQS model {self.name}: unknown metrics {sorted(unknown)}")
        if any(w < 0 for w in self.weights.values()) or min(self.intercept, self.tolerance) < 0:
            raise ConfigError(
                f"IQS model {self.name}: weights, intercept and tolerance must be >= 0"
            )
        if POOLED not in self.references:
            raise ConfigError(f"IQS model {self.name}: no pooled ('*') reference")

    @property
    def label(self) -> str:
        return f"{self.name}/{self.version}"

    def badness(self, metrics: Mapping[str, Any], modality: str) -> dict[str, float]:
        """Metric -> h = max(z - tolerance, 0) for the metrics present; absent and null ones
        are left out."""
        references = self.references.get(modality, {})
        pooled = self.references[POOLED]
        out: dict[str, float] = {}
        for column in self.weights:
            value = metrics.get(column)
            if value is None or not math.isfinite(float(value)):
                continue
            turned = _turn(column, float(value))
            reference = references.get(column) or pooled.get(column)
            if turned is None or reference is None:
                continue
            z = (turned - reference.median) / reference.scale
            out[column] = max(z - self.tolerance, 0.0)
        return out

    def contributions(self, metrics: Mapping[str, Any], modality: str) -> dict[str, float]:
        """Metric -> its share of ``s`` (weight times badness); the intercept is not included."""
        return {k: self.weights[k] * h for k, h in self.badness(metrics, modality).items()}

    def score(self, metrics: Mapping[str, Any], modality: str) -> float | None:
        """The IQS of one image, or None when none of the model's metrics is present."""
        parts = self.contributions(metrics, modality)
        if not parts:
            return None
        s = self.intercept + sum(parts.values())
        return 1.0 + 4.0 * (1.0 - math.exp(-s))

    # -- the parameter file -----------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "name": self.name,
            "version": self.version,
            "description": self.description,
            "fitted_on": self.fitted_on,
            "transforms": {k: METRICS[k] for k in self.weights},
            "tolerance": _round(self.tolerance),
            "intercept": _round(self.intercept),
            "weights": {k: _round(w) for k, w in self.weights.items()},
            "references": {
                modality: {
                    k: {"median": _round(r.median), "scale": _round(r.scale)}
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
            raise ConfigError(f"{where}: not an IQS model file (format {values.get('format')!r})")
        for column, transform in values.get("transforms", {}).items():
            if METRICS.get(column) != transform:
                raise ConfigError(
                    f"{where}: {column} transform {transform!r} is not this toolkit's"
                )
        try:
            return cls(
                name=str(values["name"]),
                version=str(values["version"]),
                description=str(values.get("description", "")),
                fitted_on=dict(values.get("fitted_on", {})),
                intercept=float(values["intercept"]),
                tolerance=float(values.get("tolerance", 1.0)),
                weights={str(k): float(v) for k, v in values["weights"].items()},
                references={
                    str(modality): {
                        str(k): Reference(float(r["median"]), float(r["scale"]))
                        for k, r in metrics.items()
                    }
                    for modality, metrics in values["references"].items()
                },
            )
        except (KeyError, TypeError, ValueError) as error:
            raise ConfigError(f"{where}: malformed IQS model ({error!r})") from error


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


def _references(
    rows: Sequence[Mapping[str, Any]], min_images: int
) -> dict[str, dict[str, Reference]]:
    """Modality -> metric -> robust reference, from every row (rated or not); pooled under '*'."""
    turned: dict[str, dict[str, list[float]]] = {}
    for row in rows:
        for modality in (str(row["modality"]), POOLED):
            for column in METRICS:
                value = row.get(column)
                if value is None or not math.isfinite(float(value)):
                    continue
                t = _turn(column, float(value))
                if t is not None:
                    turned.setdefault(modality, {}).setdefault(column, []).append(t)
    out: dict[str, dict[str, Reference]] = {}
    for modality, metrics in turned.items():
        for column, values in metrics.items():
            if len(values) < min_images and modality != POOLED:
                continue
            x = np.asarray(values)
            median = float(np.median(x))
            mad = float(np.median(np.abs(x - median))) * MAD_TO_SD
            out.setdefault(modality, {})[column] = Reference(median, max(mad, SCALE_FLOORS[column]))
    if POOLED not in out:
        raise ConfigError("calibration: no image has any quality metric")
    return out


def fit_model(
    rows: Sequence[Mapping[str, Any]],
    targets: Iterable[tuple[int, float, float]],
    *,
    name: str,
    version: str,
    min_images: int = 5,
    tolerance: float = 1.0,
    description: str = "",
    fitted_on: Mapping[str, Any] | None = None,
) -> IqsModel:
    """Fit an IQS model: references from every row, weights from ``targets``, each a (row
    index, rating in [1, 5], weight) triple. A modality with fewer than ``min_images`` images
    with a metric uses the pooled reference for it."""
    targets = list(targets)
    if len(targets) < 3:
        raise ConfigError(f"calibration needs at least 3 rated images, got {len(targets)}")
    references = _references(rows, min_images)
    unfitted = IqsModel(name, version, dict.fromkeys(METRICS, 1.0), 0.0, references, tolerance)
    design = np.zeros((len(targets), len(METRICS) + 1))
    goal = np.zeros(len(targets))
    for i, (index, rating, weight) in enumerate(targets):
        row = rows[index]
        h = unfitted.badness(row, str(row["modality"]))
        root = math.sqrt(weight)
        design[i, 0] = root
        design[i, 1:] = [root * h.get(column, 0.0) for column in METRICS]
        goal[i] = root * rating_to_badness(rating)
    solution, _ = nnls(design, goal)
    return IqsModel(
        name=name,
        version=version,
        intercept=float(solution[0]),
        weights={column: float(w) for column, w in zip(METRICS, solution[1:], strict=True)},
        references=references,
        tolerance=tolerance,
        description=description,
        fitted_on=dict(fitted_on or {}),
    )

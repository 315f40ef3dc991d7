"""Calibration: fit an IQS model to ratings and say how well it fits them.

Two sources of ratings:

- :func:`calibrate`: an image table with the ``iqm_*`` columns (the quality stage's, or
  ``metadata/images.parquet``) and a ratings table of 1-5 scores (a rater's, or OpenMind's
  released group scores; :mod:`~openmind_data.quality.ratings`);
- :func:`calibrate_mriqc`: an MRIQC group table with its raters' columns
  (:mod:`~openmind_data.quality.mriqc`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
from scipy.stats import rankdata, spearmanr

from openmind_data.errors import ConfigError
from openmind_data.quality.fit import FitSettings, fit_model, probability_of_rating
from openmind_data.quality.model import IqsModel
from openmind_data.quality.mriqc import MriqcTable
from openmind_data.quality.peers import peer_scores
from openmind_data.quality.ratings import Ratings

__all__ = ["Calibration", "auc", "calibrate", "calibrate_mriqc"]


@dataclass(frozen=True)
class Calibration:
    model: IqsModel
    rated_images: int
    unmatched_ratings: int
    #: Spearman rho between the fitted scores and the ratings, over all rated images and per
    #: modality (modalities with fewer than 3 rated images or constant ratings are left out).
    spearman: dict[str, float]
    #: For raters' verdicts: AUC of the fitted scores for "excluded", over all rated images and
    #: per site (sites without both classes are left out). In-sample: see benchmarks/quality.py
    #: for out-of-site figures.
    auc: dict[str, float] = field(default_factory=dict)

    def counts(self) -> dict[str, object]:
        weights = {k: [round(w, 3) for w in ws] for k, ws in self.model.weights.items() if any(ws)}
        out: dict[str, object] = {
            "model": self.model.label,
            "rated images": self.rated_images,
            "ratings matching no image": self.unmatched_ratings,
            f"weights at knots {list(self.model.knots)}": weights,
            "intercept": round(self.model.intercept, 3),
            "spearman rho": {k: round(v, 3) for k, v in self.spearman.items()},
        }
        if self.auc:
            out["AUC for excluded (in-sample)"] = {k: round(v, 3) for k, v in self.auc.items()}
        return out


def auc(labels: Sequence[bool], scores: Sequence[float]) -> float:
    """Area under the ROC curve of ``scores`` for ``labels`` (ties count half)."""
    y = np.asarray(labels, dtype=bool)
    ranks = rankdata(np.asarray(scores, dtype=np.float64))
    positives, negatives = int(y.sum()), int((~y).sum())
    if not positives or not negatives:
        raise ConfigError("AUC needs both excluded and kept images")
    return float((ranks[y].sum() - positives * (positives + 1) / 2) / (positives * negatives))


def calibrate(
    images: pa.Table,
    ratings: Ratings,
    *,
    name: str = "iqs-calibrated",
    version: str = "1",
    prior: IqsModel | None = None,
    settings: FitSettings | None = None,
    description: str = "",
) -> Calibration:
    """Fit a model to 1-5 ``ratings`` over ``images``; every image sets the references, and
    modalities with too few keep ``prior``'s."""
    rows: list[dict[str, Any]] = images.to_pylist()
    matched, unmatched = ratings.match(rows)
    if not matched:
        raise ConfigError(f"ratings {ratings.source}: none matches an image of the table")
    model = fit_model(
        rows,
        [(i, probability_of_rating(r), w) for i, r, w in matched],
        name=name,
        version=version,
        prior=prior,
        settings=settings,
        description=description,
        fitted_on={
            "images": len(rows),
            "rated_images": len(matched),
            "ratings": ratings.source.rsplit("/", 1)[-1],
            "rated_by": ratings.key,
        },
    )
    scores = peer_scores(rows, model)
    fitted: dict[str, list[tuple[float, float]]] = {}
    for index, rating, _ in matched:
        score = scores[index]
        if score is not None:
            for key in ("all", str(rows[index]["modality"])):
                fitted.setdefault(key, []).append((score, rating))
    spearman = {}
    for key, pairs in sorted(fitted.items()):
        x, y = np.array(pairs).T
        if len(pairs) >= 3 and np.ptp(y) > 0 and np.ptp(x) > 0:
            spearman[key] = float(spearmanr(x, y).statistic)
    return Calibration(model, len(matched), unmatched, spearman)


def calibrate_mriqc(
    table: MriqcTable,
    *,
    name: str = "iqs-calibrated",
    version: str = "1",
    prior: IqsModel | None = None,
    settings: FitSettings | None = None,
    description: str = "",
) -> Calibration:
    """Fit a model to an MRIQC table's raters (see :mod:`~openmind_data.quality.mriqc`)."""
    targets = table.targets()
    if not targets:
        raise ConfigError(f"MRIQC table {table.source}: no rated row (no rater_* values)")
    sites = sorted({row["dataset_id"] for row in table.rows})
    model = fit_model(
        table.rows,
        targets,
        name=name,
        version=version,
        prior=prior,
        settings=settings,
        description=description,
        fitted_on={
            "table": table.source.rsplit("/", 1)[-1],
            "images": len(table.rows),
            "rated_images": len(targets),
            "sites": len(sites),
            "raters": list(table.raters),
            "target": "share of raters excluding, doubtful counting half",
        },
    )
    scores = peer_scores(table.rows, model)
    excluded = table.excluded()
    spearman_pairs = [(s, p) for i, p, _ in targets if (s := scores[i]) is not None]
    x, y = np.array(spearman_pairs).T
    spearman = {"all": float(spearmanr(x, y).statistic)} if np.ptp(x) and np.ptp(y) else {}
    aucs: dict[str, float] = {}
    for key in ["all", *sites]:
        pairs = [
            (bool(excluded[i]), score)
            for i, row in enumerate(table.rows)
            if excluded[i] is not None
            and (score := scores[i]) is not None
            and key in ("all", row["dataset_id"])
        ]
        if len({label for label, _ in pairs}) == 2:
            aucs[key] = auc([p[0] for p in pairs], [p[1] for p in pairs])
    return Calibration(model, len(targets), 0, spearman, aucs)

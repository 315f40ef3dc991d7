"""Calibration: fit an IQS model to ratings and say how well it fits them."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
from scipy.stats import spearmanr

from openmind_data.errors import ConfigError
from openmind_data.quality.model import IqsModel, fit_model
from openmind_data.quality.ratings import Ratings

__all__ = ["Calibration", "calibrate"]


@dataclass(frozen=True)
class Calibration:
    model: IqsModel
    rated_images: int
    unmatched_ratings: int
    #: Spearman rho between the fitted scores and the ratings, over all rated images and per
    #: modality (modalities with fewer than 3 rated images or constant ratings are left out).
    spearman: dict[str, float]

    def counts(self) -> dict[str, object]:
        return {
            "model": self.model.label,
            "rated images": self.rated_images,
            "ratings matching no image": self.unmatched_ratings,
            "weights": {k: round(w, 3) for k, w in self.model.weights.items() if w > 0},
            "intercept": round(self.model.intercept, 3),
            "spearman rho": {k: round(v, 3) for k, v in self.spearman.items()},
        }


def calibrate(
    images: pa.Table,
    ratings: Ratings,
    *,
    name: str = "iqs-calibrated",
    version: str = "1",
    min_images: int = 5,
    tolerance: float = 1.0,
    description: str = "",
) -> Calibration:
    """Fit a model to ``ratings`` over ``images`` (a table with the ``iqm_*`` columns, e.g. the
    quality stage's or ``metadata/images.parquet``); every image sets the references."""
    rows: list[dict[str, Any]] = images.to_pylist()
    targets, unmatched = ratings.match(rows)
    if not targets:
        raise ConfigError(f"ratings {ratings.source}: none matches an image of the table")
    model = fit_model(
        rows,
        targets,
        name=name,
        version=version,
        min_images=min_images,
        tolerance=tolerance,
        description=description,
        fitted_on={
            "images": len(rows),
            "rated_images": len(targets),
            "ratings": ratings.source.rsplit("/", 1)[-1],
            "rated_by": ratings.key,
        },
    )
    fitted: dict[str, list[tuple[float, float]]] = {}
    for index, rating, _ in targets:
        score = model.score(rows[index], str(rows[index]["modality"]))
        if score is not None:
            for key in ("all", str(rows[index]["modality"])):
                fitted.setdefault(key, []).append((score, rating))
    spearman = {}
    for key, pairs in sorted(fitted.items()):
        x, y = np.array(pairs).T
        if len(pairs) >= 3 and np.ptp(y) > 0 and np.ptp(x) > 0:
            spearman[key] = float(spearmanr(x, y).statistic)
    return Calibration(model, len(targets), unmatched, spearman)

"""Fitting an IQS model: references from the images, weights from rated ones.

The references (the model's prior, per modality and pooled) are robust statistics of every
image given, rated or not; a modality with fewer than ``min_images`` images keeps the
reference of the ``prior`` model, when one is given (so a model fitted on T1w ratings keeps
references for the other modalities). Each rated image is standardized against its peers
(:mod:`~openmind_data.quality.peers`), as it will be when scored, and the weights are a
non-negative logistic regression of its exclusion probability on the hinges of the model
(:mod:`~openmind_data.quality.model`, step 2), with a small ridge penalty on the weights.
Targets are probabilities, so a rater's "doubtful", or a 1-5 rating, is a target between 0
and 1 (:func:`probability_of_rating`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
from scipy.optimize import minimize

from openmind_data.errors import ConfigError
from openmind_data.quality.model import (
    DATASET_METRICS,
    METRICS,
    POOLED,
    IqsModel,
    Reference,
    robust_reference,
    turned_values,
)
from openmind_data.quality.peers import peer_references

__all__ = ["FitSettings", "fit_model", "probability_of_rating"]

Row = Mapping[str, Any]


@dataclass(frozen=True)
class FitSettings:
    """The shape of the model a fit chooses weights for. The defaults were chosen by
    leave-one-site-out AUC on ABIDE (benchmarks/quality_ratings.py), never on DS030."""

    #: Bends of each metric's badness, in robust SDs from the reference's median ...
    knots: tuple[float, ...] = (-1.0, 0.0, 1.0, 2.0)
    #: ... and where it stops growing.
    cap: float = 6.0
    ridge: float = 0.01  # penalty on the squared weights, per unit of mean cross-entropy
    min_peers: int = 10  # see IqsModel
    prior_images: int = 30
    dataset_metrics: tuple[str, ...] = DATASET_METRICS
    min_images: int = 5  # fewest images a modality needs for references of its own
    #: The metrics given weights (the others keep weights of 0). The WM share (icvs_wm) is
    #: measured but not scored: it is anatomy as much as quality (it falls with age and with a
    #: blurred or averaged head), and a filter on it would thin out older brains.
    metrics: tuple[str, ...] = tuple(m for m in METRICS if m != "iqm_icvs_wm")


def probability_of_rating(rating: float) -> float:
    """A 1 (best) to 5 (worst) rating as the exclusion probability the IQS stands for."""
    return min(max((float(rating) - 1.0) / 4.0, 0.0), 1.0)


def references_of(
    rows: Sequence[Row], min_images: int, prior: IqsModel | None = None
) -> dict[str, dict[str, Reference]]:
    """Modality -> metric -> robust reference of ``rows``; pooled under '*'."""
    turned = turned_values(rows, [str(row["modality"]) for row in rows])
    turned |= turned_values(rows, [POOLED] * len(rows))
    out: dict[str, dict[str, Reference]] = {}
    if prior is not None:
        out = {m: dict(refs) for m, refs in prior.references.items()}
    for modality, metrics in turned.items():
        for column, values in metrics.items():
            if len(values) >= min_images or (modality == POOLED and POOLED not in out):
                out.setdefault(modality, {})[column] = robust_reference(column, values)
    if POOLED not in out:
        raise ConfigError("calibration: no image has any quality metric")
    return out


def fit_model(
    rows: Sequence[Row],
    targets: Iterable[tuple[int, float, float]],
    *,
    name: str,
    version: str,
    prior: IqsModel | None = None,
    references: Mapping[str, Mapping[str, Reference]] | None = None,
    settings: FitSettings | None = None,
    group_of: Callable[[Row], str] | None = None,
    description: str = "",
    fitted_on: Mapping[str, Any] | None = None,
) -> IqsModel:
    """Fit an IQS model. ``targets`` are (row index, exclusion probability, weight) triples;
    ``group_of`` names a row's peer group (default: its ``dataset_id``). The model's
    references are ``references`` where given (rows measured in other units than the model's
    images, such as an MRIQC table's beside the toolkit's), else :func:`references_of` the
    rows with ``prior``'s for modalities with too few."""
    targets = list(targets)
    if len(targets) < 3:
        raise ConfigError(f"calibration needs at least 3 rated images, got {len(targets)}")
    if any(not 0.0 <= p <= 1.0 for _, p, _ in targets):
        raise ConfigError("calibration: target probabilities must lie in [0, 1]")
    settings = settings or FitSettings()
    columns, knots = list(METRICS), settings.knots
    unfitted = IqsModel(
        name,
        version,
        knots=tuple(float(k) for k in knots),
        cap=float(settings.cap),
        weights={c: (0.0,) * len(knots) for c in columns},
        intercept=0.0,
        references=(
            {m: dict(r) for m, r in references.items()}
            if references is not None
            else references_of(rows, settings.min_images, prior)
        ),
        min_peers=settings.min_peers,
        prior_images=settings.prior_images,
        dataset_metrics=settings.dataset_metrics,
        description=description,
        fitted_on=dict(fitted_on or {}),
    )
    peers = peer_references(rows, unfitted, *([] if group_of is None else [group_of]))
    design = np.zeros((len(targets), len(columns) * len(knots)))
    goal = np.array([p for _, p, _ in targets])
    weight = np.array([w for _, _, w in targets], dtype=np.float64)
    for i, (index, _, _) in enumerate(targets):
        row = rows[index]
        z = unfitted.standardized(row, str(row["modality"]), peers.references[index])
        for j, column in enumerate(columns):
            if column in z and column in settings.metrics:
                design[i, j * len(knots) : (j + 1) * len(knots)] = unfitted.hinges(z[column])
    intercept, flat = _logistic(design, goal, weight / weight.sum(), settings.ridge)
    weights = {
        column: tuple(float(w) for w in flat[j * len(knots) : (j + 1) * len(knots)])
        for j, column in enumerate(columns)
    }
    return replace(unfitted, intercept=intercept, weights=weights)


def _logistic(
    design: np.ndarray, goal: np.ndarray, weight: np.ndarray, ridge: float
) -> tuple[float, np.ndarray]:
    """Weighted cross-entropy of soft targets, intercept free, weights >= 0, ridge on them."""

    def loss(theta: np.ndarray) -> tuple[float, np.ndarray]:
        s = theta[0] + design @ theta[1:]
        p = 0.5 * (1.0 + np.tanh(0.5 * s))  # the logistic, without overflow
        eps = 1e-12
        value = -np.sum(weight * (goal * np.log(p + eps) + (1 - goal) * np.log(1 - p + eps)))
        value += ridge * float(theta[1:] @ theta[1:])
        residual = weight * (p - goal)
        gradient = np.concatenate([[residual.sum()], design.T @ residual + 2 * ridge * theta[1:]])
        return float(value), gradient

    start = np.zeros(design.shape[1] + 1)
    bounds = [(None, None)] + [(0.0, None)] * design.shape[1]
    result = minimize(loss, start, jac=True, method="L-BFGS-B", bounds=bounds)
    if not result.success:
        raise ConfigError(f"calibration: the fit did not converge ({result.message})")
    return float(result.x[0]), np.asarray(result.x[1:])

"""The downstream metrics: Dice per class for segmentation, balanced accuracy and AUROC for
classification.

Dice follows nnU-Net's convention: a class absent from both the prediction and the reference
has no Dice (NaN), not a perfect one, and such cases are left out of the class's mean over
cases. AUROC is the Mann-Whitney statistic (the probability that a random positive scores
above a random negative, ties counting one half), so it needs no threshold and no sorting by
hand. Every function takes NumPy arrays or PyTorch tensors (on any device) and returns Python
floats.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
from scipy.stats import rankdata

if TYPE_CHECKING:
    import torch

__all__ = ["auroc", "balanced_accuracy", "dice_per_class", "mean_dice"]


def dice_per_class(
    prediction: np.ndarray | torch.Tensor,
    target: np.ndarray | torch.Tensor,
    classes: Sequence[int],
) -> dict[int, float]:
    """Dice ``2|P∩T| / (|P| + |T|)`` of each label in ``classes`` between two integer label maps
    of one shape; NaN for a label found in neither. Labels not in ``classes`` are ignored."""
    predicted, reference = _numpy(prediction), _numpy(target)
    if predicted.shape != reference.shape:
        raise ValueError(
            f"prediction shape {predicted.shape} differs from target shape {reference.shape}"
        )
    scores: dict[int, float] = {}
    for label in classes:
        in_prediction, in_target = predicted == label, reference == label
        size = np.count_nonzero(in_prediction) + np.count_nonzero(in_target)
        overlap = np.count_nonzero(in_prediction & in_target)
        scores[int(label)] = 2.0 * overlap / size if size else math.nan
    return scores


def mean_dice(per_case: Sequence[Mapping[int, float]]) -> dict[int, float]:
    """Each class's mean Dice over the cases that have one (NaN values and missing keys are
    left out); NaN for a class no case has a value for. Classes in first-seen order."""
    collected: dict[int, list[float]] = {}
    for case in per_case:
        for label, value in case.items():
            values = collected.setdefault(int(label), [])
            if not math.isnan(value):
                values.append(float(value))
    return {
        label: math.fsum(values) / len(values) if values else math.nan
        for label, values in collected.items()
    }


def balanced_accuracy(
    labels: Sequence[int] | np.ndarray | torch.Tensor,
    predictions: Sequence[int] | np.ndarray | torch.Tensor,
) -> float:
    """The mean over the classes present in ``labels`` of the fraction of that class predicted
    correctly (its recall), so that a majority class cannot carry the score. A predicted class
    that never occurs in ``labels`` only counts as the errors it makes."""
    truth, predicted = _numpy(labels).ravel(), _numpy(predictions).ravel()
    if truth.shape != predicted.shape:
        raise ValueError(f"{truth.size} labels but {predicted.size} predictions")
    if truth.size == 0:
        raise ValueError("balanced accuracy of no cases")
    recalls = [np.mean(predicted[truth == label] == label) for label in np.unique(truth)]
    return float(np.mean(recalls))


def auroc(
    labels: Sequence[int] | np.ndarray | torch.Tensor, scores: np.ndarray | torch.Tensor
) -> float:
    """The area under the ROC curve of ``scores`` (N, C), one column per class (probabilities or
    any monotone score), against ``labels`` in ``0..C-1``. Two columns: the curve of column 1
    for class 1. More: the one-vs-rest macro average over the classes present in ``labels``
    (an absent class has no curve). NaN when ``labels`` holds a single class."""
    truth, table = _numpy(labels).ravel(), _numpy(scores)
    if table.ndim != 2 or table.shape[1] < 2:
        raise ValueError(f"scores must be (cases, classes >= 2), not shape {table.shape}")
    if table.shape[0] != truth.size:
        raise ValueError(f"{truth.size} labels but {table.shape[0]} rows of scores")
    if not np.isfinite(table).all():
        raise ValueError("scores hold NaN or infinite values")
    if truth.dtype.kind not in "biu":
        if not np.array_equal(truth, np.round(truth)):
            raise ValueError("labels must be class indices 0..C-1, not fractions")
        truth = truth.astype(np.int64)
    present = np.unique(truth)
    outside = present[(present < 0) | (present >= table.shape[1])]
    if outside.size:
        raise ValueError(
            f"label {outside[0]} has no column among the {table.shape[1]} columns of scores"
        )
    if present.size < 2:
        return math.nan
    if table.shape[1] == 2:
        return _binary_auroc(truth == 1, table[:, 1])
    return float(np.mean([_binary_auroc(truth == label, table[:, label]) for label in present]))


def _binary_auroc(positive: np.ndarray, score: np.ndarray) -> float:
    """The Mann-Whitney U of the positives over the negatives, scaled to [0, 1]; average ranks
    make a tie between a positive and a negative count one half."""
    ranks = rankdata(score)
    positives = int(np.count_nonzero(positive))
    negatives = positive.size - positives
    above = float(ranks[positive].sum()) - positives * (positives + 1) / 2
    return above / (positives * negatives)


def _numpy(array: Any) -> np.ndarray:
    """A NumPy view of an array, a sequence or a tensor (detached and moved to the CPU)."""
    if isinstance(array, np.ndarray):
        return array
    if hasattr(array, "detach"):
        return np.asarray(array.detach().cpu().numpy())
    return np.asarray(array)

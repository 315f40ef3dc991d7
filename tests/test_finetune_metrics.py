"""openmind_ssl.finetune.metrics: Dice, balanced accuracy and AUROC against values worked out
by hand (and, where it defines the same thing, against scikit-learn)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from openmind_ssl.finetune.metrics import auroc, balanced_accuracy, dice_per_class, mean_dice

# Two 2 x 4 label maps. Per class, |P|, |T| and |P∩T| counted cell by cell:
#   0: P 3, T 2, overlap 2 -> 4/5      1: P 2, T 3, overlap 1 -> 2/5
#   2: P 2, T 3, overlap 2 -> 4/5      3: in the prediction only -> 0
#   4: in neither -> NaN               5: in the target only -> 0 (added below)
PREDICTION = np.array([[0, 1, 1, 2], [0, 0, 2, 3]])
TARGET = np.array([[0, 1, 2, 2], [0, 1, 2, 1]])


def test_dice_known_values_and_absent_classes() -> None:
    scores = dice_per_class(PREDICTION, TARGET, [0, 1, 2, 3, 4])
    assert list(scores) == [0, 1, 2, 3, 4]
    assert scores[0] == pytest.approx(4 / 5)
    assert scores[1] == pytest.approx(2 / 5)
    assert scores[2] == pytest.approx(4 / 5)
    assert scores[3] == 0.0
    assert math.isnan(scores[4])
    target = TARGET.copy()
    target[1, 3] = 5
    assert dice_per_class(PREDICTION, target, [5]) == {5: 0.0}


def test_dice_of_identical_maps_is_one_and_symmetric() -> None:
    assert dice_per_class(TARGET, TARGET, [0, 1, 2]) == {0: 1.0, 1: 1.0, 2: 1.0}
    assert dice_per_class(TARGET, PREDICTION, [0, 1, 2]) == pytest.approx(
        dice_per_class(PREDICTION, TARGET, [0, 1, 2])
    )


def test_dice_takes_tensors_and_3d_volumes() -> None:
    torch = pytest.importorskip("torch")
    prediction = torch.zeros(4, 4, 4, dtype=torch.int64)
    target = torch.zeros(4, 4, 4, dtype=torch.int64)
    prediction[:2] = 1  # 32 voxels
    target[1:3] = 1  # 32 voxels, 16 shared with the prediction
    scores = dice_per_class(prediction, target.numpy(), [1])
    assert scores == {1: pytest.approx(2 * 16 / 64)}
    assert isinstance(scores[1], float)


def test_dice_rejects_maps_of_different_shapes() -> None:
    with pytest.raises(ValueError, match=r"\(2, 4\).*\(4, 2\)"):
        dice_per_class(PREDICTION, TARGET.reshape(4, 2), [1])


def test_mean_dice_leaves_nan_cases_out() -> None:
    cases = [{1: 0.5, 2: math.nan}, {1: 1.0, 2: 0.25}, {1: math.nan, 2: math.nan, 3: math.nan}]
    means = mean_dice(cases)
    assert list(means) == [1, 2, 3]
    assert means[1] == pytest.approx(0.75)
    assert means[2] == pytest.approx(0.25)
    assert math.isnan(means[3])
    assert mean_dice([]) == {}


def test_balanced_accuracy_on_an_imbalanced_example() -> None:
    labels = [0] * 8 + [1] * 2
    predictions = [0] * 8 + [0, 1]  # 90 % accurate, but half the minority class is missed
    assert balanced_accuracy(labels, predictions) == pytest.approx((1.0 + 0.5) / 2)
    assert balanced_accuracy(labels, [0] * 10) == pytest.approx(0.5)


def test_balanced_accuracy_three_classes_and_a_class_only_predicted() -> None:
    labels = np.array([0, 0, 0, 1, 1, 2])
    predictions = np.array([0, 0, 3, 1, 0, 2])  # recalls 2/3, 1/2, 1; class 3 never true
    expected = (2 / 3 + 1 / 2 + 1) / 3
    assert balanced_accuracy(labels, predictions) == pytest.approx(expected)
    sklearn_metrics = pytest.importorskip("sklearn.metrics")
    with pytest.warns(UserWarning):  # sklearn warns about the class that is only predicted
        reference = sklearn_metrics.balanced_accuracy_score(labels, predictions)
    assert reference == pytest.approx(expected)


def test_balanced_accuracy_rejects_mismatched_or_empty_input() -> None:
    with pytest.raises(ValueError, match="3 labels but 2 predictions"):
        balanced_accuracy([0, 1, 1], [0, 1])
    with pytest.raises(ValueError, match="no cases"):
        balanced_accuracy([], [])


def test_auroc_binary_with_ties() -> None:
    labels = [0, 0, 1, 1, 0, 1]
    positive = np.array([0.1, 0.4, 0.4, 0.8, 0.8, 0.9])
    # Positives 0.4, 0.8, 0.9 against negatives 0.1, 0.4, 0.8 (a tie counts 1/2):
    # 0.4 -> 1 + 1/2 + 0 ; 0.8 -> 1 + 1 + 1/2 ; 0.9 -> 3 ; 7 of 9 pairs.
    scores = np.stack([1 - positive, positive], axis=1)
    assert auroc(labels, scores) == pytest.approx(7 / 9)
    sklearn_metrics = pytest.importorskip("sklearn.metrics")
    assert sklearn_metrics.roc_auc_score(labels, positive) == pytest.approx(7 / 9)


def test_auroc_perfect_inverted_and_constant_scores() -> None:
    labels = [0, 0, 1, 1]
    ranked = np.array([[0.9, 0.1], [0.8, 0.2], [0.3, 0.7], [0.4, 0.6]])
    assert auroc(labels, ranked) == 1.0
    assert auroc([1, 1, 0, 0], ranked) == 0.0
    assert auroc(labels, np.full((4, 2), 0.5)) == 0.5


def test_auroc_three_classes_one_vs_rest() -> None:
    labels = [0, 0, 1, 1, 2, 2]
    scores = np.array(
        [
            [0.6, 0.3, 0.1],
            [0.3, 0.4, 0.3],
            [0.2, 0.5, 0.3],
            [0.5, 0.2, 0.3],
            [0.1, 0.2, 0.7],
            [0.2, 0.5, 0.3],
        ]
    )
    # class 0: positives 0.6, 0.3 vs 0.2, 0.5, 0.1, 0.2 -> 4 + 3 = 7/8
    # class 1: positives 0.5, 0.2 vs 0.3, 0.4, 0.2, 0.5 -> 3.5 + 0.5 = 4/8
    # class 2: positives 0.7, 0.3 vs 0.1, 0.3, 0.3, 0.3 -> 4 + 2.5 = 6.5/8
    expected = (7 / 8 + 4 / 8 + 6.5 / 8) / 3
    assert auroc(labels, scores) == pytest.approx(expected)
    sklearn_metrics = pytest.importorskip("sklearn.metrics")
    reference = sklearn_metrics.roc_auc_score(labels, scores, multi_class="ovr", average="macro")
    assert reference == pytest.approx(expected)


def test_auroc_averages_only_the_classes_present() -> None:
    labels = [0, 0, 1, 1]  # class 2 has a column but no case: no curve of its own
    scores = np.array([[0.7, 0.2, 0.1], [0.5, 0.3, 0.2], [0.4, 0.5, 0.1], [0.6, 0.3, 0.1]])
    # class 0: positives 0.7, 0.5 vs 0.4, 0.6 -> 2 + 1 = 3/4
    # class 1: positives 0.5, 0.3 vs 0.2, 0.3 -> 2 + 1.5 = 3.5/4
    assert auroc(labels, scores) == pytest.approx((3 / 4 + 3.5 / 4) / 2)


def test_auroc_is_nan_for_a_single_class() -> None:
    assert math.isnan(auroc([1, 1, 1], np.array([[0.2, 0.8], [0.6, 0.4], [0.5, 0.5]])))


def test_auroc_takes_tensors() -> None:
    torch = pytest.importorskip("torch")
    labels = torch.tensor([0, 1, 1, 0])
    scores = torch.tensor([[0.8, 0.2], [0.3, 0.7], [0.6, 0.4], [0.5, 0.5]], requires_grad=True)
    # positives 0.7, 0.4 vs negatives 0.2, 0.5 -> 2 + 1 = 3/4
    assert auroc(labels, scores) == pytest.approx(3 / 4)


def test_auroc_rejects_bad_input() -> None:
    good = np.array([[0.5, 0.5], [0.2, 0.8]])
    with pytest.raises(ValueError, match="cases, classes"):
        auroc([0, 1], np.array([0.5, 0.8]))
    with pytest.raises(ValueError, match="3 labels but 2 rows"):
        auroc([0, 1, 1], good)
    with pytest.raises(ValueError, match="label 2 has no column"):
        auroc([0, 2], good)
    with pytest.raises(ValueError, match="NaN"):
        auroc([0, 1], np.array([[0.5, np.nan], [0.2, 0.8]]))
    with pytest.raises(ValueError, match="fractions"):
        auroc(np.array([0.0, 0.5]), good)

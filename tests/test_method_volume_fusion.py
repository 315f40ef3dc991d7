"""VolumeFusion: fusions and label maps of hand-placed boxes, the Dice + cross-entropy loss of
perfect and uniform predictions, the partners, and a few real training steps on both
architectures (shrunken networks, 32^3 crops)."""

from __future__ import annotations

import math
from typing import Any

import pytest

torch = pytest.importorskip("torch")

from method_cases import method_config  # noqa: E402

from openmind_data.errors import ConfigError  # noqa: E402
from openmind_ssl.methods import Batch, make_method  # noqa: E402
from openmind_ssl.methods.common import sample_generator  # noqa: E402
from openmind_ssl.methods.volume_fusion import (  # noqa: E402
    Fusion,
    FusionOptions,
    dice_ce,
    fuse,
    fusion_labels,
    fusion_weights,
    sample_fusion,
)
from openmind_ssl.train.config import PretrainConfig  # noqa: E402

SHAPE = (16, 12, 8)


def _config(architecture: str, *overrides: str) -> PretrainConfig:
    return method_config("volume_fusion", architecture, *overrides)


def _fusion(*boxes: tuple[tuple[int, int, int], tuple[int, int, int], int]) -> Fusion:
    return Fusion(
        torch.tensor([origin for origin, _, _ in boxes]).view(-1, 3),
        torch.tensor([size for _, size, _ in boxes]).view(-1, 3),
        torch.tensor([label for _, _, label in boxes], dtype=torch.long),
    )


# -- fusion ---------------------------------------------------------------------------------


@pytest.mark.parametrize("label", range(5))
def test_a_box_of_weight_w_fuses_exactly_and_is_labelled_with_the_class_of_w(label: int) -> None:
    generator = torch.Generator().manual_seed(label)
    a, b = torch.randn(SHAPE, generator=generator), torch.randn(SHAPE, generator=generator)
    labels = fusion_labels(SHAPE, _fusion(((2, 3, 1), (5, 4, 6), label)))
    box = (slice(2, 7), slice(3, 7), slice(1, 7))
    inside = torch.zeros(SHAPE, dtype=torch.bool)
    inside[box] = True
    assert (labels[inside] == label).all() and (labels[~inside] == 0).all()
    fused = fuse(a, b, fusion_weights(labels, 5))
    w = label / 4  # 0, .25, .5, .75, 1: exact in binary
    assert torch.equal(fused[box], (1 - w) * a[box] + w * b[box])
    assert torch.equal(fused[~inside], a[~inside])  # weight 0: the first crop alone


def test_weight_one_everywhere_is_the_second_crop_and_class_four() -> None:
    a, b = torch.randn(SHAPE), torch.randn(SHAPE)
    labels = fusion_labels(SHAPE, _fusion(((0, 0, 0), SHAPE, 4)))
    assert (labels == 4).all()
    assert torch.equal(fuse(a, b, fusion_weights(labels, 5)), b)


def test_later_boxes_overwrite_earlier_ones() -> None:
    labels = fusion_labels((8, 8, 8), _fusion(((0, 0, 0), (4, 4, 4), 1), ((3, 3, 3), (4, 4, 4), 3)))
    assert labels[0, 0, 0] == 1 and labels[3, 3, 3] == 3 and labels[6, 6, 6] == 3
    assert labels[7, 7, 7] == 0 and labels[2, 2, 2] == 1
    assert set(labels.unique().tolist()) == {0, 1, 3}


def test_sampled_boxes_have_nnssls_counts_and_sizes_and_replay_from_their_key() -> None:
    options = FusionOptions()
    counts = []
    for key in range(50):
        fusion = sample_fusion((32, 32, 32), options, sample_generator(0, key))
        counts.append(len(fusion.classes))
        assert fusion.sizes.min() >= 8 and fusion.sizes.max() <= 20  # int(0.625 * 32)
        assert fusion.origins.min() >= 0 and (fusion.origins + fusion.sizes).max() <= 32
        assert fusion.classes.min() >= 0 and fusion.classes.max() <= 4
    assert min(counts) >= 10 and max(counts) <= 39 and len(set(counts)) > 5
    again = sample_fusion((32, 32, 32), options, sample_generator(0, 49))
    assert torch.equal(again.origins, fusion.origins) and torch.equal(again.classes, fusion.classes)
    with pytest.raises(ConfigError, match="box_count"):
        FusionOptions(box_count=(5, 5))


# -- the loss -------------------------------------------------------------------------------


def test_dice_ce_of_a_perfect_prediction_is_zero_and_of_a_uniform_one_log5() -> None:
    labels = fusion_labels(SHAPE, _fusion(((0, 0, 0), (8, 8, 8), 2), ((4, 6, 2), (6, 6, 6), 3)))
    labels = labels.unsqueeze(0)
    onehot = torch.nn.functional.one_hot(labels, 5).movedim(-1, 1).float()
    ce, dice = dice_ce(100 * onehot, labels)
    assert ce.item() < 1e-6 and dice.item() == pytest.approx(1.0, abs=1e-6)  # absent ones too
    assert (ce + 1 - dice).item() == pytest.approx(0.0, abs=1e-6)
    ce, dice = dice_ce(torch.zeros(1, 5, *SHAPE), labels)
    assert ce.item() == pytest.approx(math.log(5), rel=1e-6)
    voxels, smooth = math.prod(SHAPE), 1e-5
    counts = [(labels == c).sum().item() for c in range(5)]
    expected = sum((0.4 * n + smooth) / (n + 0.2 * voxels + smooth) for n in counts) / 5
    assert dice.item() == pytest.approx(expected, rel=1e-5)


class _Spy(torch.nn.Module):
    """Records its input and predicts every class alike."""

    def __init__(self) -> None:
        super().__init__()
        self.bias = torch.nn.Parameter(torch.zeros(()))
        self.seen: list[Any] = []

    def forward(self, x: Any) -> Any:
        self.seen.append(x)
        return torch.zeros(x.shape[0], 5, *x.shape[2:]) + self.bias


def _batch(size: int) -> Batch:
    image = torch.randn(size, 1, 32, 32, 32, generator=torch.Generator().manual_seed(size))
    ones = torch.ones_like(image)
    return Batch(image, ones, torch.zeros_like(image), list(range(10, 10 + size)))


def test_each_crop_is_fused_with_its_neighbour_or_alone_with_its_own_flip() -> None:
    method = make_method(_config("resenc_l"))
    for size in (1, 3):
        batch, spy = _batch(size), _Spy()
        terms = method.loss(spy, batch, seed=2)
        a = batch.image
        b = a.roll(-1, dims=0) if size > 1 else a.flip(dims=(2, 3, 4))
        for i, key in enumerate(batch.keys):
            fusion = sample_fusion((32, 32, 32), method.options, sample_generator(2, key))
            weights = fusion_weights(fusion_labels((32, 32, 32), fusion), 5)
            assert torch.equal(spy.seen[0][i, 0], fuse(a[i, 0], b[i, 0], weights))
        # A uniform prediction: CE log 5 per sample; the weight counts the fused crops.
        assert terms.weight.item() == size and terms.logs["ce"] == pytest.approx(math.log(5))
        assert 0 < terms.logs["dice"] < 1


def test_the_anonymization_aware_option_is_refused() -> None:
    with pytest.raises(ConfigError, match="volume_fusion has no such variant"):
        make_method(_config("resenc_l", "method.anon_aware=true"))

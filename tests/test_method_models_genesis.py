"""Models Genesis: each distortion on hand-made volumes with known answers, the loss of a
perfect restoration, the anonymization-aware loss, and a few real training steps on both
architectures (shrunken networks, 32^3 crops)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from method_cases import defaced_batch, method_config  # noqa: E402

from openmind_data.errors import ConfigError  # noqa: E402
from openmind_ssl.methods import make_method  # noqa: E402
from openmind_ssl.methods.common import sample_generator  # noqa: E402
from openmind_ssl.methods.models_genesis import (  # noqa: E402
    Bezier,
    Box,
    GenesisOptions,
    LocalShuffle,
    Painting,
    bezier_map,
    distort,
    flip,
    local_shuffle,
    paint,
    sample_distortion,
    sample_local_shuffle,
    sample_painting,
)
from openmind_ssl.train.config import PretrainConfig  # noqa: E402


def _config(architecture: str, *overrides: str) -> PretrainConfig:
    return method_config("models_genesis", architecture, *overrides)


# -- the transforms -------------------------------------------------------------------------


def test_a_bezier_curve_on_the_diagonal_is_the_identity_and_its_reverse_inverts() -> None:
    x = torch.rand(6, 7, 8, generator=torch.Generator().manual_seed(0))
    for p1, p2 in [((1 / 3, 1 / 3), (2 / 3, 2 / 3)), ((0.2, 0.2), (0.9, 0.9))]:
        torch.testing.assert_close(bezier_map(x, Bezier(p1, p2, decreasing=False)), x)
    # Evenly spaced control points make x(t) = t, so the decreasing curve maps x to 1 - x.
    inverted = bezier_map(x, Bezier((1 / 3, 1 / 3), (2 / 3, 2 / 3), decreasing=True))
    torch.testing.assert_close(inverted, 1 - x)


def test_the_bezier_map_is_numpys_interpolation_of_the_tabulated_curve() -> None:
    """The Models Genesis code: Bernstein basis tabulated, np.interp (constant outside)."""
    p1, p2 = (0.8, 0.1), (0.3, 0.7)
    t = np.linspace(0.0, 1.0, 100_000)
    basis = np.stack([(1 - t) ** 3, 3 * (1 - t) ** 2 * t, 3 * (1 - t) * t**2, t**3])
    xs, ys = np.array([0, p1[0], p2[0], 1]) @ basis, np.array([0, p1[1], p2[1], 1]) @ basis
    x = np.linspace(-0.2, 1.2, 301)
    for decreasing, table in [(False, np.sort(ys)), (True, ys[::-1])]:
        expected = np.interp(x, np.sort(xs), table)
        mapped = bezier_map(torch.from_numpy(x), Bezier(p1, p2, decreasing))
        np.testing.assert_allclose(mapped.numpy(), expected, atol=1e-12)
    assert mapped[0] == pytest.approx(1.0) and mapped[-1] == pytest.approx(0.0)


def _shuffle(boxes: list[tuple[tuple[int, ...], tuple[int, ...]]], seed: int = 0) -> LocalShuffle:
    origins = torch.tensor([origin for origin, _ in boxes])
    sizes = torch.tensor([size for _, size in boxes])
    keys = torch.rand(int(sizes.prod(dim=1).sum()), generator=torch.Generator().manual_seed(seed))
    return LocalShuffle(origins, sizes, keys)


def test_local_shuffling_permutes_each_block_and_nothing_else() -> None:
    volume = torch.arange(12 * 10 * 8, dtype=torch.float32).view(12, 10, 8)
    boxes = [((1, 2, 3), (3, 3, 3)), ((6, 0, 0), (4, 2, 5))]
    out = local_shuffle(volume, _shuffle(boxes))
    inside = torch.zeros_like(volume, dtype=torch.bool)
    for (x, y, z), (a, b, c) in boxes:
        block = (slice(x, x + a), slice(y, y + b), slice(z, z + c))
        inside[block] = True
        assert torch.equal(
            out[block].flatten().sort().values, volume[block].flatten().sort().values
        )
        assert not torch.equal(out[block], volume[block])
    assert torch.equal(out[~inside], volume[~inside])


def test_a_block_takes_its_voxels_in_the_order_of_its_keys() -> None:
    volume = torch.arange(4.0).view(1, 1, 4)
    shuffle = LocalShuffle(
        torch.zeros(1, 3).long(), torch.tensor([[1, 1, 4]]), torch.tensor([0.9, 0.6, 0.3, 0.1])
    )
    assert local_shuffle(volume, shuffle).flatten().tolist() == [3.0, 2.0, 1.0, 0.0]


def test_overlapping_blocks_shuffle_the_original_and_the_last_one_wins() -> None:
    volume = torch.arange(8 * 8 * 8, dtype=torch.float32).view(8, 8, 8)
    first, last = ((0, 0, 0), (5, 5, 5)), ((3, 3, 3), (4, 4, 4))
    out = local_shuffle(volume, _shuffle([first, last], seed=3))
    window = (slice(3, 7),) * 3  # the last block keeps exactly its own values, permuted
    assert torch.equal(out[window].flatten().sort().values, volume[window].flatten().sort().values)
    first_only = torch.zeros(8, 8, 8, dtype=torch.bool)
    first_only[:5, :5, :5] = True
    first_only[window] = False
    assert set(out[first_only].tolist()) <= set(volume[:5, :5, :5].flatten().tolist())


def test_sampled_shuffle_blocks_lie_inside_the_crop_with_edges_up_to_a_tenth() -> None:
    shuffle = sample_local_shuffle((40, 30, 20), 500, sample_generator(0, 1))
    ends = shuffle.origins + shuffle.sizes
    assert (
        shuffle.sizes.min() >= 1
        and (shuffle.sizes.max(dim=0).values <= torch.tensor([4, 3, 2])).all()
    )
    assert shuffle.origins.min() >= 0 and (ends <= torch.tensor([40, 30, 20])).all()
    assert len(shuffle.keys) == int(shuffle.sizes.prod(dim=1).sum())


def test_in_painting_changes_only_the_boxes_and_out_painting_only_the_rest() -> None:
    volume = torch.full((16, 16, 16), 0.5)
    noise = torch.rand(16, 16, 16, generator=torch.Generator().manual_seed(1))
    boxes = (Box((3, 4, 5), (4, 3, 2)), Box((8, 8, 8), (5, 5, 5)))
    inside = torch.zeros(16, 16, 16, dtype=torch.bool)
    for box in boxes:
        inside[box.slices()] = True
    inner = paint(volume, Painting(boxes, outer=False, noise=noise))
    assert torch.equal(inner[inside], noise[inside]) and torch.equal(
        inner[~inside], volume[~inside]
    )
    outer = paint(volume, Painting(boxes, outer=True, noise=noise))
    assert torch.equal(outer[inside], volume[inside]) and torch.equal(
        outer[~inside], noise[~inside]
    )


def test_sampled_painting_boxes_have_the_papers_sizes() -> None:
    for key in range(20):
        inner = sample_painting((60, 60, 42), outer=False, generator=sample_generator(0, key))
        assert len(inner.boxes) <= 5
        for box in inner.boxes:
            assert all(n // 6 <= s <= n // 3 for n, s in zip((60, 60, 42), box.size, strict=True))
            assert all(
                o >= 3 and o + s <= n - 3
                for n, o, s in zip((60, 60, 42), box.origin, box.size, strict=True)
            )
        outer = sample_painting((60, 60, 42), outer=True, generator=sample_generator(0, key))
        assert 1 <= len(outer.boxes) <= 5
        for box in outer.boxes:  # edge minus 3/7 to 4/7 of it
            assert all(
                n - 4 * n // 7 <= s <= n - 3 * n // 7
                for n, s in zip((60, 60, 42), box.size, strict=True)
            )
        assert (
            outer.noise.shape == (60, 60, 42) and outer.noise.min() >= 0 and outer.noise.max() < 1
        )


def test_flips_compose_and_undo_themselves() -> None:
    volume = torch.arange(24.0).view(1, 1, 2, 3, 4)
    assert torch.equal(flip(volume, (0,)), volume.flip(2))
    assert torch.equal(flip(volume, (2, 1, 2)), volume.flip(3))
    assert torch.equal(flip(volume, (1, 1)), volume) and torch.equal(flip(volume, ()), volume)


def test_distortions_replay_from_the_sample_key_and_follow_the_rates() -> None:
    options = GenesisOptions()
    a = sample_distortion((32, 32, 32), options, sample_generator(0, 7))
    b = sample_distortion((32, 32, 32), options, sample_generator(0, 7))
    volume = torch.rand(32, 32, 32, generator=torch.Generator().manual_seed(0))
    assert a.flips == b.flips and torch.equal(distort(volume, a), distort(volume, b))
    none = GenesisOptions(flip_rate=0, local_rate=0, nonlinear_rate=0, paint_rate=0)
    plain = sample_distortion((32, 32, 32), none, sample_generator(0, 7))
    assert plain == type(plain)((), None, None, None) and torch.equal(
        distort(volume, plain), volume
    )
    draws = [sample_distortion((32, 32, 32), options, sample_generator(1, k)) for k in range(200)]
    assert 0.35 < np.mean([d.shuffle is not None for d in draws]) < 0.65
    assert 0.8 < np.mean([d.curve is not None for d in draws]) < 0.98
    painted = [d.painting for d in draws if d.painting is not None]
    assert 0.8 < len(painted) / 200 < 0.98 and 0.65 < np.mean([p.outer for p in painted]) < 0.92
    with pytest.raises(ConfigError, match="paint_rate"):
        GenesisOptions(paint_rate=1.5)


# -- the loss -------------------------------------------------------------------------------


class _Oracle(torch.nn.Module):
    """Returns fixed outputs whatever its input (and has a parameter, as a network does)."""

    def __init__(self, outputs: Any) -> None:
        super().__init__()
        self.outputs = outputs
        self.scale = torch.nn.Parameter(torch.ones(()))

    def forward(self, x: Any) -> Any:
        assert x.shape == self.outputs.shape
        return self.outputs * self.scale


def test_a_perfect_restoration_costs_nothing_and_a_blank_one_the_crops_energy() -> None:
    method = make_method(_config("resenc_l"))
    batch = defaced_batch(0)
    distortions = [
        sample_distortion((32, 32, 32), method.options, sample_generator(5, key))
        for key in batch.keys
    ]
    assert any(d.flips for d in distortions)  # the oracle must follow the flips
    targets = torch.stack([flip(batch.image[i], d.flips) for i, d in enumerate(distortions)])
    perfect = method.loss(_Oracle(targets), batch, seed=5)
    assert perfect.total.item() == 0.0 and perfect.weight.item() == 2 * 32**3
    blank = method.loss(_Oracle(torch.zeros_like(targets)), batch, seed=5)
    assert blank.total.item() == pytest.approx(float((batch.image**2).sum()), rel=1e-6)


@pytest.mark.parametrize("architecture", ["resenc_l", "primus_m"])
def test_the_anonymization_aware_loss_ignores_whatever_lies_in_the_deface_mask(
    architecture: str,
) -> None:
    method = make_method(_config(architecture, "method.anon_aware=true"))
    torch.manual_seed(0)
    model = method.build().eval()
    base = method.loss(model, defaced_batch(1), seed=0)
    for noise in (0.0, 5.0, 1e4):
        other = method.loss(model, defaced_batch(1, anon_noise=noise), seed=0)
        assert torch.equal(other.total, base.total) and torch.equal(other.weight, base.weight)
    assert base.weight.item() == 2 * 32**3 * 20 / 32  # every voxel outside the band
    plain = make_method(_config(architecture))
    unaware = [plain.loss(model, defaced_batch(1, anon_noise=n), seed=0).total for n in (0.0, 5.0)]
    assert not torch.equal(unaware[0], unaware[1])
    anatomy = make_method(
        _config(architecture, "method.anon_aware=true", "method.anatomy_only=true")
    )
    masked = defaced_batch(1)
    masked.anat_mask[:, :, :4] = 0
    assert anatomy.loss(model, masked, seed=0).weight.item() == 2 * 28 * 20 * 32

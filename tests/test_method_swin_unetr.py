"""The SwinUNETR recipe: quarter turns, cut-outs, the three losses on hand-made cases,
anonymization invariance, gradients, and a few trainer steps on both architectures."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest

torch = pytest.importorskip("torch")

from method_cases import defaced_batch, tiny_run, write_config  # noqa: E402

from openmind_data.errors import ConfigError  # noqa: E402
from openmind_ssl.methods import make_method  # noqa: E402
from openmind_ssl.methods.swin_unetr import (  # noqa: E402
    SwinUNETRNetwork,
    cutout,
    inpainting_l1,
    nt_xent,
    rotate,
    rotation_loss,
)
from openmind_ssl.train.config import PretrainConfig  # noqa: E402

ARCHITECTURES = ["resenc_l", "primus_m"]


def _config(
    architecture: str, tmp_path: Path, source: str = "unused", **method: Any
) -> PretrainConfig:
    model = {} if architecture == "resenc_l" else {"decoder_depth": 0}
    raw = tiny_run(
        source, tmp_path / "run", architecture, method={"name": "swin_unetr", **method}, model=model
    )
    raw["train"].update(epochs=1, steps_per_epoch=2)
    return write_config(raw, tmp_path / "run.yaml")


# -- views --------------------------------------------------------------------------------


def test_a_quarter_turn_moves_each_voxel_as_drawn() -> None:
    """An asymmetric volume: every voxel a distinct value. One turn takes (x, y, z) to
    (x, Z - 1 - z, y); k turns are torch.rot90's k; four turns are the identity."""
    volume = torch.arange(2 * 3 * 3, dtype=torch.float32).view(1, 1, 2, 3, 3)
    turned = rotate(volume, 1)
    for x in range(2):
        for y in range(3):
            for z in range(3):
                assert turned[0, 0, x, 3 - 1 - z, y] == volume[0, 0, x, y, z]
    again = volume
    for k in range(1, 5):
        again = rotate(again, 1)
        assert torch.equal(rotate(volume, k), torch.rot90(volume, k, (3, 4)))
        assert torch.equal(again, rotate(volume, k))
    assert torch.equal(again, volume) and torch.equal(rotate(volume, 4), volume)
    assert not torch.equal(rotate(volume, 2), volume)


def test_the_cutout_fills_boxes_with_unit_range_noise_and_replays() -> None:
    view = torch.full((1, 1, 40, 40, 40), -5.0)
    options = {"max_drop": 0.3, "max_box": 0.25, "min_box": 0.05}
    fractions = []
    for key in range(20):
        out = cutout(view, torch.Generator().manual_seed(key), **options)
        cut = out != -5.0
        fractions.append(float(cut.float().mean()))
        assert out[cut].min() >= 0 and out[cut].max() <= 1
        again = cutout(view, torch.Generator().manual_seed(key), **options)
        assert torch.equal(out, again)
    # The box volumes sum to at most 0.3 of the view plus one box (10^3 of 40^3).
    assert max(fractions) <= 0.3 + 10**3 / 40**3 and max(fractions) > 0.05
    untouched = cutout(view, torch.Generator().manual_seed(0), **{**options, "max_drop": 0.0})
    assert torch.equal(untouched, view)
    assert torch.equal(view, torch.full_like(view, -5.0))  # the input is left alone


# -- losses -------------------------------------------------------------------------------


def test_the_rotation_loss_is_zero_when_sure_and_right_and_log4_when_uniform() -> None:
    turns = torch.tensor([0, 1, 2, 3])
    confident = 100.0 * torch.nn.functional.one_hot(turns, 4).float()
    assert rotation_loss(confident, turns).max() < 1e-6
    uniform = rotation_loss(torch.zeros(4, 4), turns)
    torch.testing.assert_close(uniform, torch.full((4,), math.log(4)))


def test_nt_xent_on_hand_made_projections() -> None:
    same = torch.ones(6, 5)  # three samples, every view alike: log(2B - 1) for each view
    torch.testing.assert_close(nt_xent(same, 0.5), torch.full((6,), math.log(5)))
    # Each sample's two views alike, the samples orthogonal: -log(e^2 / (e^2 + 4)) at t = 0.5.
    basis = torch.eye(3, 4)
    expected = -math.log(math.exp(2) / (math.exp(2) + 4))
    torch.testing.assert_close(
        nt_xent(torch.cat([basis, 2 * basis]), 0.5), torch.full((6,), expected)
    )
    # With one sample per rank the only other view is the positive: 0.
    assert nt_xent(torch.randn(2, 4), 0.5).abs().max() < 1e-6


def test_a_perfect_inpainting_scores_zero_and_an_offset_its_size() -> None:
    target = torch.randn(2, 1, 4, 4, 4)
    scored = torch.ones_like(target)
    assert inpainting_l1(target, target, scored).tolist() == [0.0, 0.0]
    scored[1, :, :2] = 0  # unscored voxels may hold anything
    wrong = torch.where(scored > 0, target + 0.5, target + 1e6)
    torch.testing.assert_close(inpainting_l1(wrong, target, scored), torch.tensor([0.5, 0.5]))


# -- the method ---------------------------------------------------------------------------


@pytest.mark.parametrize("architecture", ARCHITECTURES)
def test_the_anonymization_aware_loss_ignores_the_deface_mask(
    architecture: str, tmp_path: Path
) -> None:
    method = make_method(_config(architecture, tmp_path, anon_aware=True))
    torch.manual_seed(0)
    model = method.build().eval()
    base = method.loss(model, defaced_batch(anon_noise=None), seed=0)
    for noise in (0.0, 5.0, 1e4):
        other = method.loss(model, defaced_batch(anon_noise=noise), seed=0)
        assert torch.equal(other.total, base.total) and torch.equal(other.weight, base.weight)
        assert other.logs == base.logs
    plain = make_method(_config(architecture, tmp_path))
    unaware = [plain.loss(model, defaced_batch(anon_noise=n), seed=0).total for n in (0.0, 5.0)]
    assert not torch.equal(unaware[0], unaware[1])


@pytest.mark.parametrize(
    ("architecture", "options"),
    [
        ("resenc_l", {}),
        ("primus_m", {}),
        ("resenc_l", {"view_size": [16, 16, 16]}),
        ("primus_m", {"view_size": [24, 16, 16]}),
    ],
)
def test_every_trainable_weight_gets_a_finite_gradient(
    architecture: str, options: dict[str, Any], tmp_path: Path
) -> None:
    method = make_method(_config(architecture, tmp_path, options=options))
    torch.manual_seed(0)
    model = method.build()
    assert isinstance(model, SwinUNETRNetwork)
    terms = method.loss(model, defaced_batch(), seed=0)
    assert torch.isfinite(terms.total) and terms.weight.item() == 2
    assert set(terms.logs) == {"inpaint", "rotation", "contrast", "rotation_accuracy"}
    # At initialisation the heads are near chance: log(4) for rotation, about log(3) for two
    # samples' contrast.
    assert abs(terms.logs["rotation"] - math.log(4)) < 0.5
    assert abs(terms.logs["contrast"] - math.log(3)) < 0.5
    terms.total.backward()
    for name, parameter in model.named_parameters():
        if parameter.requires_grad:
            assert parameter.grad is not None, name
            assert torch.isfinite(parameter.grad).all(), name


def test_the_views_must_turn_in_a_square_plane(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="last two axes"):
        make_method(_config("primus_m", tmp_path, options={"view_size": [16, 16, 24]}))
    with pytest.raises(ConfigError, match="exceeds"):
        make_method(_config("resenc_l", tmp_path, options={"view_size": [64, 64, 64]}))
    with pytest.raises(ConfigError, match="temperature"):
        make_method(_config("resenc_l", tmp_path, options={"temperature": 0}))

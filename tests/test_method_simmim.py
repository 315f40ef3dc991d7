"""SimMIM (Primus-M) and S3D, sparse masked modelling (ResEnc-L): masks, the sparse encoder,
the loss on hand-made cases, anonymization invariance, gradients, and a few trainer steps."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest

torch = pytest.importorskip("torch")

from method_cases import defaced_batch, tiny_run, write_config  # noqa: E402

from openmind_data.errors import ConfigError  # noqa: E402
from openmind_ssl.methods import make_method  # noqa: E402
from openmind_ssl.methods.common import cells_to_voxels, sample_generator  # noqa: E402
from openmind_ssl.methods.simmim import (  # noqa: E402
    MaskedTokenPrimus,
    SimMIM,
    SparseMaskedUNet,
    hidden_cells,
    masked_instance_norm,
)
from openmind_ssl.train.config import PretrainConfig, load_config  # noqa: E402

ARCHITECTURES = ["resenc_l", "primus_m"]


def _config(
    architecture: str, tmp_path: Path, source: str = "unused", **method: Any
) -> PretrainConfig:
    model = (
        {"blocks_per_stage": [1, 2, 1, 1]} if architecture == "resenc_l" else {"decoder_depth": 0}
    )
    raw = tiny_run(
        source, tmp_path / "run", architecture, method={"name": "simmim", **method}, model=model
    )
    raw["train"].update(epochs=1, steps_per_epoch=2)
    return write_config(raw, tmp_path / "run.yaml")


# -- masks --------------------------------------------------------------------------------


def test_a_fixed_ratio_hides_that_share_of_cells_and_replays_from_the_key() -> None:
    hidden = hidden_cells(1000, 0.75, [sample_generator(0, key) for key in (5, 6)])
    assert hidden.shape == (2, 1000) and hidden.dtype == torch.bool
    assert hidden.sum(dim=1).tolist() == [750, 750] and not torch.equal(hidden[0], hidden[1])
    assert torch.equal(hidden_cells(1000, 0.75, [sample_generator(0, 6)])[0], hidden[1])


def test_the_variable_ratio_stays_within_its_range_and_varies_per_sample() -> None:
    hidden = hidden_cells(1000, (0.6, 0.9), [sample_generator(0, key) for key in range(200)])
    fractions = hidden.float().mean(dim=1)
    assert fractions.min() >= 0.6 and fractions.max() <= 0.9
    assert fractions.max() - fractions.min() > 0.2  # spread over the range, one draw per sample
    with pytest.raises(ConfigError, match="mask_ratio_range"):
        SimMIM(
            load_config(
                None, ["method.name=simmim", "method.options={mask_ratio_range: [0.9, 0.6]}"]
            )
        )


def test_cells_expand_to_their_voxels_in_c_order() -> None:
    cells = torch.tensor([[1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0]])
    voxels = cells_to_voxels(cells, (2, 2, 2), (2, 3, 4))
    assert voxels.shape == (1, 1, 4, 6, 8)
    assert voxels[0, 0, :2, :3, :4].eq(1).all() and voxels[0, 0, 2:, 3:, 4:].eq(1).all()
    assert voxels.sum() == 2 * 2 * 3 * 4


# -- the sparse encoder -------------------------------------------------------------------


def test_the_masked_norm_takes_its_statistics_over_the_visible_positions_only() -> None:
    x = torch.full((1, 1, 2, 2, 2), 1e6)  # garbage where hidden
    active = torch.zeros(1, 1, 2, 2, 2)
    for value, index in zip(
        (1.0, 2.0, 3.0, 4.0), ((0, 0, 0), (0, 1, 1), (1, 0, 1), (1, 1, 0)), strict=True
    ):
        x[(0, 0, *index)] = value
        active[(0, 0, *index)] = 1
    out = masked_instance_norm(x, active, torch.tensor([2.0]), torch.tensor([0.5]), eps=0.0)
    expected = 2 * (torch.tensor([1.0, 2.0, 3.0, 4.0]) - 2.5) / math.sqrt(1.25) + 0.5
    torch.testing.assert_close(out[active > 0], expected)
    assert out[active == 0].eq(0).all()
    dense = torch.randn(2, 3, 4, 4, 4)
    torch.testing.assert_close(
        masked_instance_norm(dense, torch.ones(2, 1, 4, 4, 4)),
        torch.nn.functional.instance_norm(dense, eps=1e-5),
    )


def _s3d(tmp_path: Path, **method: Any) -> tuple[SimMIM, SparseMaskedUNet]:
    method_ = make_method(_config("resenc_l", tmp_path, **method))
    assert isinstance(method_, SimMIM)
    torch.manual_seed(0)
    network = method_.build()
    assert isinstance(network, SparseMaskedUNet)
    return method_, network


def test_with_nothing_hidden_the_sparse_encoder_is_the_dense_one(tmp_path: Path) -> None:
    _, network = _s3d(tmp_path)
    image = torch.randn(2, 1, 32, 32, 32)
    sparse, actives = network.encode(image, torch.ones_like(image))
    for features, dense, active in zip(
        sparse, network.backbone.encoder(image), actives, strict=True
    ):
        torch.testing.assert_close(features, dense, rtol=1e-4, atol=1e-4)
        assert active.eq(1).all()


@pytest.mark.parametrize("cube", [16, 4])
def test_s3d_never_lets_hidden_cubes_through(cube: int, tmp_path: Path) -> None:
    """Whatever the hidden cubes hold, the output is the same, bit for bit; every stage's
    features are exactly 0 where all its voxel covers is hidden, and only there (4^3 cubes:
    the 8x-downsampled stage has voxels over visible and hidden cubes at once)."""
    _, network = _s3d(tmp_path)
    network.eval()
    grid = 32 // cube
    hidden = hidden_cells(grid**3, 0.75, [sample_generator(1, key) for key in (0, 1)])
    visible = 1 - cells_to_voxels(hidden, (grid, grid, grid), (cube, cube, cube)).float()
    image = torch.randn(2, 1, 32, 32, 32)
    scrambled = torch.where(visible > 0, image, 1e3 * torch.randn_like(image))
    with torch.no_grad():
        assert torch.equal(network(image, visible), network(scrambled, visible))
        skips, actives = network.encode(scrambled, visible)
    for features, active in zip(skips, actives, strict=True):
        factor = 32 // features.shape[-1]
        assert torch.equal(active, torch.nn.functional.max_pool3d(visible, factor, factor))
        assert features.mul(1 - active).abs().max() == 0
        assert features.abs().amax(dim=1, keepdim=True).gt(0).eq(active > 0).all()
    if cube == 4:  # the deepest stage has voxels over both kinds of cube, and hidden ones
        assert 0 < actives[-1].mean() < 1


def test_simmim_on_primus_ignores_the_hidden_tokens_voxels(tmp_path: Path) -> None:
    method = make_method(_config("primus_m", tmp_path))
    torch.manual_seed(0)
    network = method.build().eval()
    assert isinstance(network, MaskedTokenPrimus)
    assert "mask_token" in dict(network.named_parameters())  # learned, beside dna's buffer
    hidden = hidden_cells(64, 0.75, [sample_generator(0, key) for key in (0, 1)])
    voxels = cells_to_voxels(hidden, (4, 4, 4), (8, 8, 8))
    image = torch.randn(2, 1, 32, 32, 32)
    scrambled = torch.where(voxels, 1e3 * torch.randn_like(image), image)
    with torch.no_grad():
        assert torch.equal(network(image, hidden), network(scrambled, hidden))
        moved = torch.where(voxels, image, image + 1)  # the visible tokens do count
        assert not torch.equal(network(image, hidden), network(moved, hidden))


# -- the loss -----------------------------------------------------------------------------


class _Shifted(torch.nn.Module):
    """A stand-in network that 'reconstructs' the input plus a constant."""

    def __init__(self, shift: float) -> None:
        super().__init__()
        self.shift = shift

    def forward(self, image: Any, mask: Any) -> Any:
        return image + self.shift


@pytest.mark.parametrize("architecture", ARCHITECTURES)
@pytest.mark.parametrize("loss", ["mse", "l1"])
def test_the_loss_scores_the_hidden_voxels(architecture: str, loss: str, tmp_path: Path) -> None:
    method = make_method(_config(architecture, tmp_path, options={"loss": loss}))
    batch = defaced_batch()
    perfect = method.loss(_Shifted(0.0), batch, seed=0)
    assert perfect.total.item() == 0
    assert perfect.weight.item() == 2 * 0.75 * 32**3  # the hidden voxels of both samples
    off = method.loss(_Shifted(-2.0), batch, seed=0)
    assert off.total.item() / off.weight.item() == (4.0 if loss == "mse" else 2.0)


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
    assert 0 < base.weight.item() < 2 * 0.75 * 32**3  # hidden voxels outside the band
    plain = make_method(_config(architecture, tmp_path))
    unaware = [plain.loss(model, defaced_batch(anon_noise=n), seed=0).total for n in (0.0, 5.0)]
    assert not torch.equal(unaware[0], unaware[1])


@pytest.mark.parametrize(
    ("architecture", "options"),
    [
        ("resenc_l", {}),
        ("resenc_l", {"densify": "token", "mask_ratio_range": [0.6, 0.9]}),
        ("primus_m", {}),
        ("primus_m", {"loss": "l1", "mask_ratio_range": [0.6, 0.9]}),
    ],
)
def test_every_trainable_weight_gets_a_finite_gradient(
    architecture: str, options: dict[str, Any], tmp_path: Path
) -> None:
    method = make_method(_config(architecture, tmp_path, options=options))
    torch.manual_seed(0)
    model = method.build()
    terms = method.loss(model, defaced_batch(), seed=0)
    assert torch.isfinite(terms.total) and terms.weight > 0
    terms.total.backward()
    for name, parameter in model.named_parameters():
        if parameter.requires_grad:
            assert parameter.grad is not None, name
            assert torch.isfinite(parameter.grad).all(), name
    tokens = [p for n, p in model.named_parameters() if "mask_token" in n]
    assert tokens and all(p.grad is not None and p.grad.abs().sum() > 0 for p in tokens)

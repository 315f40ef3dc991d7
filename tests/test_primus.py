"""Primus: parameter counts, the reference's state dict and forward, and true MAE.

Tiny configurations keep the tests to seconds on two cores: width 48 with 2 heads (head_dim 24,
rope_dim 16), 2 blocks, 32 x 24 x 16 voxels in 8^3 patches, i.e. a non-cubic 4 x 3 x 2 token
grid, so that a mix-up of axes in the token order or the rotary table cannot pass unseen.
Tests marked ``reference`` compare with dynamic_network_architectures (dna) 0.4.4 and need timm;
they skip without it (see ``reference_models.py``).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import torch
from reference_models import import_dna_primus
from torch import Tensor, nn

from openmind_ssl.models.eva import rope_dim_for
from openmind_ssl.models.primus import PRIMUS_M, Primus, primus_m

SHAPE = (32, 24, 16)
TINY: dict[str, Any] = {"embed_dim": 48, "depth": 2, "num_heads": 2, "input_shape": SHAPE}

# Parameters of dna 0.4.4 PrimusM(1, 1, (8, 8, 8), input_shape), counted with
# sum(p.numel() for p in model.parameters()) (dna imported as in reference_models.py).
PRIMUS_M_PARAMETERS = {160: 151_786_529, 64: 145_316_897}


@pytest.fixture(autouse=True, scope="module")
def _one_thread() -> Iterator[None]:
    """The models here are tiny: on a busy machine, OpenMP's thread hand-offs cost far more
    than the arithmetic (a 2-thread forward took 0.2 s against 3 ms on one thread)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def tiny(decoder_depth: int = 0, **overrides: Any) -> Primus:
    torch.manual_seed(0)
    return Primus(1, 2, **{**TINY, "decoder_depth": decoder_depth, **overrides}).eval()


def volume(batch: int, seed: int = 1) -> Tensor:
    return torch.randn(batch, 1, *SHAPE, generator=torch.Generator().manual_seed(seed))


def random_keep(batch: int, tokens: int, n_keep: int, seed: int = 2) -> Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.stack([torch.randperm(tokens, generator=generator)[:n_keep] for _ in range(batch)])


def shapes(model: nn.Module) -> dict[str, tuple[int, ...]]:
    return {key: tuple(value.shape) for key, value in model.state_dict().items()}


# --- size -------------------------------------------------------------------------------------


@pytest.mark.parametrize("side", sorted(PRIMUS_M_PARAMETERS))
def test_primus_m_parameter_count(side: int) -> None:
    with torch.device("meta"):  # shapes only: no memory, no initialisation
        model = primus_m(1, 1, input_shape=(side, side, side))
    assert sum(p.numel() for p in model.parameters()) == PRIMUS_M_PARAMETERS[side]
    assert model.token_grid() == (side // 8,) * 3
    assert len(model.state_dict()) == 384  # no rotary table, no decoder keys


def test_primus_m_config_and_overrides() -> None:
    with torch.device("meta"):
        model = primus_m(2, 3, input_shape=(32, 32, 32), depth=1, decoder_depth=1)
    assert PRIMUS_M == {"embed_dim": 864, "depth": 16, "num_heads": 12}
    assert len(model.eva.blocks) == 1
    assert model.decoder is not None
    assert model.down_projection.proj.weight.shape == (864, 2, 8, 8, 8)
    assert model.eva.blocks[0].mlp.fc2.weight.shape == (864, 2304)
    assert model.eva.rope.rope_dim == 48
    for key in (model.key_to_encoder, model.key_to_stem, *model.keys_to_in_proj):
        model.get_submodule(key)
    assert model.key_to_lpe in model.state_dict()


def test_configuration_errors_name_the_constraint() -> None:
    with pytest.raises(ValueError, match="multiple of 6"):
        Primus(embed_dim=64, depth=1, num_heads=2, input_shape=(32, 32, 32))
    assert rope_dim_for(72, 3) == 16
    with pytest.raises(ValueError, match="divisible by patch_size"):
        Primus(**{**TINY, "input_shape": (30, 24, 16)})
    with pytest.raises(ValueError, match="powers of two"):
        Primus(**{**TINY, "patch_size": (6, 6, 6), "input_shape": (36, 36, 36)})


def test_input_shape_and_keep_are_checked() -> None:
    model = tiny()
    with pytest.raises(ValueError, match="input_shape"):
        model(torch.zeros(1, 1, 32, 32, 32))
    with pytest.raises(ValueError, match="int64"):
        model(volume(1), torch.zeros(1, 3, dtype=torch.int32))
    with pytest.raises(ValueError, match="int64"):
        model(volume(2), torch.zeros(1, 3, dtype=torch.int64))


# --- the reference ----------------------------------------------------------------------------


@pytest.mark.reference
def test_primus_m_state_dict_matches_dna() -> None:
    _, dna_primus_m = import_dna_primus()
    with torch.device("meta"):
        reference = dna_primus_m(1, 1, (8, 8, 8), (160, 160, 160))
        ours = primus_m(1, 1, input_shape=(160, 160, 160))
    assert shapes(ours) == shapes(reference)


REDUCED = [
    pytest.param((8, 8, 8), SHAPE, 48, 2, id="patch8-grid4x3x2"),
    pytest.param((8, 8, 4), (32, 16, 16), 72, 3, id="patch8x8x4-grid4x2x4"),
]


@pytest.mark.reference
@pytest.mark.parametrize(("patch", "shape", "dim", "heads"), REDUCED)
def test_reduced_primus_matches_dna(
    patch: tuple[int, int, int], shape: tuple[int, int, int], dim: int, heads: int
) -> None:
    dna_primus, _ = import_dna_primus()
    torch.manual_seed(0)
    reference = dna_primus(
        1, dim, patch, 2, eva_depth=2, eva_numheads=heads, input_shape=shape,
        init_values=0.1, scale_attn_inner=True,
    )  # fmt: skip
    torch.manual_seed(0)
    ours = Primus(
        1, 2, embed_dim=dim, depth=2, num_heads=heads, patch_size=patch, input_shape=shape
    )
    assert shapes(ours) == shapes(reference)
    # Built in dna's order with dna's samplers, one seed gives the same initial weights.
    for key, value in reference.state_dict().items():
        torch.testing.assert_close(ours.state_dict()[key], value, rtol=0, atol=0, msg=key)

    # Weights that differ from any init (so a swapped pair of tensors would show), both ways.
    for value in reference.state_dict().values():
        value.add_(0.05 * torch.randn_like(value))
    ours.load_state_dict(reference.state_dict(), strict=True)
    reference.load_state_dict(ours.state_dict(), strict=True)
    x = torch.randn(2, 1, *shape)
    with torch.no_grad():
        expected = reference.eval()(x)
        got = ours.eval()(x)
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-5)


class _FixedKeep(nn.Module):
    """Stands in for timm's PatchDropout inside dna's Eva: keeps the given token indices."""

    def __init__(self, keep: Tensor) -> None:
        super().__init__()
        self.keep = keep

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        return x.gather(1, self.keep.unsqueeze(-1).expand(-1, -1, x.shape[-1])), self.keep


@pytest.mark.reference
def test_masked_forward_matches_dna_patch_drop() -> None:
    """dna masks inside its encoder with patch dropout and restores with a per-sample loop; given
    the same kept tokens, our batched gather / scatter path computes the same.

    dna is run one sample at a time: its Eva gathers the rotary table to (B, n, dim) without
    the head axis that timm's own Eva adds (``unsqueeze(1)``), so for B > 1 it fails to
    broadcast against (B, heads, n, head_dim), or, when B == heads, silently pairs sample b with
    the rotary rows of sample h.
    """
    dna_primus, _ = import_dna_primus()
    reference = dna_primus(
        1, 48, (8, 8, 8), 2, eva_depth=2, eva_numheads=2, input_shape=SHAPE,
        init_values=0.1, scale_attn_inner=True,
    )  # fmt: skip
    ours = tiny()
    ours.load_state_dict(reference.state_dict(), strict=True)
    reference.eval()
    keep = random_keep(3, ours.num_tokens, 7)
    x = volume(3)
    with torch.no_grad():
        got = ours(x, keep)
        for i in range(3):
            reference.eva.patch_drop = _FixedKeep(keep[i : i + 1])
            expected = reference(x[i : i + 1])
            torch.testing.assert_close(got[i : i + 1], expected, rtol=0, atol=1e-5)


# --- true MAE ---------------------------------------------------------------------------------


@pytest.mark.parametrize("decoder_depth", [0, 2])
def test_keeping_every_token_in_any_order_is_the_plain_forward(decoder_depth: int) -> None:
    model = tiny(decoder_depth)
    x = volume(2)
    keep = random_keep(2, model.num_tokens, model.num_tokens)
    with torch.no_grad():
        torch.testing.assert_close(model(x, keep), model(x), rtol=0, atol=1e-5)


def test_encoder_never_sees_masked_patches() -> None:
    model = tiny(decoder_depth=2)
    keep = random_keep(2, model.num_tokens, 6)
    seen: list[Tensor] = []
    model.eva.register_forward_hook(lambda _module, _args, out: seen.append(out))
    x = volume(2)
    visible = model.visible_voxels(keep)
    assert visible.shape == (2, 1, *SHAPE)
    assert int(visible.sum()) == 2 * 6 * 8**3
    scrambled = torch.where(visible, x, 100 * torch.randn_like(x))
    with torch.no_grad():
        out, out_scrambled = model(x, keep), model(scrambled, keep)
    assert seen[0].shape == (2, 6, 48)
    torch.testing.assert_close(seen[1], seen[0], rtol=0, atol=0)
    # Masked tokens reach the decoder as the mask token, whatever their voxels held.
    torch.testing.assert_close(out_scrambled, out, rtol=0, atol=0)


def test_without_decoder_kept_patches_decode_alone() -> None:
    model = tiny(decoder_depth=0)
    keep = random_keep(2, model.num_tokens, 6)
    x = volume(2)
    visible = model.visible_voxels(keep)
    with torch.no_grad():
        out = model(x, keep)
        out_scrambled = model(torch.where(visible, x, torch.randn_like(x)), keep)
        # What the (zero) mask token decodes to, everywhere.
        blank = model.up_projection(torch.zeros(1, 48, *model.token_grid())).expand_as(out)
    visible = visible.expand_as(out)
    torch.testing.assert_close(out_scrambled[visible], out[visible], rtol=0, atol=0)
    torch.testing.assert_close(out[~visible], blank[~visible], rtol=0, atol=1e-6)


def test_visible_voxels_follow_the_token_order() -> None:
    model = tiny()
    _, h, d = model.token_grid()
    token = (2 * h + 1) * d + 1  # token (2, 1, 1) in C order, dna's "(w h d)"
    visible = model.visible_voxels(torch.tensor([[token]]))
    expected = torch.zeros(1, 1, *SHAPE, dtype=torch.bool)
    expected[:, :, 16:24, 8:16, 8:16] = True
    assert torch.equal(visible, expected)


@pytest.mark.parametrize("decoder_depth", [0, 2])
def test_batch_matches_samples_one_by_one(decoder_depth: int) -> None:
    model = tiny(decoder_depth)
    x = volume(3)
    keep = random_keep(3, model.num_tokens, 5)
    with torch.no_grad():
        batched = model(x, keep)
        single = torch.cat([model(x[i : i + 1], keep[i : i + 1]) for i in range(3)])
    torch.testing.assert_close(batched, single, rtol=0, atol=1e-5)


@pytest.mark.parametrize(("decoder_depth", "masked"), [(0, True), (2, True), (2, False)])
def test_every_learnable_parameter_gets_a_gradient(decoder_depth: int, masked: bool) -> None:
    model = tiny(decoder_depth).train()
    x = volume(2)
    keep = random_keep(2, model.num_tokens, 6) if masked else None
    model(x, keep).square().mean().backward()
    learns_mask_token = decoder_depth > 0 and masked
    for name, parameter in model.named_parameters():
        if name == "mask_token" and not learns_mask_token:
            assert parameter.grad is None
            continue
        assert parameter.grad is not None, name
        assert parameter.grad.abs().sum() > 0, name
    assert isinstance(model.mask_token, nn.Parameter) == (decoder_depth > 0)


def test_mask_token_loads_both_ways() -> None:
    plain, mae = tiny(0), tiny(2)
    assert "mask_token" not in dict(plain.named_parameters())
    assert torch.equal(plain.mask_token, torch.zeros(1, 1, 48))
    assert 0 < mae.mask_token.abs().max() < 1e-4
    result = mae.load_state_dict(plain.state_dict(), strict=False)
    assert not result.unexpected_keys
    assert result.missing_keys
    assert all(key.startswith("decoder.") for key in result.missing_keys)
    result = plain.load_state_dict(mae.state_dict(), strict=False)
    assert not result.missing_keys
    assert all(key.startswith("decoder.") for key in result.unexpected_keys)
    assert torch.equal(plain.mask_token, mae.mask_token)


def test_drop_path_rises_over_depth_and_only_acts_in_training() -> None:
    model = tiny(drop_path_rate=0.2, depth=3)
    rates = [block.drop_path1.p for block in model.eva.blocks]
    assert rates == pytest.approx([0.0, 0.1, 0.2])
    x = volume(4)
    with torch.no_grad():
        assert torch.equal(model(x), model(x))
        model.train()
        torch.manual_seed(3)
        assert not torch.equal(model(x), model.eval()(x))

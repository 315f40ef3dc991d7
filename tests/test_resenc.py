"""openmind_ssl.models.resenc: ResEnc-L's size, its state dict against dna's, forward, backward.

The comparisons with ``dynamic_network_architectures`` (dna) skip where it cannot be imported;
its ``architectures.unet`` module imports without timm, so a ``--no-deps`` install is enough.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

torch = pytest.importorskip("torch")

from torch import nn  # noqa: E402

from openmind_data.errors import ConfigError  # noqa: E402
from openmind_ssl.models.resenc import RESENC_L, BasicBlockD, ResEncL  # noqa: E402

#: nnssl's get_res_enc_l(1, 1), as counted from dna 0.4.4.
RESENC_L_PARAMETERS = 102_348_965
RESENC_L_STATE_ENTRIES = 956

#: Four stages, the last one without a width change (its skip is the pooling alone).
TINY: dict[str, Any] = {"features_per_stage": (4, 8, 16, 16), "blocks_per_stage": (1, 2, 1, 1)}
SHAPE = (32, 32, 32)


@pytest.fixture(scope="module")
def full() -> ResEncL:
    """The full-size model, built once (about 2 s; never run forward)."""
    return ResEncL()


def dna_model(
    input_channels: int,
    num_classes: int,
    features_per_stage: tuple[int, ...],
    blocks_per_stage: tuple[int, ...],
    *,
    deep_supervision: bool = False,
) -> nn.Module:
    """dna's ResidualEncoderUNet as nnssl's get_res_enc_l builds it, at any width and depth."""
    unet = pytest.importorskip("dynamic_network_architectures.architectures.unet")
    n = len(features_per_stage)
    model: nn.Module = unet.ResidualEncoderUNet(
        input_channels=input_channels,
        n_stages=n,
        features_per_stage=list(features_per_stage),
        conv_op=nn.Conv3d,
        kernel_sizes=[[3, 3, 3]] * n,
        strides=[[1, 1, 1]] + [[2, 2, 2]] * (n - 1),
        n_blocks_per_stage=list(blocks_per_stage),
        num_classes=num_classes,
        n_conv_per_stage_decoder=[1] * (n - 1),
        conv_bias=True,
        norm_op=nn.InstanceNorm3d,
        norm_op_kwargs={"eps": 1e-5, "affine": True},
        nonlin=nn.LeakyReLU,
        nonlin_kwargs={"inplace": True},
        deep_supervision=deep_supervision,
    )
    return model


def shapes(model: nn.Module) -> list[tuple[str, tuple[int, ...]]]:
    return [(key, tuple(value.shape)) for key, value in model.state_dict().items()]


def randomize(model: nn.Module, seed: int = 0) -> None:
    """Every parameter random, so no branch hides behind a zero-initialised norm."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.5)


def outputs(result: torch.Tensor | list[torch.Tensor]) -> Iterator[torch.Tensor]:
    yield from result if isinstance(result, list) else [result]


# --- size and names (no dna needed) ---


def test_full_size_counts(full: ResEncL) -> None:
    assert sum(p.numel() for p in full.parameters()) == RESENC_L_PARAMETERS
    assert len(full.state_dict()) == RESENC_L_STATE_ENTRIES
    assert full.encoder.output_channels == RESENC_L["features_per_stage"]
    assert [len(stage.blocks) for stage in full.encoder.stages] == [1, 3, 4, 6, 6, 6]


def test_adaptation_keys_resolve(full: ResEncL) -> None:
    """As dna's test_submodules_loadable: the keys name modules; the in-projections agree."""
    assert full.get_submodule(full.key_to_encoder) is full.encoder.stages
    assert full.get_submodule(full.key_to_stem) is full.encoder.stem
    weights = [full.get_submodule(key).weight for key in full.keys_to_in_proj]
    assert all(w is weights[0] for w in weights)
    assert weights[0].shape == (32, 1, 3, 3, 3)
    assert full.key_to_lpe is None


def test_duplicate_keys_share_tensors() -> None:
    state = ResEncL(**TINY).state_dict(keep_vars=True)
    conv = "encoder.stages.1.blocks.0.skip.1"
    assert state[f"{conv}.conv.weight"] is state[f"{conv}.all_modules.0.weight"]
    assert f"{conv}.conv.bias" not in state  # the projection has no bias
    assert (
        state["encoder.stem.convs.0.norm.bias"] is state["decoder.encoder.stem.convs.0.norm.bias"]
    )
    assert not any(key.startswith("encoder.stages.3.blocks.0.skip") for key in state)


def test_initialisation() -> None:
    model = ResEncL(**TINY)
    for module in model.modules():
        if isinstance(module, nn.Conv3d | nn.ConvTranspose3d) and module.bias is not None:
            assert not module.bias.any()
        if isinstance(module, BasicBlockD):
            assert not module.conv2.norm.weight.any()
            assert not module.conv2.norm.bias.any()
            assert bool((module.conv1.norm.weight == 1).all())
    assert model.encoder.stem.convs[0].conv.weight.std() > 0


@pytest.mark.parametrize(
    "kwargs",
    [
        {"features_per_stage": (4,), "blocks_per_stage": (1,)},
        {"features_per_stage": (4, 8), "blocks_per_stage": (1, 1, 1)},
        {"features_per_stage": (4, 8), "blocks_per_stage": (1, 0)},
        {"input_channels": 0},
    ],
)
def test_bad_sizes_raise(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ConfigError, match="ResEncL needs"):
        ResEncL(**kwargs)


def test_forward_shapes() -> None:
    x = torch.randn(2, 2, *SHAPE)
    assert ResEncL(2, 3, **TINY)(x).shape == (2, 3, *SHAPE)
    deep = ResEncL(2, 3, **TINY, deep_supervision=True)(x)
    assert [tuple(o.shape) for o in deep] == [
        (2, 3, 32, 32, 32),
        (2, 3, 16, 16, 16),
        (2, 3, 8, 8, 8),
    ]
    skips = ResEncL(2, 3, **TINY).encoder(x)
    assert [tuple(s.shape[1:]) for s in skips] == [
        (4, 32, 32, 32),
        (8, 16, 16, 16),
        (16, 8, 8, 8),
        (16, 4, 4, 4),
    ]


def test_backward_reaches_every_parameter() -> None:
    model = ResEncL(1, 2, **TINY, deep_supervision=True)
    randomize(model)
    loss = sum(o.square().mean() for o in model(torch.randn(1, 1, *SHAPE)))
    loss.backward()
    for name, parameter in model.named_parameters():
        assert parameter.grad is not None, name
        assert bool(parameter.grad.isfinite().all()), name
        # A conv bias in front of an instance norm is cancelled by the mean: its gradient is ~0.
        if not name.endswith("bias"):
            assert parameter.grad.abs().max() > 0, name


def test_without_deep_supervision_only_the_used_parameters_train() -> None:
    model = ResEncL(1, 2, **TINY)
    model(torch.randn(1, 1, *SHAPE)).square().mean().backward()
    for name, parameter in model.named_parameters():
        assert (parameter.grad is not None) == parameter.requires_grad, name
    frozen = [n for n, p in model.named_parameters() if not p.requires_grad]
    assert frozen and all(n.startswith("decoder.seg_layers.") for n in frozen)


# --- against dna ---


def test_full_size_matches_dna(full: ResEncL) -> None:
    dna = dna_model(1, 1, RESENC_L["features_per_stage"], RESENC_L["blocks_per_stage"])
    assert shapes(full) == shapes(dna)
    assert sum(p.numel() for p in dna.parameters()) == RESENC_L_PARAMETERS


@pytest.mark.parametrize("deep_supervision", [False, True])
def test_reduced_matches_dna(deep_supervision: bool) -> None:
    dna = dna_model(2, 3, **TINY, deep_supervision=deep_supervision)
    ours = ResEncL(2, 3, **TINY, deep_supervision=deep_supervision)
    assert shapes(ours) == shapes(dna)
    ours.load_state_dict(dna.state_dict(), strict=True)
    dna.load_state_dict(ours.state_dict(), strict=True)


def test_same_seed_same_weights_as_nnunet() -> None:
    """nnU-Net builds dna's model, then runs network.apply(network.initialize)."""
    torch.manual_seed(0)
    dna = dna_model(1, 2, **TINY)
    dna.apply(dna.initialize)
    torch.manual_seed(0)
    ours = ResEncL(1, 2, **TINY)
    theirs = dna.state_dict()
    for key, value in ours.state_dict().items():
        assert torch.equal(value, theirs[key]), key


@pytest.mark.parametrize("deep_supervision", [False, True])
@pytest.mark.parametrize("train", [True, False])
def test_forward_matches_dna(deep_supervision: bool, train: bool) -> None:
    ours = ResEncL(2, 3, **TINY, deep_supervision=deep_supervision)
    randomize(ours)
    dna = dna_model(2, 3, **TINY, deep_supervision=deep_supervision)
    dna.load_state_dict(ours.state_dict(), strict=True)
    ours.train(train)
    dna.train(train)
    x = torch.randn(1, 2, *SHAPE, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        mine, theirs = list(outputs(ours(x))), list(outputs(dna(x)))
    assert [o.shape for o in mine] == [o.shape for o in theirs]
    assert len(mine) == (3 if deep_supervision else 1)
    for a, b in zip(mine, theirs, strict=True):
        assert (a - b).abs().max() <= 1e-5

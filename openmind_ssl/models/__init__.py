"""The pretraining architectures: ResEnc-L (nnU-Net's residual-encoder U-Net) and Primus-M (an
EVA-style 3D vision transformer), with the parameter names of ``dynamic_network_architectures``
so that its checkpoints, nnssl's and the released OpenMind ones load."""

from __future__ import annotations

from typing import Any

from torch import nn

from openmind_ssl.models.primus import PRIMUS_M, Primus, primus_m
from openmind_ssl.models.resenc import RESENC_L, ResEncL

__all__ = [
    "PRIMUS_M",
    "PRIMUS_PATCH",
    "RESENC_L",
    "Primus",
    "ResEncL",
    "adaptation_keys",
    "build_network",
    "find_backbone",
    "parameter_count",
    "primus_m",
]

#: Voxels per Primus token along each axis (the paper's 8^3 patch embedding).
PRIMUS_PATCH = (8, 8, 8)


def build_network(
    model: Any,
    patch_size: tuple[int, int, int],
    *,
    input_channels: int = 1,
    num_classes: int = 1,
    mae_decoder: bool = False,
    deep_supervision: bool = False,
) -> nn.Module:
    """The network a ``ModelConfig`` describes, for crops of ``patch_size``. ``mae_decoder``
    gives Primus its small transformer decoder (``model.decoder_depth`` blocks) after the
    mask-token restore; ResEnc-L reconstructs with its own U-Net decoder, which outputs one
    prediction per decoder stage with ``deep_supervision`` (Primus has a single output)."""
    if model.architecture == "resenc_l":
        sizes = {
            key: value
            for key, value in (
                ("features_per_stage", model.features_per_stage),
                ("blocks_per_stage", model.blocks_per_stage),
            )
            if value is not None
        }
        return ResEncL(input_channels, num_classes, deep_supervision=deep_supervision, **sizes)
    overrides = {
        key: value
        for key, value in (
            ("embed_dim", model.embed_dim),
            ("depth", model.depth),
            ("num_heads", model.num_heads),
        )
        if value is not None
    }
    return primus_m(
        input_channels,
        num_classes,
        input_shape=patch_size,
        patch_size=PRIMUS_PATCH,
        drop_path_rate=model.drop_path_rate,
        decoder_depth=model.decoder_depth if mae_decoder else 0,
        **overrides,
    )


def parameter_count(model: nn.Module) -> int:
    """Parameters, each shared tensor once (as dna and the papers count them)."""
    return sum(p.numel() for p in model.parameters())


def find_backbone(network: nn.Module) -> tuple[str, ResEncL | Primus]:
    """The ResEnc-L or Primus inside ``network`` and its name there ('' for the network
    itself), e.g. ('backbone', ResEncL(...)) for a method that adds heads."""
    for name, module in network.named_modules():
        if isinstance(module, ResEncL | Primus):
            return name, module
    raise TypeError(f"{type(network).__name__} holds no ResEnc-L or Primus backbone")


def adaptation_keys(network: nn.Module) -> dict[str, Any]:
    """Where the encoder, the stem, the input projection and the learned position embedding
    of the backbone inside ``network`` sit in its state dict (nnssl's adaptation plan names),
    for fine-tuning. A method that wraps the backbone (heads, a teacher) prefixes them."""
    name, backbone = find_backbone(network)
    prefix = f"{name}." if name else ""
    lpe = backbone.key_to_lpe
    return {
        "key_to_encoder": prefix + backbone.key_to_encoder,
        "key_to_stem": prefix + backbone.key_to_stem,
        "keys_to_in_proj": [prefix + key for key in backbone.keys_to_in_proj],
        "key_to_lpe": prefix + lpe if lpe is not None else None,
    }

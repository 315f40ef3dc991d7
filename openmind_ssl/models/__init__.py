"""The pretraining networks: ResEnc-L (nnU-Net's residual-encoder U-Net) and Primus-M (an
EVA-style 3D vision transformer), with the parameter names of ``dynamic_network_architectures``
so that its checkpoints, nnssl's and the released OpenMind ones load. What the rest of the
package needs to know about each architecture is its adapter's (``openmind_ssl.backbones``)."""

from __future__ import annotations

from typing import Any

from torch import nn

from openmind_ssl.backbones import backbone_of, get_backbone, network_classes
from openmind_ssl.models.primus import PRIMUS_M, Primus, primus_m
from openmind_ssl.models.resenc import RESENC_L, ResEncL

__all__ = [
    "PRIMUS_M",
    "RESENC_L",
    "Primus",
    "ResEncL",
    "adaptation_keys",
    "build_network",
    "find_backbone",
    "parameter_count",
    "primus_m",
]


def build_network(
    model: Any,
    patch_size: tuple[int, int, int],
    *,
    input_channels: int = 1,
    num_classes: int = 1,
    mae_decoder: bool = False,
    deep_supervision: bool = False,
) -> nn.Module:
    """The network a ``ModelConfig`` describes, for crops of ``patch_size``: its architecture's
    ``Backbone.build`` (``openmind_ssl.backbones``)."""
    return get_backbone(model.architecture).build(
        model,
        patch_size,
        input_channels=input_channels,
        num_classes=num_classes,
        mae_decoder=mae_decoder,
        deep_supervision=deep_supervision,
    )


def parameter_count(model: nn.Module) -> int:
    """Parameters, each shared tensor once (as dna and the papers count them)."""
    return sum(p.numel() for p in model.parameters())


def find_backbone(network: nn.Module) -> tuple[str, nn.Module]:
    """The registered backbone network inside ``network`` and its name there ('' for the
    network itself), e.g. ('backbone', ResEncL(...)) for a method that adds heads."""
    classes = network_classes()
    for name, module in network.named_modules():
        if isinstance(module, classes):
            return name, module
    raise TypeError(f"{type(network).__name__} holds no registered backbone")


def adaptation_keys(network: nn.Module) -> dict[str, Any]:
    """Where the encoder, the stem, the input projection and the learned position embedding
    of the backbone inside ``network`` sit in its state dict (nnssl's adaptation plan names),
    for fine-tuning. A method that wraps the backbone (heads, a teacher) prefixes them."""
    name, backbone = find_backbone(network)
    prefix = f"{name}." if name else ""
    keys = backbone_of(backbone).adaptation_keys()
    lpe = keys["key_to_lpe"]
    return {
        "key_to_encoder": prefix + keys["key_to_encoder"],
        "key_to_stem": prefix + keys["key_to_stem"],
        "keys_to_in_proj": [prefix + key for key in keys["keys_to_in_proj"]],
        "key_to_lpe": prefix + lpe if lpe is not None else None,
    }

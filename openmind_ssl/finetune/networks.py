"""The downstream networks and their two parameter groups.

Segmentation uses the pretraining architecture itself with a fresh output layer: ResEnc-L's
U-Net, or Primus with its patch decoder (no MAE decoder). Classification keeps only the encoder
and pools it: the average and the maximum over ResEnc-L's deepest stage, or over Primus's
tokens, side by side, then a linear layer. The maximum is there for findings that fill a few
cells of the volume (a lesion), which an average alone dilutes. The classifier's attributes
carry the backbone's names (``encoder``; ``down_projection`` and ``eva``), so pretrained weights
map onto it with the same keys as onto the segmentation network.

``"encoder"`` is what a checkpoint provides (the encoder with its stem, and Primus's position
embedding); ``"decoder"`` is everything fresh (the U-Net decoder, the up-projection, the head).
The schedules train one or both.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from openmind_ssl.models import Primus, ResEncL, build_network

__all__ = ["KEYS", "Classifier", "build_downstream", "freeze", "parameter_groups"]

#: Where the encoder and the stem sit in each architecture's state dict (dna's names).
KEYS: dict[str, dict[str, Any]] = {
    "resenc_l": {
        "key_to_encoder": ResEncL.key_to_encoder,
        "key_to_stem": ResEncL.key_to_stem,
        "keys_to_in_proj": list(ResEncL.keys_to_in_proj),
        "key_to_lpe": ResEncL.key_to_lpe,
    },
    "primus_m": {
        "key_to_encoder": Primus.key_to_encoder,
        "key_to_stem": Primus.key_to_stem,
        "keys_to_in_proj": list(Primus.keys_to_in_proj),
        "key_to_lpe": Primus.key_to_lpe,
    },
}


class Classifier(nn.Module):
    """A pretraining encoder, pooled, and a linear head of ``num_classes`` logits."""

    def __init__(self, backbone: nn.Module, num_classes: int) -> None:
        super().__init__()
        self.primus = isinstance(backbone, Primus)
        if isinstance(backbone, Primus):
            self.down_projection = backbone.down_projection
            self.eva = backbone.eva
            self.input_shape = backbone.input_shape
            width = 2 * backbone.embed_dim
            self.norm: nn.Module = nn.LayerNorm(width)
        elif isinstance(backbone, ResEncL):
            self.encoder = backbone.encoder
            width = 2 * backbone.encoder.output_channels[-1]
            self.norm = nn.Identity()
        else:
            raise TypeError(f"no classifier for {type(backbone).__name__}")
        self.head = nn.Linear(width, num_classes)
        nn.init.trunc_normal_(self.head.weight, std=0.02)
        nn.init.zeros_(self.head.bias)

    def forward(self, x: Tensor) -> Tensor:
        if self.primus:
            if tuple(x.shape[2:]) != self.input_shape:
                raise ValueError(f"expected spatial shape {self.input_shape}, got {x.shape[2:]}")
            tokens = self.down_projection(x).flatten(2)
            features = self.eva(tokens.transpose(1, 2)).transpose(1, 2)  # (B, C, N)
        else:
            features = self.encoder(x)[-1].flatten(2)  # (B, C, X * Y * Z)
        pooled = torch.cat([features.mean(dim=2), features.amax(dim=2)], dim=1)
        logits: Tensor = self.head(self.norm(pooled))
        return logits


def build_downstream(
    model: Any,
    patch_size: tuple[int, int, int],
    *,
    kind: str,
    input_channels: int,
    num_classes: int,
    deep_supervision: bool = False,
) -> nn.Module:
    """The ``kind`` ("segmentation" | "classification") network for ``model`` (a
    ``ModelConfig``) at ``patch_size``; ``deep_supervision`` for ResEnc-L segmentation."""
    backbone = build_network(
        model,
        patch_size,
        input_channels=input_channels,
        num_classes=max(num_classes, 1),
        deep_supervision=deep_supervision and kind == "segmentation",
    )
    if kind == "classification":
        return Classifier(backbone, num_classes)
    return backbone


def parameter_groups(network: nn.Module, architecture: str) -> dict[str, list[nn.Parameter]]:
    """``{"encoder": [...], "decoder": [...]}``: each trainable parameter of ``network`` once
    (ResEnc-L's unused deep-supervision outputs are frozen from the start and stay so)."""
    keys = KEYS[architecture]
    prefixes = tuple(
        f"{key}." for key in (keys["key_to_encoder"], keys["key_to_stem"]) if key is not None
    )
    groups: dict[str, list[nn.Parameter]] = {"encoder": [], "decoder": []}
    seen: set[int] = set()
    # Named in module order with aliases (dna's all_modules, decoder.encoder) listed too: the
    # first name of a shared tensor is its encoder name.
    for name, parameter in network.named_parameters(remove_duplicate=False):
        if id(parameter) in seen or not parameter.requires_grad:
            continue
        seen.add(id(parameter))
        group = "encoder" if name.startswith(prefixes) else "decoder"
        groups[group].append(parameter)
    return groups


def freeze(parameters: list[nn.Parameter], frozen: bool) -> None:
    for parameter in parameters:
        parameter.requires_grad_(not frozen)

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

from openmind_ssl.backbones import backbone_of, get_backbone

__all__ = ["Classifier", "build_downstream", "freeze", "parameter_groups"]


class Classifier(nn.Module):
    """A pretraining encoder, pooled, and a linear head of ``num_classes`` logits."""

    def __init__(self, backbone: nn.Module, num_classes: int) -> None:
        super().__init__()
        self.adapter = backbone_of(backbone)
        for part in self.adapter.encoder_parts:
            self.add_module(part, backbone.get_submodule(part))
        width = 2 * self.adapter.feature_dim(backbone)
        # Tokens are normalised before the head; a CNN's pooled features come out of a norm.
        self.norm = nn.LayerNorm(width) if self.adapter.tokens else nn.Identity()
        self.head = nn.Linear(width, num_classes)
        nn.init.trunc_normal_(self.head.weight, std=0.02)
        nn.init.zeros_(self.head.bias)

    def forward(self, x: Tensor) -> Tensor:
        features = self.adapter.deepest_features(self, x)  # (B, C, N)
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
    backbone = get_backbone(model.architecture).build(
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
    keys = get_backbone(architecture).adaptation_keys()
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

"""ResEnc-L (nnU-Net's residual-encoder U-Net) as a backbone: a CNN whose encoder gives one
feature map per stage, full resolution first, and whose U-Net decoder reconstructs from them."""

from __future__ import annotations

import math
from typing import Any, cast

import torch
from torch import Tensor, nn

from openmind_data.errors import ConfigError
from openmind_ssl.backbones.base import Backbone, Grid, Head, Stages
from openmind_ssl.models.resenc import RESENC_L, ResEncL

__all__ = ["RESENC", "ResEncBackbone"]


class ResEncBackbone(Backbone):
    name = "resenc_l"
    label = "ResEnc-L"
    network_class = ResEncL
    aliases = ("ResEncL",)
    tokens = False
    encoder_parts = ("encoder",)
    transfer_lr = 1e-3  # with SGD

    def network(self, model: Any, patch_size: Grid, head: Head) -> nn.Module:
        """ResEnc-L reconstructs with its own U-Net decoder (``mae_decoder`` changes nothing);
        the size keys ``features_per_stage`` and ``blocks_per_stage`` shrink it."""
        sizes = self.sizes(model, "features_per_stage", "blocks_per_stage")
        return ResEncL(
            head.input_channels,
            head.num_classes,
            deep_supervision=head.deep_supervision,
            **sizes,
        )

    def stages(self, model: Any) -> int:
        return len(model.features_per_stage or RESENC_L["features_per_stage"])

    def multiple(self, model: Any) -> int:
        """The total stride: every stage after the first halves each axis."""
        return int(2 ** (self.stages(model) - 1))

    def describe(self, model: Any) -> str:
        return f"ResEnc with {self.stages(model)} stages"

    def check_pooled_size(self, model: Any, size: Grid, what: str) -> None:
        """Also more than one voxel at the bottleneck, where instance norm would have nothing
        to normalise."""
        stride = self.multiple(model)
        if any(v % stride for v in size) or math.prod(v // stride for v in size) < 2:
            raise ConfigError(
                f"{what} {size}: {self.describe(model)} needs multiples of {stride}, and"
                " more than one voxel at the bottleneck"
            )

    def mask_cell(self, block_size: int) -> Grid:
        return block_size, block_size, block_size

    def position_grid(self, patch_size: Grid) -> Grid | None:
        return None

    def encode(self, network: nn.Module, x: Tensor) -> list[Tensor]:
        skips: list[Tensor] = network.get_submodule("encoder")(x)
        return skips

    def pool(self, encoded: list[Tensor], stages: Stages = "deepest") -> Tensor:
        """Each stage averaged over space: the deepest alone, or every stage concatenated."""
        chosen = encoded if stages == "all" else encoded[-1:]
        return torch.cat([s.mean(dim=(2, 3, 4)) for s in chosen], dim=1)

    def decode(self, network: nn.Module, encoded: list[Tensor]) -> Tensor:
        decoded = network.get_submodule("decoder")(encoded)
        if not isinstance(decoded, Tensor):
            raise TypeError("the reconstruction needs the decoder without deep supervision")
        return decoded

    def feature_dim(self, network: nn.Module, stages: Stages = "deepest") -> int:
        channels = cast(ResEncL, network).encoder.output_channels
        return sum(channels) if stages == "all" else channels[-1]

    def deepest_features(self, module: nn.Module, x: Tensor) -> Tensor:
        deepest: Tensor = self.encode(module, x)[-1]
        return deepest.flatten(2)  # (B, C, X * Y * Z)

    def pretrain_defaults(self) -> dict[str, dict[str, Any]]:
        """SGD (lr 1e-2, momentum 0.99, Nesterov, weight decay 3e-5, clip 12, no warm-up), the
        config's own defaults; polynomial decay (0.9) over 1000 epochs of 250 steps."""
        return {}

    def finetune_defaults(self, pretrained: bool) -> dict[str, dict[str, Any]]:
        """SGD at 1e-3 from a checkpoint, nnU-Net's 1e-2 from scratch."""
        return {"optim": {"name": "sgd", "lr": self.transfer_lr if pretrained else 1e-2}}


RESENC = ResEncBackbone()

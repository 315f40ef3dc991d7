"""Primus-M (an EVA-style 3D vision transformer) as a backbone: 8^3-voxel tokens, a learned
position embedding sized for the input, and a patch decoder from the tokens back to voxels."""

from __future__ import annotations

from typing import Any, cast

from torch import Tensor, nn

from openmind_ssl.backbones.base import Backbone, Grid, Head, Stages
from openmind_ssl.models.eva import Eva
from openmind_ssl.models.primus import Primus, primus_m

__all__ = ["PATCH", "PRIMUS", "PrimusBackbone"]

#: Voxels per Primus token along each axis (the paper's 8^3 patch embedding).
PATCH: Grid = (8, 8, 8)


class PrimusBackbone(Backbone):
    name = "primus_m"
    label = "Primus-M"
    network_class = Primus
    aliases = ("PrimusM",)
    tokens = True
    encoder_parts = ("down_projection", "eva")
    transfer_lr = 1e-4  # with AdamW

    def network(self, model: Any, patch_size: Grid, head: Head) -> nn.Module:
        """Primus-M, or smaller through ``embed_dim``, ``depth`` and ``num_heads``; a single
        output (``deep_supervision`` changes nothing)."""
        overrides = self.sizes(model, "embed_dim", "depth", "num_heads")
        return primus_m(
            head.input_channels,
            head.num_classes,
            input_shape=patch_size,
            patch_size=PATCH,
            drop_path_rate=model.drop_path_rate,
            decoder_depth=model.decoder_depth if head.mae_decoder else 0,
            **overrides,
        )

    def multiple(self, model: Any) -> int:
        return PATCH[0]

    def describe(self, model: Any) -> str:
        return "Primus"

    def mask_cell(self, block_size: int) -> Grid:
        """A token: Primus masks whole tokens, whatever the method's cube edge."""
        return PATCH

    def position_grid(self, patch_size: Grid) -> Grid | None:
        x, y, z = (n // p for n, p in zip(patch_size, PATCH, strict=True))
        return x, y, z

    def encode(self, network: nn.Module, x: Tensor) -> Tensor:
        """The encoder's tokens (B, N, C)."""
        return cast(Primus, network).encode(x)

    def pool(self, encoded: Tensor, stages: Stages = "deepest") -> Tensor:
        """The tokens averaged (a transformer has one stage)."""
        return encoded.mean(dim=1)

    def decode(self, network: nn.Module, encoded: Tensor) -> Tensor:
        primus = cast(Primus, network)
        b, _, c = encoded.shape
        volume = encoded.transpose(1, 2).reshape(b, c, *primus.token_grid())
        logits: Tensor = primus.up_projection(volume)
        return logits

    def feature_dim(self, network: nn.Module, stages: Stages = "deepest") -> int:
        return cast(Primus, network).eva.embed_dim

    def deepest_features(self, module: nn.Module, x: Tensor) -> Tensor:
        """The transformer's tokens (B, C, N), for inputs of the shape it was built for."""
        eva = cast(Eva, module.get_submodule("eva"))
        expected = tuple(g * p for g, p in zip(eva.grid, PATCH, strict=True))
        if tuple(x.shape[2:]) != expected:
            raise ValueError(f"expected spatial shape {expected}, got {x.shape[2:]}")
        tokens = module.get_submodule("down_projection")(x).flatten(2)
        features: Tensor = eva(tokens.transpose(1, 2)).transpose(1, 2)
        return features

    def pretrain_defaults(self) -> dict[str, dict[str, Any]]:
        """AdamW (lr 3e-4, weight decay 5e-2, betas 0.9/0.98, clip 1) after a 50-epoch linear
        warm-up, then polynomial decay (0.9) over 1000 epochs of 250 steps."""
        return {
            "optim": {
                "name": "adamw",
                "lr": 3e-4,
                "weight_decay": 5e-2,
                "warmup_epochs": 50,
                "grad_clip": 1.0,
            }
        }

    def finetune_defaults(self, pretrained: bool) -> dict[str, dict[str, Any]]:
        """AdamW at 1e-4 from a checkpoint (3e-4 from scratch), weight decay 5e-2, clip 1, and
        Sawtooth's decoder stage at 0.01 of the rate (the fresh up-projection collapses under
        the full one)."""
        return {
            "optim": {
                "name": "adamw",
                "lr": self.transfer_lr if pretrained else 3e-4,
                "weight_decay": 5e-2,
                "grad_clip": 1.0,
            },
            "schedule": {"decoder_lr_factor": 0.01},
        }


PRIMUS = PrimusBackbone()

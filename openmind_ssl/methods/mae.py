"""Masked autoencoding (MAE), with the anonymization-aware loss of the OpenMind paper.

- ResEnc-L: 75% of the crop's 16^3 cubes are set to 0 (the mean after z-scoring) and the CNN
  reconstructs the whole crop; the squared error counts on the hidden cubes only.
- Primus-M: a true MAE. 75% of the 8^3 tokens are dropped before the transformer, which sees
  only the visible ones; mask tokens are put back in a vectorised restore and a small
  transformer decoder plus the patch decoder reconstruct every voxel; the error counts on the
  dropped tokens' voxels.

Anonymization-aware (``anon_aware``, the paper's best ablation): voxels inside the
anonymization (deface) mask are set to 0 in the input and never scored, and the loss is divided
by the number of voxels that are, so whatever a defacing tool left there (zeros, blur, noise)
neither teaches nor distracts. ``anatomy_only`` also restricts the score to the anatomy mask.
"""

from __future__ import annotations

import torch
from torch import nn

from openmind_ssl.methods.base import Batch, Loss
from openmind_ssl.methods.common import (
    MaskedImageMethod,
    cells_to_voxels,
    sample_generator,
    scored_input,
)
from openmind_ssl.models.primus import visible_voxels

__all__ = ["MAE", "block_mask", "token_keep"]


def block_mask(
    shape: tuple[int, int, int], block: int, ratio: float, generators: list[torch.Generator]
) -> torch.Tensor:
    """(B, 1, X, Y, Z) floats, 1 on the hidden cubes of edge ``block``: ``ratio`` of them,
    drawn per sample."""
    grid = tuple(n // block for n in shape)
    cubes = grid[0] * grid[1] * grid[2]
    hidden = torch.zeros(len(generators), cubes)
    for row, generator in zip(hidden, generators, strict=True):
        row[torch.randperm(cubes, generator=generator)[: int(ratio * cubes)]] = 1
    return cells_to_voxels(hidden, (grid[0], grid[1], grid[2]), (block, block, block))


def token_keep(tokens: int, ratio: float, generators: list[torch.Generator]) -> torch.Tensor:
    """(B, n_keep) indices of the visible tokens, sorted, ``1 - ratio`` of ``tokens``."""
    keep = tokens - int(ratio * tokens)
    rows = [torch.randperm(tokens, generator=g)[:keep].sort().values for g in generators]
    return torch.stack(rows)


class MAE(MaskedImageMethod):
    """MAE: ``method.options`` holds ``mask_ratio`` and ``block_size`` (``MaskingOptions``)."""

    name = "mae"

    def build(self) -> nn.Module:
        return self.backbone.build(self.config.model, self.patch_size, mae_decoder=True)

    def loss(self, model: nn.Module, batch: Batch, seed: int) -> Loss:
        method, options = self.config.method, self.options
        generators = [sample_generator(seed, key) for key in batch.keys]
        image, scored = scored_input(
            batch, anon_aware=method.anon_aware, anatomy_only=method.anatomy_only
        )
        if self.backbone.tokens:  # true MAE: the encoder sees the visible tokens only
            x, y, z = self.grid
            keep = token_keep(x * y * z, options.mask_ratio, generators).to(image.device)
            output = model(image, keep)
            hidden = (~visible_voxels(keep, self.grid, self.cell)).to(image.dtype)
        else:
            hidden = block_mask(self.patch_size, options.block_size, options.mask_ratio, generators)
            hidden = hidden.to(image.device)
            output = model(image * (1 - hidden))
        weight = hidden * scored
        total = ((output.float() - image.float()) ** 2 * weight).sum()
        return Loss(total, weight.sum().detach(), {"scored_fraction": float(weight.mean())})

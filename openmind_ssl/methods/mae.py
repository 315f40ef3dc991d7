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

import numpy as np
import torch
from torch import nn

from openmind_ssl.methods.base import Batch, Loss
from openmind_ssl.models import PRIMUS_PATCH, build_network
from openmind_ssl.models.primus import visible_voxels
from openmind_ssl.train.config import MethodConfig, ModelConfig

__all__ = ["MAE", "block_mask", "sample_generator", "token_keep"]


def sample_generator(seed: int, key: int) -> torch.Generator:
    """A CPU generator for one sample of one step: the same on every rank and worker layout."""
    entropy = np.random.SeedSequence([seed, key]).generate_state(1, dtype=np.uint64)[0]
    return torch.Generator().manual_seed(int(entropy))


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
    mask = hidden.view(-1, 1, *grid)
    for axis in (2, 3, 4):
        mask = mask.repeat_interleave(block, dim=axis)
    return mask


def token_keep(tokens: int, ratio: float, generators: list[torch.Generator]) -> torch.Tensor:
    """(B, n_keep) indices of the visible tokens, sorted, ``1 - ratio`` of ``tokens``."""
    keep = tokens - int(ratio * tokens)
    rows = [torch.randperm(tokens, generator=g)[:keep].sort().values for g in generators]
    return torch.stack(rows)


class MAE:
    name = "mae"

    def __init__(
        self, method: MethodConfig, model: ModelConfig, patch_size: tuple[int, int, int]
    ) -> None:
        self.options, self.model_options, self.patch_size = method, model, patch_size

    def build(self) -> nn.Module:
        return build_network(self.model_options, self.patch_size, mae_decoder=True)

    def loss(self, model: nn.Module, batch: Batch, seed: int) -> Loss:
        options = self.options
        generators = [sample_generator(seed, key) for key in batch.keys]
        image, device = batch.image, batch.image.device
        scored = torch.ones_like(image)
        if options.anon_aware:
            scored = 1 - batch.anon_mask
            image = image * scored  # defaced voxels are neither seen nor scored
        if options.anatomy_only:
            scored = scored * batch.anat_mask
        if self.model_options.architecture == "primus_m":
            patch = PRIMUS_PATCH
            x, y, z = (n // p for n, p in zip(self.patch_size, patch, strict=True))
            grid = (x, y, z)
            keep = token_keep(grid[0] * grid[1] * grid[2], options.mask_ratio, generators)
            keep = keep.to(device)
            output = model(image, keep)
            hidden = (~visible_voxels(keep, grid, patch)).to(image.dtype)
        else:
            hidden = block_mask(self.patch_size, options.block_size, options.mask_ratio, generators)
            hidden = hidden.to(device)
            output = model(image * (1 - hidden))
        weight = hidden * scored
        total = ((output.float() - image.float()) ** 2 * weight).sum()
        return Loss(total, weight.sum().detach(), {"scored_fraction": float(weight.mean())})

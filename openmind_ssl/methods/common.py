"""Pieces several methods share: per-sample random generators, the anonymization-aware input
and score masks, and the backbone's pooled features."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np
import torch

from openmind_ssl.methods.base import Batch
from openmind_ssl.models import Primus, ResEncL

__all__ = [
    "Stages",
    "cells_to_voxels",
    "cut",
    "feature_dim",
    "pool",
    "pooled_features",
    "sample_generator",
    "scored_input",
]

#: Which ResEnc-L stages a pooled feature vector reads: the bottleneck, or every stage.
Stages = Literal["all", "deepest"]


def sample_generator(seed: int, key: int, *salt: int) -> torch.Generator:
    """A CPU generator for one sample of one step (``key``: its global index), the same on
    every rank and worker layout; ``salt`` separates independent draws of one sample."""
    entropy = np.random.SeedSequence([seed, key, *salt]).generate_state(1, dtype=np.uint64)[0]
    return torch.Generator().manual_seed(int(entropy))


def scored_input(
    batch: Batch, *, anon_aware: bool, anatomy_only: bool = False
) -> tuple[torch.Tensor, torch.Tensor]:
    """The image the network sees and the 0/1 map of voxels a reconstruction loss scores.
    Anonymization-aware: voxels inside the anonymization mask are set to 0 (the mean after
    z-scoring) and never scored, so whatever a defacing tool left there cannot matter."""
    image, scored = batch.image, torch.ones_like(batch.image)
    if anon_aware:
        scored = 1 - batch.anon_mask
        image = image * scored
    if anatomy_only:
        scored = scored * batch.anat_mask
    return image, scored


def feature_dim(backbone: ResEncL | Primus, stages: Stages = "deepest") -> int:
    """Channels of :func:`pooled_features`."""
    if isinstance(backbone, Primus):
        return backbone.embed_dim
    channels = backbone.encoder.output_channels
    return sum(channels) if stages == "all" else channels[-1]


def pool(encoded: torch.Tensor | list[torch.Tensor], stages: Stages = "deepest") -> torch.Tensor:
    """(B, C) of an encoder's output: Primus tokens (B, N, C) averaged; ResEnc-L stage outputs
    averaged over space, the deepest alone or (``stages="all"``, nnssl's contrastive heads)
    every stage concatenated."""
    if isinstance(encoded, torch.Tensor):
        return encoded.mean(dim=1)
    chosen = encoded if stages == "all" else encoded[-1:]
    return torch.cat([s.mean(dim=(2, 3, 4)) for s in chosen], dim=1)


def pooled_features(
    backbone: ResEncL | Primus, x: torch.Tensor, stages: Stages = "deepest"
) -> torch.Tensor:
    """(B, feature_dim): :func:`pool` of the backbone's encoder on ``x``."""
    if isinstance(backbone, Primus):
        return pool(backbone.encode(x))
    return pool(backbone.encoder(x), stages)


def cells_to_voxels(
    cells: torch.Tensor, grid: tuple[int, int, int], cell: tuple[int, int, int]
) -> torch.Tensor:
    """(B, 1, *voxels): each of the (B, prod(grid)) cell values (C order over ``grid``)
    repeated over its ``cell`` of voxels."""
    voxels = cells.view(cells.shape[0], 1, *grid)
    for axis, size in enumerate(cell, start=2):
        voxels = voxels.repeat_interleave(size, dim=axis)
    return voxels


def cut(image: torch.Tensor, corner: Sequence[int], size: tuple[int, int, int]) -> torch.Tensor:
    """The ``size`` box of ``image`` (C, X, Y, Z) at ``corner``."""
    (x, y, z), (a, b, c) = corner, size
    return image[:, x : x + a, y : y + b, z : z + c]

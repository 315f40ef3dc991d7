"""Pieces several methods share: per-sample random generators, the anonymization-aware input
and score masks, and the masked-image methods' settings and mask grid."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
import torch

from openmind_data.errors import ConfigError
from openmind_ssl.backbones.base import Grid, Stages
from openmind_ssl.methods.base import Batch, Method

if TYPE_CHECKING:
    from openmind_ssl.train.config import PretrainConfig

__all__ = [
    "MaskedImageMethod",
    "MaskingOptions",
    "Stages",
    "cells_to_voxels",
    "cut",
    "sample_generator",
    "scored_input",
]


@dataclass(frozen=True)
class MaskingOptions:
    """The settings of the masked-image methods (MAE, SimMIM), in ``method.options``.

    Attributes:
        mask_ratio: the share of the crop's mask cells that are hidden (the paper: 0.75).
        block_size: the edge of a mask cube on a CNN (16^3 voxels); a token backbone hides
            whole tokens instead (Primus: 8^3).
    """

    mask_ratio: float = 0.75
    block_size: int = 16

    def __post_init__(self) -> None:
        if not 0 < self.mask_ratio < 1:
            raise ConfigError("method.options.mask_ratio must be in (0, 1)")
        if self.block_size <= 0:
            raise ConfigError("method.options.block_size must be positive")


class MaskedImageMethod(Method):
    """The base of the masked-image methods: ``Options`` at least ``MaskingOptions``; ``cell``
    the voxels one mask cell covers on the backbone, ``grid`` the cells per axis of a crop.
    A crop not made of whole cells is a ``ConfigError``."""

    Options: ClassVar[type[Any]] = MaskingOptions
    options: MaskingOptions

    def __init__(self, config: PretrainConfig) -> None:
        super().__init__(config)
        self.cell = self.backbone.mask_cell(self.options.block_size)
        if any(n % c for n, c in zip(self.patch_size, self.cell, strict=True)):
            raise ConfigError(
                f"train.patch_size {self.patch_size}: {self.name} on {self.backbone.label} needs"
                f" multiples of {self.cell[0]} (its mask cells; method.options.block_size on a"
                " CNN)"
            )
        x, y, z = (n // c for n, c in zip(self.patch_size, self.cell, strict=True))
        self.grid: Grid = (x, y, z)


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

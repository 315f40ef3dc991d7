"""Patches of a preprocessed volume with their centres drawn inside the anatomy mask, so no crop
is all air; regions beyond the volume are padded (image with 0, the mean after z-scoring; masks
with 0)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from openmind_ssl.data.preprocess import Volume

__all__ = ["Crop", "crop", "crop_centres", "window"]

Slices = tuple[slice, ...]


@dataclass
class Crop:
    image: NDArray[np.float32]
    anatomy: NDArray[np.uint8]
    anonymization: NDArray[np.uint8]
    centre: tuple[int, int, int]  # in the volume's voxels


def crop_centres(
    anatomy: NDArray[np.uint8], count: int, rng: np.random.Generator
) -> list[tuple[int, int, int]]:
    """``count`` voxels drawn uniformly (with replacement) from the mask; from the whole volume
    when the mask is empty."""
    inside = np.flatnonzero(anatomy)
    if inside.size == 0:
        inside = np.arange(anatomy.size)
    picks = inside[rng.integers(0, inside.size, size=count)]
    centres = np.stack(np.unravel_index(picks, anatomy.shape), axis=1)
    return [(int(x), int(y), int(z)) for x, y, z in centres]


def window(
    centre: tuple[int, int, int], size: tuple[int, int, int], shape: tuple[int, ...]
) -> tuple[Slices, Slices] | None:
    """Where the patch of ``size`` voxels around ``centre`` (the centre voxel at index
    size // 2) overlaps a volume of ``shape``: (slices of the volume, slices of the patch),
    or None when it lies wholly outside."""
    source, target = [], []
    for point, length, extent in zip(centre, size, shape, strict=True):
        start = point - length // 2
        low, high = max(start, 0), min(start + length, extent)
        if high <= low:
            return None
        source.append(slice(low, high))
        target.append(slice(low - start, high - start))
    return tuple(source), tuple(target)


def crop(volume: Volume, centre: tuple[int, int, int], size: tuple[int, int, int]) -> Crop:
    """The patch of ``size`` voxels around ``centre``, zero beyond the volume."""
    slices = window(centre, size, volume.image.shape)
    return Crop(
        _padded(volume.image, slices, size),
        _padded(volume.anatomy, slices, size),
        _padded(volume.anonymization, slices, size),
        centre,
    )


def _padded(
    data: NDArray[Any], slices: tuple[Slices, Slices] | None, size: tuple[int, int, int]
) -> NDArray[Any]:
    out = np.zeros(size, dtype=data.dtype)
    if slices is not None:
        source, target = slices
        out[target] = data[source]
    return out

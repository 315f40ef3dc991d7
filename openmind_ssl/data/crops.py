"""Patches of a preprocessed volume with their centres drawn inside the anatomy mask, so no crop
is all air; regions beyond the volume are padded (image with 0, the mean after z-scoring; masks
with 0)."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from openmind_ssl.data.preprocess import Volume

__all__ = ["CENTRE_SAMPLE", "Crop", "candidate_centres", "crop", "window"]

CENTRE_SAMPLE = 4096  # anatomy voxels per volume that crop centres are drawn from

Slices = tuple[slice, ...]


@dataclass
class Crop:
    image: NDArray[np.float32]
    anatomy: NDArray[np.uint8]
    anonymization: NDArray[np.uint8]
    centre: tuple[int, int, int]  # in the volume's voxels


def candidate_centres(anatomy: NDArray[np.uint8], image_id: str) -> NDArray[np.int32]:
    """Up to ``CENTRE_SAMPLE`` distinct voxels of the anatomy mask (the whole volume when it is
    empty), in (n, 3) voxel indices: the centres a volume's crops are drawn from.

    The sample depends on the image alone (its id seeds it), so a volume read from the cache and
    the same volume decoded again give the same crops for the same draws: a replayed or resumed
    stream yields the same samples whether or not the cache held the volume.
    """
    inside = np.flatnonzero(anatomy)
    if inside.size == 0:
        inside = np.arange(anatomy.size)
    seed = int.from_bytes(hashlib.sha256(image_id.encode()).digest()[:8], "little")
    rng = np.random.default_rng(seed)
    sample = np.sort(rng.choice(inside, size=min(CENTRE_SAMPLE, inside.size), replace=False))
    return np.stack(np.unravel_index(sample, anatomy.shape), axis=1).astype(np.int32)


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

"""One volume from its stored NIfTI bytes to the arrays training crops from: reoriented to RAS,
resampled to a target spacing (the image linearly or cubically, masks by nearest neighbour),
z-scored inside the anatomy mask.

Reorientation only permutes and flips axes (no interpolation); resampling then maps the RAS grid
onto one of the target spacing covering the same field of view, voxel centres to voxel centres
(``align_corners=False`` semantics), so an image and its masks stay aligned voxel for voxel.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import nibabel as nib
import numpy as np
import torch
from numpy.typing import NDArray
from torch.nn import functional

from openmind_data.errors import ConfigError

__all__ = ["Preprocessing", "Volume", "preprocess", "resample_labels"]

ORDERS = ("linear", "cubic")


@dataclass(frozen=True)
class Preprocessing:
    """What every volume goes through; its ``key`` names a preprocessed cache."""

    spacing: float = 1.0  # mm, isotropic; 0 keeps each image's own grid
    order: str = "linear"  # the image's interpolation: linear | cubic (masks: nearest)

    def __post_init__(self) -> None:
        if self.spacing < 0:
            raise ConfigError(f"spacing must be >= 0 mm, not {self.spacing}")
        if self.order not in ORDERS:
            raise ConfigError(f"order must be one of {ORDERS}, not {self.order!r}")

    @property
    def key(self) -> str:
        return f"ras-{self.spacing:g}mm-{self.order}-zscore-anat"


@dataclass
class Volume:
    """A preprocessed volume: ``image`` float32, masks uint8, all of one RAS grid of
    ``spacing`` mm."""

    image: NDArray[np.float32]
    anatomy: NDArray[np.uint8]
    anonymization: NDArray[np.uint8]
    spacing: tuple[float, float, float]
    mean: float  # of the image inside the anatomy mask, before normalisation
    std: float


def preprocess(
    image: Any, anatomy: Any, anonymization: Any | None, options: Preprocessing
) -> Volume:
    """Reorient, resample and normalise one image with its masks (nibabel images in one grid;
    a missing anonymization mask is all zero)."""
    if image.shape[:3] != anatomy.shape[:3]:
        raise ValueError(f"image {image.shape} and anatomy mask {anatomy.shape} differ in grid")
    ras = nib.as_closest_canonical(image)
    data = np.asarray(ras.dataobj, dtype=np.float32)
    if data.ndim != 3:
        raise ValueError(f"a 3D image is needed, this one has shape {data.shape}")
    anat = _mask(anatomy, image)
    anon = _mask(anonymization, image) if anonymization is not None else np.zeros_like(anat)
    zooms = tuple(float(z) for z in ras.header.get_zooms()[:3])
    if options.spacing > 0:
        shape = tuple(
            max(1, round(n * z / options.spacing)) for n, z in zip(data.shape, zooms, strict=True)
        )
        if shape != data.shape:
            data = _resample(data, shape, options.order)
            anat = _resample(anat, shape, "nearest")
            anon = _resample(anon, shape, "nearest")
        zooms = tuple(z * n / m for z, n, m in zip(zooms, ras.shape[:3], shape, strict=True))
    x, y, z = zooms
    inside = anat > 0
    values = data[inside] if inside.any() else data.ravel()
    mean, std = float(values.mean()), float(values.std())
    # A new array: the caller's image may share its buffer with ``data``.
    normalised = ((data - mean) / max(std, 1e-8)).astype(np.float32, copy=False)
    return Volume(normalised, anat.astype(np.uint8), anon.astype(np.uint8), (x, y, z), mean, std)


def resample_labels(labels: NDArray[Any], shape: tuple[int, ...]) -> NDArray[np.uint8]:
    """An integer label map onto a grid of ``shape`` over the same field of view, by nearest
    neighbour (every label kept as it is, none blended)."""
    if labels.max(initial=0) > 255 or labels.min(initial=0) < 0:
        raise ValueError("labels must lie in 0..255")
    if tuple(labels.shape) == tuple(shape):
        return labels.astype(np.uint8)
    return _resample(labels.astype(np.float32), shape, "nearest").astype(np.uint8)


def _mask(mask: Any, image: Any) -> NDArray[Any]:
    """A mask in the RAS grid of ``image``: reoriented by the image's own transform."""
    if not np.allclose(mask.affine, image.affine, atol=1e-3):
        raise ValueError("a mask's affine differs from its image's")
    canonical = nib.as_closest_canonical(nib.Nifti1Image(np.asarray(mask.dataobj), image.affine))
    return np.asarray(canonical.dataobj) > 0


def _resample(data: NDArray[Any], shape: tuple[int, ...], order: str) -> NDArray[Any]:
    """``data`` onto a grid of ``shape`` over the same field of view."""
    if order == "cubic":
        from scipy.ndimage import map_coordinates  # noqa: PLC0415

        axes = [
            (np.arange(m, dtype=np.float32) + 0.5) * n / m - 0.5
            for n, m in zip(data.shape, shape, strict=True)
        ]
        grid = np.meshgrid(*axes, indexing="ij")
        result: NDArray[Any] = map_coordinates(data, grid, order=3, mode="nearest")
        return result.astype(np.float32)
    tensor = torch.from_numpy(np.ascontiguousarray(data, dtype=np.float32))[None, None]
    mode = "trilinear" if order == "linear" else "nearest-exact"
    options = {"align_corners": False} if mode == "trilinear" else {}
    out = functional.interpolate(tensor, size=shape, mode=mode, **options)[0, 0].numpy()
    return out if order == "linear" else out.astype(data.dtype)

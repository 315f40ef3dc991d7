"""Native voxel grids: spacing, orientation, obliquity and field of view, and sampling into them.

A :class:`NativeGrid` is what a scanner would have written: a shape and a voxel-to-world affine.
Grids are drawn from a seed by :func:`plan_grid` and the phantom is sampled into them with
:func:`sample`, so the same seed always gives the same header.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from nibabel.orientations import aff2axcodes
from numpy.typing import NDArray
from scipy import ndimage

__all__ = ["ORIENTATIONS", "NativeGrid", "pad_grid", "plan_grid", "sample"]

#: Voxel axis codes the generator uses: radiological and neurological axial, coronal, sagittal.
ORIENTATIONS = ("RAS", "LPS", "LAS", "RPI", "PIR", "ASL", "RIA")

_AXIS_VECTORS = {
    "R": (1, 0, 0), "L": (-1, 0, 0),
    "A": (0, 1, 0), "P": (0, -1, 0),
    "S": (0, 0, 1), "I": (0, 0, -1),
}  # fmt: skip

# Centre of the phantom head in MNI millimetres, and the extent a head-and-neck field of view
# covers (left-right, posterior-anterior, inferior-superior).
HEAD_CENTRE = np.array([0.0, -4.0, -18.0])
HEAD_EXTENT = np.array([186.0, 238.0, 236.0])


@dataclass(frozen=True)
class NativeGrid:
    shape: tuple[int, int, int]
    affine: NDArray[np.float64]

    @property
    def spacing(self) -> tuple[float, float, float]:
        s = np.sqrt((self.affine[:3, :3] ** 2).sum(axis=0))
        return (float(s[0]), float(s[1]), float(s[2]))

    @property
    def orientation(self) -> str:
        return "".join(aff2axcodes(self.affine))


def _rotation(axis: int, degrees: float) -> NDArray[np.float64]:
    c, s = np.cos(np.radians(degrees)), np.sin(np.radians(degrees))
    i, j = [k for k in range(3) if k != axis]
    r = np.eye(3)
    r[i, i], r[i, j], r[j, i], r[j, j] = c, -s, s, c
    return r


def plan_grid(
    spacing: tuple[float, float, float],
    orientation: str,
    *,
    oblique_degrees: float = 0.0,
    fov_scale: float = 1.0,
    centre_jitter_mm: NDArray[np.float64] | None = None,
) -> NativeGrid:
    """A grid of voxel size ``spacing`` whose axes point along ``orientation`` (e.g. 'LPS').

    ``oblique_degrees`` tilts the slices about the left-right axis (an AC-PC style tilt).
    The field of view covers the head and the top of the neck, scaled by ``fov_scale``.
    """
    if sorted(orientation.replace("L", "R").replace("P", "A").replace("I", "S")) != list("ARS"):
        raise ValueError(f"orientation {orientation!r} must name each of R/L, A/P, S/I once")
    directions = np.array([_AXIS_VECTORS[c] for c in orientation], dtype=float).T  # columns
    directions = _rotation(0, oblique_degrees) @ directions
    zooms = np.asarray(spacing, dtype=float)
    extent_along_axes = np.abs(directions.T) @ HEAD_EXTENT * fov_scale
    shape = tuple(int(np.ceil(e / z)) for e, z in zip(extent_along_axes, zooms, strict=True))
    linear = directions * zooms
    centre = HEAD_CENTRE + (centre_jitter_mm if centre_jitter_mm is not None else 0.0)
    offset = centre - linear @ ((np.asarray(shape) - 1) / 2.0)
    affine = np.eye(4)
    affine[:3, :3] = linear
    affine[:3, 3] = offset
    return NativeGrid((shape[0], shape[1], shape[2]), affine)


def pad_grid(grid: NativeGrid, pad: tuple[int, int, int]) -> NativeGrid:
    """The grid grown by ``pad`` voxels on both sides of each axis (zero padding)."""
    shape = tuple(n + 2 * p for n, p in zip(grid.shape, pad, strict=True))
    affine = grid.affine.copy()
    affine[:3, 3] -= affine[:3, :3] @ np.asarray(pad, dtype=float)
    return NativeGrid((shape[0], shape[1], shape[2]), affine)


def sample(
    volume: NDArray[Any],
    volume_affine: NDArray[np.float64],
    grid: NativeGrid,
    *,
    order: int = 1,
) -> NDArray[Any]:
    """``volume`` (in its own grid) sampled at every voxel centre of ``grid``; zero outside."""
    to_volume = np.linalg.inv(volume_affine) @ grid.affine
    out: NDArray[Any] = ndimage.affine_transform(
        volume,
        to_volume[:3, :3],
        offset=to_volume[:3, 3],
        output_shape=grid.shape,
        order=order,
        mode="constant",
        cval=0.0,
        prefilter=False,
    )
    return out

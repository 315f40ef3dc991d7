"""Defacing by the toolkit, quickshear-style, and the check that a defacing spared the brain.

Quickshear (Schimke and Hale, 2011) removes everything on the face side of one plane: in the
sagittal projection of the brain mask it takes the convex hull, picks the hull edge that faces
anterior-inferiorly (under the frontal lobe, in front of the brainstem), and shears off all that
lies beyond it. The brain lies wholly on the kept side of every hull edge, so no brain voxel is
removed; a margin keeps the plane a few millimetres off the brain. Here the projection is done in
world (RAS) millimetres, so any voxel orientation and oblique grid works.

One plane leaves tissue where a head bends away from it: on real heads the nose, the lips or the
cheeks under the temporal lobes stood in front of the plane and kept 4-22% of the facial
surface. :func:`deface_region` therefore removes the union of the plane's side and the facial
region of :mod:`openmind_data.masks.face` (anterior and inferior to the brain), each kept
:data:`MARGIN_MM` off the brain mask.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import NDArray
from scipy.spatial import ConvexHull, QhullError

from openmind_data.errors import InvalidInputError
from openmind_data.exclusions import ExclusionReason as R
from openmind_data.masks.brain import _cross
from openmind_data.masks.face import CHUNK, brain_distance, facial_region

__all__ = ["SHEAR_DIRECTION", "brain_overlap", "deface_region", "quickshear"]

#: The direction (anterior, superior) the chosen hull edge should face: down and forward, as
#: the plane from under the frontal lobe to the front of the brainstem does (about 58 degrees
#: below the horizontal; chosen on the synthetic heads, where it removes the most face while
#: every hull edge keeps the whole brain).
SHEAR_DIRECTION = np.array([1.0, -1.6]) / np.hypot(1.0, 1.6)
#: Millimetres between the brain's hull and the plane.
MARGIN_MM = 2.0
#: The facial region the defacing removes starts further back than the one the checks measure
#: (:data:`openmind_data.masks.face.FRONT_SHARE`): brain masks differ, and where they do, the
#: face must still go.
CUT_FRONT_SHARE = 0.6


def quickshear(
    brain: NDArray[np.bool_], affine: NDArray[np.float64], *, margin_mm: float = MARGIN_MM
) -> NDArray[np.bool_]:
    """The voxels to remove: those beyond the anterior-inferior hull plane of ``brain``."""
    if not brain.any():
        raise InvalidInputError("<brain mask>", R.DEFACE_UNCONFIRMED, "the brain mask is empty")
    # (anterior, superior) of the brain's outer voxels: an inner one (its six neighbours in the
    # brain) is the midpoint of two of them, so the hull is the same, of far fewer points.
    points = _world(np.argwhere(_outer(brain)).T, affine)[1:]
    try:
        hull = ConvexHull(points.T)
    except QhullError as error:
        raise InvalidInputError(
            "<brain mask>", R.DEFACE_UNCONFIRMED, f"the brain mask is flat: {error}"
        ) from error
    normals, offsets = hull.equations[:, :2], hull.equations[:, 2]
    edge = int(np.argmax(normals @ SHEAR_DIRECTION))
    # The plane's signed distance is linear in the voxel index: summed over broadcast axes,
    # a few slices of the first axis at a time (no volume of float64 distances).
    row = normals[edge] @ affine[1:3]  # (4,): per voxel axis, and the constant
    grids = np.ogrid[tuple(slice(0, n) for n in brain.shape)]
    beyond = np.empty(brain.shape, dtype=bool)
    for start in range(0, brain.shape[0], CHUNK):
        distance = row[3] + offsets[edge] + row[0] * grids[0][start : start + CHUNK]
        distance = distance + row[1] * grids[1] + row[2] * grids[2]
        np.greater(distance, margin_mm, out=beyond[start : start + CHUNK])
    return beyond


def _outer(mask: NDArray[np.bool_]) -> NDArray[np.bool_]:
    """The voxels of ``mask`` with a neighbour along some axis outside it or off the grid."""
    inner = _cross(mask, np.logical_and)  # an erosion in which the grid's edge counts as set
    for axis in range(mask.ndim):
        for end in (0, -1):
            face: list[Any] = [slice(None)] * mask.ndim
            face[axis] = end
            inner[tuple(face)] = False  # here it does not
    outer: NDArray[np.bool_] = mask & ~inner
    return outer


def deface_region(
    brain: NDArray[np.bool_],
    affine: NDArray[np.float64],
    spacing: tuple[float, ...],
    *,
    margin_mm: float = MARGIN_MM,
) -> NDArray[np.bool_]:
    """The voxels the toolkit's defacing removes: beyond the shear plane, or in the facial
    region, and more than ``margin_mm`` from the brain mask either way (the distance exact at
    every voxel the cut would take)."""
    face = facial_region(brain, affine, front_share=CUT_FRONT_SHARE)
    cut = quickshear(brain, affine, margin_mm=margin_mm) | face
    clear = brain_distance(brain, spacing, where=cut, reach=margin_mm) > margin_mm
    region: NDArray[np.bool_] = cut & clear
    return region


def brain_overlap(anon: NDArray[np.bool_], brain: NDArray[np.bool_]) -> float:
    """Share of the brain mask's voxels inside the anonymization mask (0 when no brain)."""
    total = int(brain.sum())
    return float((anon & brain).sum() / total) if total else 0.0


def _world(index: NDArray[np.integer], affine: NDArray[np.float64]) -> NDArray[np.float64]:
    """World (RAS mm) coordinates, shape (3, N), of voxel indices, shape (3, N)."""
    return affine[:3, :3] @ index.astype(np.float64) + affine[:3, 3:4]

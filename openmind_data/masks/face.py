"""Where the face is, found from the brain, and whether an image still shows it.

A face is present unless the voxels show it absent. The facial region is located in world (RAS)
millimetres from the brain mask, so any voxel order, flip or oblique grid is the same problem:
it is what lies in front of :data:`FRONT_SHARE` of the brain's anterior extent (anterior) and
below the brain's lower outline at each anterior position (inferior), in the sagittal
projection of the brain; in front of the brain, the outline's front-most stretch extends
forwards. Eyes, nose, mouth, chin
and cheeks lie there; the forehead (above the outline) and the back of the head do not.

Two measures are taken on it:

- the *facial surface*: tissue of the facial region within :data:`SURFACE_MM` of the air (the
  skin and what lies just under it, the part of a head a rendering shows), kept
  :data:`CLEARANCE_MM` off the brain. A defacing removes it; :func:`face_removed` says which
  share of it a defacing took.
- the *facial zone*: the front of the facial region (from :data:`ZONE_FRONT_SHARE`) within
  :data:`ZONE_MM` of the brain, where eyes, nose and lips always are. An image whose uploader
  defaced it holds next to no tissue there (:func:`face_shown`); zeroed air, a zero-filled
  wedge from resampling or a field of view that cuts the top of the head all leave the face's
  tissue in place.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

import edt  # type: ignore[import-not-found]
import numpy as np
from numpy.typing import NDArray

from openmind_data.masks.anatomy import bounding_box

__all__ = [
    "FaceCheck",
    "brain_distance",
    "face_removed",
    "face_shown",
    "facial_region",
    "facial_surface",
]

#: The facial surface: tissue within this distance (mm) of the air, and at least
#: :data:`CLEARANCE_MM` from the brain (what touches the brain is the orbits' roof and the brow
#: over the frontal sinus, which no defacing that spares the brain can take).
SURFACE_MM: Final = 15.0
CLEARANCE_MM: Final = 5.0
#: The facial zone: the facial region within this distance (mm) of the brain.
ZONE_MM: Final = 45.0
#: Width (mm) of the anterior bins the brain's lower outline is taken over, and of the
#: front-most stretch of it that extends in front of the brain.
BIN_MM: Final = 2.0
FRONT_MM: Final = 10.0
#: The face starts this far forwards along the brain's anterior extent (the eyes' back lies
#: under the front third of the brain; the jaw's angle and the neck behind it are not face).
FRONT_SHARE: Final = 0.7
#: The facial zone starts further forwards: eyes, nose, lips and chin, what every defacer
#: removes, lie in front of this share of the brain's anterior extent.
ZONE_FRONT_SHARE: Final = 0.85
#: A face is shown when at least this share of the facial zone (inside the field of view) is
#: tissue. Measured (benchmarks/masks.py): 0.42-0.78 on real heads with their faces under every
#: variation, 0.01-0.13 on the pydeface-defaced real head.
SHOWN_SHARE: Final = 0.2
#: Where the field of view holds less of the facial zone than :data:`ZONE_MIN_ML` (a share of
#: it says little), the face counts as absent only if the whole facial region holds less tissue
#: than :data:`ABSENT_ML` (the facial zone of a whole head is 270-500 mL).
ZONE_MIN_ML: Final = 20.0
ABSENT_ML: Final = 5.0
#: The facial zone is measured on the grid subsampled to about this voxel size (mm): on real
#: heads its volume reads within 7% of the full grid's and its tissue share within 0.04 from
#: every eighth voxel of a 1 mm head (tests/test_real_heads.py), and the verdict's margins are
#: tens of percent (above).
ZONE_GRID_MM: Final = 2.0


@dataclass(frozen=True)
class FaceCheck:
    """What the facial zone of an image holds: its volume in the field of view and the share of
    it that is tissue; ``shown`` is the verdict (see :func:`face_shown`)."""

    zone_ml: float
    tissue_ml: float
    shown: bool

    @property
    def tissue_share(self) -> float:
        return self.tissue_ml / self.zone_ml if self.zone_ml else 0.0

    @property
    def in_view(self) -> bool:
        """Whether the field of view holds enough of the facial zone to judge it."""
        return self.zone_ml >= ZONE_MIN_ML


#: Slices of the grid's first axis a pass over the voxels takes at a time: a chunk's
#: coordinates and comparisons stay in the cache instead of filling volume-sized arrays.
CHUNK: Final = 8


def _coordinates(
    shape: tuple[int, ...], affine: NDArray[np.float64], first: slice
) -> tuple[NDArray[np.float32], NDArray[np.float32]]:
    """World anterior and superior coordinates (mm), float32, of the voxels of ``shape`` whose
    first index is in ``first`` (any chunk gives its voxels the same values as the whole)."""
    grids = list(np.ogrid[tuple(slice(0, n) for n in shape)])
    grids[0] = grids[0][first]
    size = (len(grids[0]), *shape[1:])
    out = []
    for row in (1, 2):
        value: NDArray[np.float32] = np.full((1, 1, 1), affine[row, 3], dtype=np.float32)
        for axis, grid in enumerate(grids):
            value = value + np.float32(affine[row, axis]) * grid.astype(np.float32)
        out.append(np.broadcast_to(value, size))
    return out[0], out[1]


def _chunks(n: int) -> list[slice]:
    return [slice(i, min(i + CHUNK, n)) for i in range(0, n, CHUNK)]


def facial_region(
    brain: NDArray[np.bool_], affine: NDArray[np.float64], front_share: float = FRONT_SHARE
) -> NDArray[np.bool_]:
    """Voxels anterior and inferior to ``brain`` (see the module docstring); empty without one."""
    region = np.zeros(brain.shape, dtype=bool)
    if not brain.any():
        return region
    parts = []
    for first in _chunks(brain.shape[0]):
        anterior, superior = _coordinates(brain.shape, affine, first)
        parts.append((anterior[brain[first]], superior[brain[first]]))
    a = np.concatenate([part[0] for part in parts])
    s = np.concatenate([part[1] for part in parts])
    low, high = float(a.min()), float(a.max())
    start = low + front_share * (high - low)
    bins = np.floor((a - low) / BIN_MM).astype(np.int64)
    count = int(bins.max()) + 1
    outline = np.full(count, np.inf, dtype=np.float64)
    np.minimum.at(outline, bins, s.astype(np.float64))
    # Bins no brain voxel falls in (slices thicker than a bin along the anterior axis) take
    # the outline of their neighbours.
    known = np.isfinite(outline)
    outline = np.interp(np.arange(count), np.flatnonzero(known), outline[known])
    front = outline[max(0, count - int(np.ceil(FRONT_MM / BIN_MM))) :]
    # The outline at every voxel's anterior position; in front of the brain, its front stretch.
    levels = np.append(outline, front.min())
    for first in _chunks(brain.shape[0]):
        anterior, superior = _coordinates(brain.shape, affine, first)
        where = np.floor((anterior - np.float32(low)) / np.float32(BIN_MM))
        where = np.where(anterior > high, count, np.clip(where, 0, count - 1)).astype(np.intp)
        region[first] = (anterior > start) & (superior < levels[where]) & ~brain[first]
    return region


def brain_distance(
    brain: NDArray[np.bool_],
    spacing: tuple[float, ...],
    *,
    where: NDArray[np.bool_] | None = None,
    reach: float = ZONE_MM,
) -> NDArray[np.float32]:
    """Distances (mm) from the brain mask, exact up to ``reach`` at the voxels of ``where``
    (every voxel when None): 0 inside the brain, infinite without one. Elsewhere a voxel never
    reads nearer than it is (farther ones read infinite), so a caller thresholds only where it
    asked.

    Only the box of the ``where`` voxels grown by ``reach`` is transformed (and of that, what
    lies within ``reach`` of the brain's box): a brain voxel outside it is farther than
    ``reach`` from every ``where`` voxel along one axis alone. The facial zone, a defacing's
    cut and a thin shell around the brain are each a fraction of a head's grid."""
    distance = np.full(brain.shape, np.inf, dtype=np.float32)
    grow = tuple(int(np.ceil(reach / float(size))) for size in spacing[:3])
    boxes = [bounding_box(mask, grow) for mask in (brain, where) if mask is not None]
    if any(b is None for b in boxes):
        return distance
    box = tuple(
        slice(max(s.start for s in sides), min(s.stop for s in sides))
        for sides in zip(*boxes, strict=True)
    )
    if any(side.start >= side.stop for side in box):
        return distance
    distance[box] = _distance_inside(~brain[box], spacing)
    return distance


def _distance_inside(mask: NDArray[np.bool_], spacing: tuple[float, ...]) -> NDArray[np.float32]:
    """Every voxel's exact Euclidean distance (mm) to the nearest voxel outside ``mask`` (0
    outside it; the grid's border is not outside), as ``scipy.ndimage.distance_transform_edt``
    gives it, by the ``edt`` package: about six times faster on a 1 mm head, in float32
    (distances agree to 1e-6 mm, and every threshold the masks take on them to the voxel)."""
    distance: NDArray[np.float32] = edt.edt(
        np.ascontiguousarray(mask),
        anisotropy=tuple(float(z) for z in spacing[:3]),
        black_border=False,
        parallel=1,
    )
    return distance


def facial_surface(
    tissue: NDArray[np.bool_],
    brain: NDArray[np.bool_],
    affine: NDArray[np.float64],
    spacing: tuple[float, ...],
) -> NDArray[np.bool_]:
    """Tissue of the facial region of ``brain`` within :data:`SURFACE_MM` of the air (what is
    not tissue) and :data:`CLEARANCE_MM` or more from the brain."""
    depth = _distance_inside(tissue, spacing)
    region = facial_region(brain, affine)
    clear = brain_distance(brain, spacing, where=region, reach=CLEARANCE_MM) >= CLEARANCE_MM
    surface: NDArray[np.bool_] = tissue & region & clear & (depth <= SURFACE_MM)
    return surface


def face_removed(
    tissue: NDArray[np.bool_],
    removed: NDArray[np.bool_],
    brain: NDArray[np.bool_],
    affine: NDArray[np.float64],
    spacing: tuple[float, ...],
) -> float:
    """Share of the facial surface of ``tissue`` (the head before defacing) inside ``removed``;
    1 where the head shows no facial surface."""
    surface = facial_surface(tissue, brain, affine, spacing)
    total = int(surface.sum())
    return float((surface & removed).sum() / total) if total else 1.0


def face_shown(
    tissue: NDArray[np.bool_],
    brain: NDArray[np.bool_],
    affine: NDArray[np.float64],
    spacing: tuple[float, ...],
) -> FaceCheck:
    """Whether the image still shows a face: tissue in the facial zone, the facial region within
    :data:`ZONE_MM` of the brain, measured on the grid subsampled to about :data:`ZONE_GRID_MM`
    (a whole step along each axis, none along a thick one). No brain on that grid: the face
    counts as shown."""
    steps = [max(1, round(ZONE_GRID_MM / float(size))) for size in spacing[:3]]
    every = tuple(slice(None, None, step) for step in steps)
    tissue, brain = tissue[every], brain[every]
    if not brain.any():
        return FaceCheck(0.0, 0.0, True)
    affine = affine @ np.diag([*(float(step) for step in steps), 1.0])
    spacing = tuple(float(size) * step for size, step in zip(spacing[:3], steps, strict=True))
    front = facial_region(brain, affine, ZONE_FRONT_SHARE)
    zone = front & (brain_distance(brain, spacing, where=front) <= ZONE_MM)
    voxel_ml = float(np.prod(spacing[:3])) / 1000.0
    zone_ml = float(zone.sum()) * voxel_ml
    tissue_ml = float((zone & tissue).sum()) * voxel_ml
    if zone_ml < ZONE_MIN_ML:
        # (Next to) no facial zone in the field of view (a slab of the head's top, or a brain
        # mask that is off): absent only if the whole facial region holds no tissue.
        region_ml = float((facial_region(brain, affine) & tissue).sum()) * voxel_ml
        return FaceCheck(zone_ml, tissue_ml, region_ml >= ABSENT_ML)
    shown = tissue_ml >= SHOWN_SHARE * zone_ml
    return FaceCheck(zone_ml, tissue_ml, shown)

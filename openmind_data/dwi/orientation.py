"""Is the b-vector frame the image's frame? A fibre-coherence check on the fitted tensors.

BIDS gives b-vectors along the image's voxel axes. A table written in another frame (axes swapped
or flipped by a converter) fits tensors whose principal directions are permuted or mirrored:
they no longer run along the bundles they sit in. After Schilling et al. (2019, "A fiber
coherence index for quality control of B-table orientation"), each strongly anisotropic voxel is
followed a few one-voxel steps along its principal direction, both ways, and counts as coherent
when every step lands on another anisotropic voxel whose direction turns less than 30 degrees
(one step is not enough: it stays inside any bundle thicker than a voxel). The index is computed for
the table as given and for each of the 23 other axis permutations and flips; a clearly better
alternative marks the table as suspect.

FA and MD are invariant to the frame, so a suspect table does not change the maps this stage
makes; the verdict goes into the provenance (and the build may refuse such series by policy).
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import permutations

import numpy as np
from numpy.typing import NDArray

__all__ = ["FRAMES", "OrientationCheck", "check_orientation"]

FA_THRESHOLD = 0.3
MAX_ANGLE_DEGREES = 30.0
MIN_VOXELS = 200
#: Seeds followed at most (standard error of the index below 0.01).
MAX_SEEDS = 4000
#: Steps followed from each seed, both ways: a wrong frame leaves a bundle within a few.
STEPS = 4
#: How much better (relative) an alternative frame must score to make the given one suspect.
MARGIN = 0.10


def _frames() -> dict[str, NDArray[np.float64]]:
    frames: dict[str, NDArray[np.float64]] = {}
    names = "xyz"
    for perm in permutations(range(3)):
        base = np.eye(3)[list(perm)]
        swapped = "".join(names[i] for i in perm)
        # A flip of all three axes is the identity for axial directions: four sign classes.
        for flip in (None, 0, 1, 2):
            matrix = base.copy()
            if flip is not None:
                matrix[flip] *= -1
            parts = ([] if swapped == "xyz" else [f"axes {swapped}"]) + (
                [] if flip is None else [f"flip {names[flip]}"]
            )
            label = ", ".join(parts) or "as given"
            frames[label] = matrix
    return frames


#: Label -> matrix taking a direction fitted from the given table to that alternative frame.
FRAMES: dict[str, NDArray[np.float64]] = _frames()


@dataclass(frozen=True)
class OrientationCheck:
    verdict: str  # 'consistent', 'suspect' or 'undetermined'
    coherence: float | None  # index of the table as given
    best_frame: str | None
    best_coherence: float | None
    voxels: int

    def as_dict(self) -> dict[str, object]:
        return {
            "verdict": self.verdict,
            "coherence": self.coherence,
            "best_frame": self.best_frame,
            "best_coherence": self.best_coherence,
            "voxels": self.voxels,
        }


def check_orientation(
    v1: NDArray[np.floating], fa: NDArray[np.floating], spacing: tuple[float, ...]
) -> OrientationCheck:
    """Fibre coherence of principal directions ``v1`` (x, y, z, 3; voxel-axis frame) under every
    candidate frame; ``fa`` picks the voxels, ``spacing`` (mm) turns a direction into a step."""
    strong = fa > FA_THRESHOLD
    points = np.argwhere(strong).astype(np.float64)
    voxels = len(points)
    if voxels < MIN_VOXELS:
        return OrientationCheck("undetermined", None, None, None, voxels)
    if len(points) > MAX_SEEDS:  # an evenly spread subset: the index is a proportion
        points = points[np.linspace(0, len(points) - 1, MAX_SEEDS).astype(np.intp)]
    field = v1.astype(np.float64)
    # One step is one voxel of the finest axis, in voxel units of each axis.
    scale = min(spacing[:3]) / np.asarray(spacing[:3], dtype=np.float64)
    scores = {}
    for label, matrix in FRAMES.items():
        seeds = points.astype(np.intp)
        start = field[seeds[:, 0], seeds[:, 1], seeds[:, 2]] @ matrix.T
        followed = [_follow(points, sign * start, field, strong, matrix, scale) for sign in (1, -1)]
        scores[label] = float(np.mean(followed))
    given = scores["as given"]
    best = max(scores, key=lambda k: scores[k])
    suspect = best != "as given" and scores[best] > given * (1 + MARGIN)
    return OrientationCheck(
        "suspect" if suspect else "consistent", given, best, scores[best], voxels
    )


def _follow(
    points: NDArray[np.float64],
    direction: NDArray[np.float64],
    field: NDArray[np.float64],
    strong: NDArray[np.bool_],
    matrix: NDArray[np.float64],
    scale: NDArray[np.float64],
) -> NDArray[np.bool_]:
    """Which seeds can be followed :data:`STEPS` steps through anisotropic voxels whose
    (transformed) directions turn less than :data:`MAX_ANGLE_DEGREES` per step."""
    limit = np.cos(np.deg2rad(MAX_ANGLE_DEGREES))
    shape = np.asarray(strong.shape)
    position = points.copy()
    alive = np.ones(len(points), dtype=bool)
    for _ in range(STEPS):
        position[alive] += direction[alive] * scale
        index = np.rint(position[alive]).astype(np.intp)
        inside = np.all((index >= 0) & (index < shape), axis=1)
        ok = inside.copy()
        i = index[inside]
        ok[inside] = strong[i[:, 0], i[:, 1], i[:, 2]]
        nxt = np.zeros((len(index), 3))
        j = index[ok]
        nxt[ok] = field[j[:, 0], j[:, 1], j[:, 2]] @ matrix.T
        cosine = np.einsum("ij,ij->i", nxt, direction[alive])
        ok &= np.abs(cosine) > limit
        # Keep heading the same way: a direction and its opposite are one axis.
        nxt *= np.where(cosine < 0, -1.0, 1.0)[:, None]
        where = np.flatnonzero(alive)
        direction[where[ok]] = nxt[ok]
        alive[where[~ok]] = False
    return alive

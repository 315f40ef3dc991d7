"""Where an image shows anatomy, where its uploader defaced it, and where it is only padding.

Three kinds of non-anatomy meet in a head MRI, and they look different at the voxel level:

- air: magnitude noise. Its local coefficient of variation (standard deviation over mean in a
  small window) is about 0.52 (Rayleigh) whatever the noise level or bias field, and about 0.58
  for the salt-and-pepper air of MP2RAGE UNI images; tissue stays far below (0.05-0.2).
- defacing: a solid region of one exact value (zero, or the image minimum) where there was face
  and air: noise-free, and thick, unlike the odd exact zero of an integer image's air.
- padding: whole planes of that value at the borders of the grid.

The anatomy mask is the largest connected body of low-variation voxels, closed and with its
holes filled (dark CSF, bone and sinuses lie inside the head), minus defaced and padded voxels.
An image whose whole background is solid (no noisy air at all) was masked by its uploader: its
anatomy is what is not the fill value, and it is brain-extracted when that body has the volume
of a brain rather than a head.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray
from scipy import ndimage

__all__ = ["Foreground", "bounding_box", "fill_holes", "foreground", "zero_padding"]

#: Voxel size (mm) of the grid the air is learnt on: every axis subsampled by a whole step.
COARSE_MM = 4.0
#: Smoothing (voxels) before thresholding, on that grid...
COARSE_SIGMA = 0.7
#: ...and at full resolution, where the air is salt-and-pepper.
WINDOW_SIGMA = 1.0
#: Air is learnt this many voxels away from anything brighter than Otsu's split...
AIR_MARGIN = 3
#: ...and anatomy starts this many standard deviations above its (smoothed) mean.
AIR_SIGMAS = 5.0
#: Share of the grid's outer layer (inside padding) that must hold the fill value for the
#: image to count as masked by its uploader (skull-stripped, or a map with a fitted mask).
SOLID_BACKGROUND = 0.9
#: Voxels at the edge of the smoothed body that are re-judged on their own intensity.
EDGE = 2
#: An edge voxel is anatomy when brighter than this share of the tissue just inside the edge
#: (half: the half-maximum of a blurred step).
EDGE_SHARE = 0.5
#: Air brighter than this share of the head's median is salt-and-pepper, not magnitude noise.
BRIGHT_AIR = 0.25
#: In such air, tissue is what varies less than this share of the air's local variation.
SMOOTHER_THAN_AIR = 0.6
#: A solid constant region smaller than this share of the grid is not a defacing.
MIN_SOLID_SHARE = 0.002
#: A masked image whose anatomy is smaller than this (mm^3) shows a brain, not a head
#: (adult brains with their CSF are 1.1-1.9 L; heads with the neck cut 3.5 L and more).
BRAIN_VOLUME_MAX = 2.4e6


@dataclass(frozen=True)
class Foreground:
    """The masks of one image (bool, in its grid) and what its background showed."""

    anatomy: NDArray[np.bool_]
    anon: NDArray[np.bool_]
    padding: NDArray[np.bool_]
    fill: float  # the value of defaced, masked and padded voxels
    background: str  # 'noise' (air as acquired) or 'solid' (masked by the uploader)
    is_brain_extract: bool


def zero_padding(data: NDArray[Any], fill: float = 0.0) -> NDArray[np.bool_]:
    """Whole planes of ``fill`` at the borders of the grid, along every axis."""
    padding = np.zeros(data.shape, dtype=bool)
    is_fill = data == fill
    for axis in range(data.ndim):
        others = tuple(a for a in range(data.ndim) if a != axis)
        full = is_fill.all(axis=others)
        n = len(full)
        lead = int(np.argmin(full)) if not full.all() else n
        trail = int(np.argmin(full[::-1])) if not full.all() else n
        index: list[Any] = [slice(None)] * data.ndim
        index[axis] = slice(0, lead)
        padding[tuple(index)] = True
        index[axis] = slice(n - trail, n)
        padding[tuple(index)] = True
    return padding


def foreground(
    data: NDArray[Any], spacing: tuple[float, ...], *, derived: bool = False
) -> Foreground:
    """Anatomy, anonymization and padding masks of a 3D image (see the module's docstring).

    ``derived`` images (maps computed by the toolkit, e.g. FA) are never brain extracts or
    defaced: their solid background is the fit's own mask.
    """
    volume = np.asarray(data, dtype=np.float32)
    if not np.isfinite(volume).all():
        volume = np.nan_to_num(volume, nan=0.0, posinf=0.0, neginf=0.0)
    fill = _fill_value(volume)
    is_fill = volume == fill
    padding = zero_padding(volume, fill)
    if _masked(is_fill, padding):
        # What the uploader kept: no air to tell apart, only the fill value.
        anatomy = fill_holes(_largest(~is_fill & ~padding))
        litres = float(anatomy.sum() * np.prod(spacing[:3]))
        brain = not derived and 0 < litres < BRAIN_VOLUME_MAX
        return Foreground(anatomy, np.zeros_like(anatomy), padding, fill, "solid", brain)
    solid = _solid(is_fill & ~padding, max(8, int(MIN_SOLID_SHARE * volume.size)))
    valid = ~padding & ~solid
    anatomy = _head(volume, valid, tuple(float(z) for z in spacing[:3]))
    anon = solid if not derived else np.zeros_like(solid)
    return Foreground(anatomy, anon, padding, fill, "noise", False)


def _masked(is_fill: NDArray[np.bool_], padding: NDArray[np.bool_]) -> bool:
    """Is the image's outer layer (inside any padding) the fill value nearly everywhere? Then
    its uploader masked it: there is no air as acquired anywhere around it."""
    if padding.all():
        return True
    # Padding is whole planes, so what it leaves is a box: its six faces are the outer layer.
    inside = ~padding
    bounds = [
        np.flatnonzero(inside.any(axis=tuple(a for a in range(3) if a != k))) for k in range(3)
    ]
    box = is_fill[tuple(slice(b[0], b[-1] + 1) for b in bounds)]
    # Basic indexing: views of the faces (np.take would copy the whole box, a view, first).
    faces = [box[(slice(None),) * axis + (end,)] for axis in range(3) for end in (0, -1)]
    return float(np.concatenate([f.ravel() for f in faces]).mean()) > SOLID_BACKGROUND


def _head(
    volume: NDArray[np.float32], valid: NDArray[np.bool_], spacing: tuple[float, ...]
) -> NDArray[np.bool_]:
    """The head in air as acquired: a threshold learnt from the air on a grid subsampled to
    about :data:`COARSE_MM` (8 to 64 times less work, the same statistics), the body found
    there, then its edge re-judged voxel by voxel at full resolution on the unsmoothed
    intensities."""
    steps = tuple(
        max(1, min(round(COARSE_MM / size), n // 24))
        for n, size in zip(volume.shape, spacing, strict=False)
    )
    coarse = tuple(slice(None, None, step) for step in steps)
    small, small_valid = volume[coarse], valid[coarse]
    learnt = _learn_air(small, small_valid, COARSE_SIGMA)
    if learnt is None:  # no air to learn from: the image is all head
        return valid.copy()
    smooth, air, bright, level = learnt
    if float(np.mean(small[air])) > BRIGHT_AIR * float(np.median(small[bright])):
        return _rough_head(volume, valid)
    body_small = _body(small_valid & (smooth > level))
    rim = _erode(body_small, 1) & ~_erode(body_small, 2)
    edge = max(
        float(np.mean(small[air])) + 3 * float(np.std(small[air])),
        EDGE_SHARE * float(np.median(small[rim])) if rim.any() else 0.0,
    )
    # The band re-judged at full resolution: two coarse voxels inside the edge, one outside.
    core_small = _erode(body_small, 1)
    core = _upsample(core_small, steps, volume.shape)
    band = _upsample(_dilate(body_small, 1) & ~core_small, steps, volume.shape)
    return fill_holes(core | (band & (volume > edge))) & valid


def _learn_air(
    volume: NDArray[np.float32], valid: NDArray[np.bool_], sigma: float
) -> tuple[NDArray[np.float32], NDArray[np.bool_], NDArray[np.bool_], float] | None:
    """Smoothed image, air, bright voxels and the level anatomy starts at; None without air."""
    smooth = ndimage.gaussian_filter(volume, sigma)
    values = smooth[valid]
    if values.size == 0:
        return None
    split = _otsu(np.minimum(values, float(np.percentile(values, 99.5))))
    bright = valid & (smooth >= split)
    air = valid & ~_dilate(bright, AIR_MARGIN) & (smooth < split)
    if air.sum() < 50:
        return None
    level = float(np.mean(smooth[air])) + AIR_SIGMAS * float(np.std(smooth[air]))
    return smooth, air, bright, min(level, split)


def _rough_head(volume: NDArray[np.float32], valid: NDArray[np.bool_]) -> NDArray[np.bool_]:
    """Salt-and-pepper air (MP2RAGE UNI) is as bright as dark tissue, but rough: voxel to
    voxel it jumps by its whole range, where tissue changes smoothly. Full resolution."""
    learnt = _learn_air(volume, valid, WINDOW_SIGMA)
    if learnt is None:
        return valid.copy()
    smooth, air, _, level = learnt
    mean = ndimage.uniform_filter(volume, 3)
    spread = np.sqrt(np.maximum(ndimage.uniform_filter(volume * volume, 3) - mean**2, 0))
    rough = ndimage.gaussian_filter(spread, WINDOW_SIGMA)
    calm = rough < SMOOTHER_THAN_AIR * float(np.median(rough[air]))
    return _body(valid & (calm | (smooth > level))) & valid


def _upsample(
    mask: NDArray[np.bool_], steps: tuple[int, ...], shape: tuple[int, ...]
) -> NDArray[np.bool_]:
    for axis, step in enumerate(steps):
        if step > 1:
            mask = np.repeat(mask, step, axis=axis)
    return mask[tuple(slice(0, n) for n in shape)]


def _otsu(values: NDArray[np.float32], bins: int = 256) -> float:
    counts, edges = np.histogram(values, bins=bins)
    centres = (edges[:-1] + edges[1:]) / 2
    weight = np.cumsum(counts)
    total = weight[-1]
    mean = np.cumsum(counts * centres)
    between = (mean[-1] * weight - mean * total) ** 2 / np.maximum(weight * (total - weight), 1)
    return float(centres[int(np.argmax(between[:-1]))])


def _fill_value(volume: NDArray[np.float32]) -> float:
    """Zero, unless the image minimum occurs more often (a defacer that fills with it)."""
    low = float(volume.min())
    if low == 0.0:
        return 0.0
    return low if np.count_nonzero(volume == low) > np.count_nonzero(volume == 0.0) else 0.0


def _solid(candidates: NDArray[np.bool_], min_voxels: int) -> NDArray[np.bool_]:
    """Connected parts of ``candidates`` that are large and thick: they hold a voxel of the
    grid subsampled by two that survives an erosion there (a block of about 6 voxels a side)."""
    coarse = tuple(slice(None, None, 2) for _ in range(candidates.ndim))
    core = _erode(candidates[coarse], 1)
    if not core.any():  # nothing thick (the usual case): no labelling at full resolution
        return np.zeros(candidates.shape, dtype=bool)
    labels, count = ndimage.label(candidates)
    sizes = np.bincount(labels.ravel(), minlength=count + 1)
    thick = np.zeros(count + 1, dtype=bool)
    thick[np.unique(labels[coarse][core])] = True
    keep = thick & (sizes >= min_voxels)
    keep[0] = False
    kept = np.flatnonzero(keep)
    if len(kept) > 4:
        solid: NDArray[np.bool_] = keep[labels]
        return solid
    solid = np.zeros(candidates.shape, dtype=bool)
    for label in kept:  # usually one defaced region: comparisons beat a gather
        solid |= labels == label
    return solid


def _largest(mask: NDArray[np.bool_]) -> NDArray[np.bool_]:
    labels, count = ndimage.label(mask)
    if count <= 1:
        return mask
    sizes = np.bincount(labels.ravel(), minlength=count + 1)
    sizes[0] = 0
    return labels == int(np.argmax(sizes))  # type: ignore[no-any-return]


def _body(mask: NDArray[np.bool_]) -> NDArray[np.bool_]:
    """The largest connected part of ``mask``, closed, with its holes filled."""
    body = _largest(mask)
    if not body.any():
        return body
    body = _erode(_dilate(body, 2), 2) | body
    # Slice by slice: every hole enclosed in 3D is enclosed in each of its slices too, and
    # holes open to the outside in 3D (nostrils, ear canals) close in some slices.
    for axis in range(3):
        body = fill_holes(body, slices_across=axis)
    return body


def fill_holes(mask: NDArray[np.bool_], slices_across: int | None = None) -> NDArray[np.bool_]:
    """``mask`` with every background part that does not reach the grid's edge filled; with
    ``slices_across``, in each slice across that axis separately. One labelling pass (scipy's
    binary_fill_holes dilates iteratively: ten times slower on a head), within the mask's
    bounding box grown by a voxel: what lies outside that box reaches the edge anyway."""
    box = bounding_box(mask, margin=1)
    if box is None:
        return mask.copy()
    if any(b.stop - b.start < n for b, n in zip(box, mask.shape, strict=True)):
        filled = mask.copy()
        filled[box] = _fill_holes(mask[box], slices_across)
        return filled
    return _fill_holes(mask, slices_across)


def _fill_holes(mask: NDArray[np.bool_], slices_across: int | None) -> NDArray[np.bool_]:
    if slices_across is None:
        structure = ndimage.generate_binary_structure(3, 1)
    else:  # no links along the axis: each slice is its own 2D problem
        structure = np.zeros((3, 3, 3), dtype=bool)
        middle: list[Any] = [slice(None)] * 3
        middle[slices_across] = 1
        structure[tuple(middle)] = ndimage.generate_binary_structure(2, 1)
    labels, count = ndimage.label(~mask, structure=structure)
    if count == 0:
        return mask
    outside = np.zeros(count + 1, dtype=bool)
    for axis in range(3):
        if axis == slices_across:
            continue
        for end in (0, -1):
            face: list[Any] = [slice(None)] * 3
            face[axis] = end
            outside[labels[tuple(face)]] = True  # a view: no copy of the labels
    outside[0] = True  # label 0 is the mask itself
    filled: NDArray[np.bool_] = mask | ~outside[labels]
    return filled


def bounding_box(
    mask: NDArray[np.bool_], margin: int | tuple[int, ...] = 0
) -> tuple[slice, ...] | None:
    """The smallest box holding ``mask``, grown by ``margin`` voxels (one for every axis, or
    one per axis) within the grid; None when the mask is empty."""
    margins = (margin,) * mask.ndim if isinstance(margin, int) else margin
    box = []
    for axis, grow in enumerate(margins):
        hits = np.flatnonzero(mask.any(axis=tuple(a for a in range(mask.ndim) if a != axis)))
        if hits.size == 0:
            return None
        n = mask.shape[axis]
        box.append(slice(max(0, int(hits[0]) - grow), min(n, int(hits[-1]) + 1 + grow)))
    return tuple(box)


def _dilate(mask: NDArray[np.bool_], radius: int) -> NDArray[np.bool_]:
    """Dilation by a cube (separable: a few milliseconds however large the radius)."""
    out: NDArray[np.bool_] = ndimage.maximum_filter(mask.view(np.uint8), size=2 * radius + 1)
    return out.view(bool)


def _erode(mask: NDArray[np.bool_], radius: int) -> NDArray[np.bool_]:
    """Erosion by a cube; outside the grid counts as background."""
    out: NDArray[np.bool_] = ndimage.minimum_filter(
        mask.view(np.uint8), size=2 * radius + 1, mode="constant"
    )
    return out.view(bool)

"""Orthogonal planes of a volume and its masks, drawn as small PNGs: each shard row's preview and
the QC browser's slices are drawn by the same code.

A :class:`Volume` holds the voxels in RAS order (a view of the stored array, transposed and
flipped as its affine says, never resampled) with its masks. A plane is shown the way
neurologists read it: superior up in the sagittal and coronal planes, anterior up in the axial
one, the subject's right on the right of the coronal and axial planes, anterior on the right of
the sagittal one. Pixels are square millimetres (the voxel sizes set each plane's aspect).
Masks are drawn as one-pixel outlines: the anatomy in green, the anonymization (what defacing
removed) in red, the brain in cyan.
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import nibabel as nib
import numpy as np
from numpy.typing import NDArray

__all__ = [
    "MASK_COLOURS",
    "PLANES",
    "PREVIEW_MAX_BYTES",
    "Volume",
    "draw_plane",
    "preview_png",
]

PLANES = ("sagittal", "coronal", "axial")
#: mask name -> RGB of its outline
MASK_COLOURS: dict[str, tuple[int, int, int]] = {
    "anatomy": (60, 220, 60),
    "anonymization": (255, 50, 50),
    "brain": (0, 220, 255),
}
#: The preview's size limit: small enough for the Hub viewer to show many rows at once.
PREVIEW_MAX_BYTES = 40_000
_GREYS = 256 - len(MASK_COLOURS)  # palette entries 0.._GREYS-1 are greys, then the colours


@dataclass(frozen=True)
class Volume:
    """Voxels (float32) and masks (bool, by name in :data:`MASK_COLOURS`) in RAS order, with
    the voxel sizes in mm along R, A and S."""

    data: NDArray[np.float32]
    spacing: tuple[float, float, float]
    masks: Mapping[str, NDArray[np.bool_]]

    @classmethod
    def from_arrays(
        cls,
        data: NDArray[Any],
        affine: NDArray[Any],
        masks: Mapping[str, NDArray[Any] | None] | None = None,
    ) -> Volume:
        """A volume in the grid of ``affine``; masks that are None are left out."""
        orientation = nib.orientations.io_orientation(affine)
        zooms = np.sqrt((np.asarray(affine, dtype=np.float64)[:3, :3] ** 2).sum(axis=0))
        stored = np.argsort(orientation[:, 0])  # the stored axis that lands on R, A, S
        r, a, s = (float(zooms[int(axis)]) for axis in stored)

        def ras(array: NDArray[Any]) -> NDArray[Any]:
            out: NDArray[Any] = nib.orientations.apply_orientation(array, orientation)
            return out

        return cls(
            data=ras(np.asarray(data, dtype=np.float32)),
            spacing=(r, a, s),
            masks={
                name: ras(np.asarray(mask, dtype=bool))
                for name, mask in (masks or {}).items()
                if mask is not None
            },
        )

    @property
    def shape(self) -> tuple[int, int, int]:
        x, y, z = self.data.shape[:3]
        return (x, y, z)

    def centre(self) -> tuple[int, int, int]:
        """The centre of the anatomy's bounding box (of the grid where there is none)."""
        anatomy = self.masks.get("anatomy")
        if anatomy is None or not anatomy.any():
            x, y, z = (n // 2 for n in self.shape)
            return (x, y, z)
        centre = []
        for axis in range(3):
            others = tuple(a for a in range(3) if a != axis)
            present = np.flatnonzero(anatomy.any(axis=others))
            centre.append(int(present[0] + present[-1]) // 2)
        return (centre[0], centre[1], centre[2])

    def window(self) -> tuple[float, float]:
        """Display range: the 0.5th and 99.5th percentiles of the voxels in the anatomy (of all
        voxels where there is none), on every second voxel along each axis."""
        data = self.data[::2, ::2, ::2]
        anatomy = self.masks.get("anatomy")
        values = data[anatomy[::2, ::2, ::2]] if anatomy is not None else data.ravel()
        values = values[np.isfinite(values)] if values.size else values
        if not values.size:
            return (0.0, 1.0)
        low, high = (float(v) for v in np.percentile(values, [0.5, 99.5]))
        return (low, high if high > low else low + 1.0)

    def plane(
        self, name: str, index: int
    ) -> tuple[NDArray[np.float32], dict[str, NDArray[np.bool_]], tuple[float, float]]:
        """Plane ``name`` at ``index`` along its axis (clipped to the grid), rows from the top
        of the display: the picture, each mask's plane, and (row, column) pixel sizes in mm."""
        axis = PLANES.index(name)
        index = min(max(int(index), 0), self.shape[axis] - 1)

        def cut(array: NDArray[Any]) -> NDArray[Any]:
            # The plane's two remaining axes, the later one (S, or A in the axial plane) up.
            out: NDArray[Any] = array[(slice(None),) * axis + (index,)].T[::-1]
            return out

        rest = [a for a in range(3) if a != axis]
        sizes = (self.spacing[rest[1]], self.spacing[rest[0]])
        return cut(self.data), {k: cut(m) for k, m in self.masks.items()}, sizes


def draw_plane(
    volume: Volume,
    name: str,
    index: int,
    *,
    window: tuple[float, float],
    masks: Sequence[str] = tuple(MASK_COLOURS),
    mm_per_pixel: float = 1.0,
) -> Any:
    """One plane as a palette image (PIL), greys from ``window`` (low, high), the ``masks``
    named outlined, resampled to ``mm_per_pixel``."""
    from PIL import Image  # noqa: PLC0415 (keep Pillow off the package's import path)

    picture, planes, (row_mm, column_mm) = volume.plane(name, index)
    rows, columns = picture.shape
    size = (
        max(1, round(columns * column_mm / mm_per_pixel)),
        max(1, round(rows * row_mm / mm_per_pixel)),
    )
    low, high = window
    scaled = np.clip((np.nan_to_num(picture) - low) / max(high - low, 1e-12), 0.0, 1.0)
    greys = np.rint(scaled * (_GREYS - 1)).astype(np.uint8)
    image = Image.fromarray(np.ascontiguousarray(greys), mode="L").resize(
        size, Image.Resampling.BILINEAR
    )
    indices = np.asarray(image, dtype=np.uint8).copy()
    for colour, mask_name in enumerate(MASK_COLOURS, start=_GREYS):
        if mask_name not in masks or mask_name not in planes:
            continue
        mask = Image.fromarray(np.ascontiguousarray(planes[mask_name]).astype(np.uint8) * 255)
        inside = np.asarray(mask.resize(size, Image.Resampling.NEAREST)) > 0
        indices[_outline(inside)] = colour
    out = Image.fromarray(indices, mode="P")
    out.putpalette(_palette())
    return out


def preview_png(volume: Volume, *, height: int = 128, max_bytes: int = PREVIEW_MAX_BYTES) -> bytes:
    """The row preview: the sagittal, coronal and axial planes through the anatomy's centre,
    side by side, every mask outlined, ``height`` pixels tall; a PNG of at most ``max_bytes``
    (greys are quantised more coarsely until it fits, then the height halved). The same volume
    gives the same bytes."""
    from PIL import Image  # noqa: PLC0415

    centre = volume.centre()
    extent = max(n * s for n, s in zip(volume.shape, volume.spacing, strict=True))
    scale = extent / height
    window = volume.window()
    panels = [
        draw_plane(volume, name, centre[axis], window=window, mm_per_pixel=scale)
        for axis, name in enumerate(PLANES)
    ]
    canvas = Image.new("P", (sum(p.width for p in panels) + 2 * (len(panels) - 1), height), 0)
    canvas.putpalette(_palette())
    left = 0
    for panel in panels:
        canvas.paste(panel, (left, (height - panel.height) // 2))
        left += panel.width + 2
    for step in (1, 2, 4, 8, 16, 32):
        png = _png(_coarser(canvas, step))
        if len(png) <= max_bytes:
            return png
    if height > 16:  # never reached at 128 pixels and 8 greys; smaller rather than none
        return preview_png(volume, height=height // 2, max_bytes=max_bytes)
    raise ValueError(f"a preview of {canvas.size} pixels does not fit in {max_bytes} bytes")


def _coarser(image: Any, step: int) -> Any:
    """Greys quantised to every ``step``-th level; the mask colours kept."""
    if step == 1:
        return image
    from PIL import Image  # noqa: PLC0415

    indices = np.asarray(image, dtype=np.uint8)
    greys = indices < _GREYS
    out = np.where(greys, (indices // step) * step, indices).astype(np.uint8)
    coarse = Image.fromarray(out, mode="P")
    coarse.putpalette(_palette())
    return coarse


def _png(image: Any) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", optimize=True)
    return buffer.getvalue()


def _palette() -> list[int]:
    greys = [round(255 * i / (_GREYS - 1)) for i in range(_GREYS)]
    palette = [value for grey in greys for value in (grey, grey, grey)]
    for colour in MASK_COLOURS.values():
        palette.extend(colour)
    return palette


def _outline(inside: NDArray[np.bool_]) -> NDArray[np.bool_]:
    """The pixels of a 2D mask with a four-neighbour outside it (or on the picture's edge)."""
    padded = np.pad(inside, 1, constant_values=False)
    interior = padded[:-2, 1:-1] & padded[2:, 1:-1] & padded[1:-1, :-2] & padded[1:-1, 2:] & inside
    out: NDArray[np.bool_] = inside & ~interior
    return out

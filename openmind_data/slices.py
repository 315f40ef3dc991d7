"""What the toolkit's figures share (montage, mask overlays, quality sheet): middle slices of
NIfTI images, and writing a finished figure."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
from numpy.typing import NDArray

__all__ = ["draw_masks", "middle_sagittal", "save_figure", "scaled"]


def middle_sagittal(image: Any) -> tuple[NDArray[np.float32], float]:
    """The middle sagittal slice of a nibabel image or a path, in RAS orientation (rows run
    inferior to superior; the first volume of a 4D series), and the aspect ratio (superior
    over anterior voxel size) that shows it undistorted."""
    loaded = nib.load(image) if isinstance(image, str | Path) else image
    canonical = nib.as_closest_canonical(loaded)
    zooms = canonical.header.get_zooms()
    proxy = canonical.dataobj
    data = np.asarray(proxy[..., 0] if len(canonical.shape) > 3 else proxy, dtype=np.float32)
    return data[data.shape[0] // 2].T, float(zooms[2] / zooms[1])


def scaled(picture: NDArray[np.float32]) -> NDArray[np.float32]:
    """Intensities to 0..1, clipped at the 99.5th percentile."""
    top = float(np.percentile(picture, 99.5)) or 1.0
    out: NDArray[np.float32] = np.clip(picture / top, 0.0, 1.0)
    return out


def draw_masks(
    ax: Any, aspect: float, *, anatomy: Any = None, brain: Any = None, anonymization: Any = None
) -> None:
    """Over a middle sagittal slice on ``ax``: the anatomy mask's outline in green, the brain
    mask's in cyan, the anonymization mask filled in translucent red. Each is a nibabel image,
    a path, or None where there is none."""
    for mask_image, colour in ((anatomy, "lime"), (brain, "cyan")):
        if mask_image is not None:
            mask, _ = middle_sagittal(mask_image)
            if mask.any():
                ax.contour(mask > 0, levels=[0.5], colors=colour, linewidths=0.6)
    if anonymization is not None:
        anon, _ = middle_sagittal(anonymization)
        overlay = np.zeros((*anon.shape, 4), dtype=np.float32)
        overlay[anon > 0] = (1.0, 0.1, 0.1, 0.45)
        ax.imshow(overlay, origin="lower", aspect=aspect)


def save_figure(figure: Any, out: str | Path, *, dpi: int, **options: Any) -> Path:
    """Lay out a matplotlib ``figure``, write it to ``out`` (its folder made as needed), close
    it; ``options`` go to ``savefig``."""
    import matplotlib.pyplot as plt  # noqa: PLC0415 (keep matplotlib off the import path)

    figure.tight_layout()
    path = Path(out)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=dpi, **options)
    plt.close(figure)
    return path

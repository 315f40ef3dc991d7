"""A PNG of middle sagittal slices with each image's masks drawn on it, to check them by eye."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import nibabel as nib
import pyarrow as pa

from openmind_data.slices import draw_masks, middle_sagittal, save_figure, scaled

__all__ = ["write_mask_figure"]

_MASK_COLUMNS = {
    "anatomy": "anat_mask_path",
    "brain": "brain_mask_path",
    "anonymization": "anon_mask_path",
}


def write_mask_figure(
    images: pa.Table,
    locate: Mapping[str, Path],
    masks_root: str | Path,
    out: str | Path,
    *,
    columns: int = 6,
    limit: int = 24,
    dpi: int = 80,
) -> Path:
    """One tile per row of ``images`` (the masks stage's table, one of each kind of defacing
    and modality first): the image (``locate[image_id]``), the anatomy mask's outline in
    green, the anonymization mask in red, the brain mask's outline in cyan."""
    import matplotlib  # noqa: PLC0415 (keep matplotlib off the import path of the package)

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    rows = images.to_pylist()
    seen: set[tuple[str, str]] = set()
    first: list[dict[str, Any]] = []
    rest: list[dict[str, Any]] = []
    for row in rows:
        kind = (str(row["modality"]), str(row["defacing"]))
        (rest if kind in seen else first).append(row)
        seen.add(kind)
    chosen = (first + rest)[:limit]
    lines = max(1, -(-len(chosen) // columns))
    figure, axes = plt.subplots(lines, columns, figsize=(2.2 * columns, 2.5 * lines), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for ax, row in zip(axes.ravel(), chosen, strict=False):
        image = nib.load(locate[row["image_id"]])
        picture, aspect = middle_sagittal(image)
        ax.imshow(scaled(picture), cmap="gray", origin="lower", aspect=aspect)
        masks = {
            name: Path(masks_root) / row[column] if row.get(column) else None
            for name, column in _MASK_COLUMNS.items()
        }
        draw_masks(ax, aspect, **masks)
        ax.set_title(f"{row['dataset_id']} {row['modality']}\n{row['defacing']}", fontsize=7)
    return save_figure(figure, out, dpi=dpi)

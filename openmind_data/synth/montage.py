"""A PNG contact sheet of middle slices, so a person can see that the heads look like heads."""

from __future__ import annotations

from pathlib import Path

from openmind_data.slices import middle_sagittal, save_figure, scaled
from openmind_data.synth.collection import Collection

__all__ = ["write_montage"]


def write_montage(
    collection: Collection, out: str | Path, *, columns: int = 8, limit: int = 64, dpi: int = 80
) -> Path:
    """Write one tile per image (dataset, modality and defacing in its caption)."""
    import matplotlib  # noqa: PLC0415 (keep matplotlib off the import path of the package)

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    images = collection.files("image")[:limit]
    rows = max(1, -(-len(images) // columns))
    figure, axes = plt.subplots(rows, columns, figsize=(2.0 * columns, 2.3 * rows), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for ax, record in zip(axes.ravel(), images, strict=False):
        picture, aspect = middle_sagittal(collection.root / record["path"])
        ax.imshow(scaled(picture), cmap="gray", origin="lower", aspect=aspect)
        label = record["dataset_id"] + " " + str(record.get("modality"))
        details = [
            d for d in (record.get("defacing"), record.get("degradation")) if d and d != "none"
        ]
        if record.get("is_brain_extract"):
            details.append("stripped")
        ax.set_title("\n".join([label, " ".join(details)]), fontsize=7)
    return save_figure(figure, out, dpi=dpi)

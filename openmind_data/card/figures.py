"""The card's figures, drawn from the folder itself: images per modality, the IQS histogram of
each modality, and one example per modality (its best-scoring image, the first row of its
shard) with the anatomy, anonymization and brain masks over the middle sagittal slice."""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq

from openmind_data.card.header import shard_files
from openmind_data.card.summary import IQS_BINS, Summary
from openmind_data.durable import write_with
from openmind_data.nifti import decode_nifti
from openmind_data.schema import SPLITS
from openmind_data.slices import draw_masks, middle_sagittal, save_figure, scaled

__all__ = ["FIGURES", "write_figures"]

#: name -> (file under assets/, alt text)
FIGURES = {
    "modalities": ("assets/images_per_modality.png", "Images per modality"),
    "iqs": ("assets/iqs_per_modality.png", "Image quality score per modality"),
    "examples": ("assets/examples_per_modality.png", "One example per modality with its masks"),
}
_PNG = {"Software": None}  # no version string: the same folder draws the same bytes
_VOXELS = ("image", "anat_mask", "anon_mask", "brain_mask")


def write_figures(folder: Path, summary: Summary, *, dpi: int = 90) -> dict[str, Path]:
    """Draw the three figures into ``folder/assets``; name -> path."""
    import matplotlib  # noqa: PLC0415 (keep matplotlib off the import path of the package)

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    return {
        "modalities": _counts(plt, summary, folder / FIGURES["modalities"][0], dpi),
        "iqs": _histograms(plt, summary, folder / FIGURES["iqs"][0], dpi),
        "examples": _examples(plt, folder, folder / FIGURES["examples"][0], dpi),
    }


def _counts(plt: Any, summary: Summary, out: Path, dpi: int) -> Path:
    rows = sorted(summary.modalities, key=lambda r: (-r.images, r.modality))
    figure, ax = plt.subplots(figsize=(7, 0.3 * len(rows) + 1.2))
    names = [r.modality for r in rows]
    train = [r.train for r in rows]
    validation = [r.validation for r in rows]
    ax.barh(names, train, color="#4c72b0", label="train")
    ax.barh(names, validation, left=train, color="#dd8452", label="validation")
    for y, row in enumerate(rows):
        ax.text(row.images, y, f" {row.images}", va="center", fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("images")
    ax.set_title(
        f"{summary.images} images, {summary.subjects} subjects, {summary.datasets} datasets"
    )
    ax.legend(loc="lower right", fontsize=8)
    ax.spines[["top", "right"]].set_visible(False)
    return _save(figure, out, dpi)


def _histograms(plt: Any, summary: Summary, out: Path, dpi: int) -> Path:
    from matplotlib.ticker import MaxNLocator  # noqa: PLC0415

    names = list(summary.iqs_histogram)
    columns = min(4, max(1, len(names)))
    lines = max(1, -(-len(names) // columns))
    figure, axes = plt.subplots(
        lines, columns, figsize=(2.4 * columns, 1.9 * lines), squeeze=False, sharex=True
    )
    for ax in axes.ravel():
        ax.axis("off")
    centres = [(a + b) / 2 for a, b in itertools.pairwise(IQS_BINS)]
    colours = plt.get_cmap("RdYlGn_r")(np.linspace(0.05, 0.95, len(centres)))
    for ax, name in zip(axes.ravel(), names, strict=False):
        ax.axis("on")
        counts = summary.iqs_histogram[name]
        ax.bar(centres, counts, width=0.45, color=colours)
        ax.set_title(f"{name} ({sum(counts)})", fontsize=9)
        ax.set_xticks(range(1, 6))
        ax.tick_params(labelsize=7)
        ax.yaxis.set_major_locator(MaxNLocator(integer=True))
        ax.spines[["top", "right"]].set_visible(False)
    figure.supxlabel("image quality score (1 best, 5 worst)", fontsize=9)
    return _save(figure, out, dpi)


def _examples(plt: Any, folder: Path, out: Path, dpi: int) -> Path:
    shards = shard_files(folder)
    columns = min(6, max(1, len(shards)))
    lines = max(1, -(-len(shards) // columns))
    figure, axes = plt.subplots(lines, columns, figsize=(2.2 * columns, 2.5 * lines), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for ax, (modality, by_split) in zip(axes.ravel(), sorted(shards.items()), strict=False):
        path = next(by_split[s][0] for s in SPLITS if s in by_split)
        row = _first_row(path)
        picture, aspect = middle_sagittal(decode_nifti(row["image"]))
        ax.imshow(scaled(picture), cmap="gray", origin="lower", aspect=aspect)
        draw_masks(
            ax,
            aspect,
            anatomy=_decoded(row.get("anat_mask")),
            brain=_decoded(row.get("brain_mask")),
            anonymization=_decoded(row.get("anon_mask")),
        )
        ax.set_title(f"{modality}  IQS {row['image_quality_score']:.2f}", fontsize=8)
    figure.text(
        0.5,
        0.005,
        "green: anatomy mask   red: anonymization mask   cyan: brain mask",
        ha="center",
        fontsize=8,
    )
    return _save(figure, out, dpi)


def _save(figure: Any, out: Path, dpi: int) -> Path:
    """Write a figure whole (hidden name, flush, rename), as every file of the folder is."""
    return write_with(
        out, lambda partial: save_figure(figure, partial, dpi=dpi, metadata=_PNG, format="png")
    )


def _first_row(path: Path) -> dict[str, Any]:
    """The first row of a shard (its best IQS: shards are sorted), reading one row group."""
    columns = ["image_quality_score", *_VOXELS]
    batch = next(pq.ParquetFile(path).iter_batches(batch_size=1, columns=columns))
    row: dict[str, Any] = batch.to_pylist()[0]
    return {k: (v["bytes"] if isinstance(v, dict) else v) for k, v in row.items()}


def _decoded(payload: bytes | None) -> Any:
    return decode_nifti(payload) if payload else None

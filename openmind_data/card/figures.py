"""The card's figures, drawn from the folder itself: images per modality, the IQS histogram of
each modality, and the previews of each modality's best- and worst-scoring image (the first and
the last row of its shards, which are sorted by IQS), as the shards hold them."""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq

from openmind_data.card.summary import IQS_BINS, Summary
from openmind_data.dataset_folder import ASSETS, DatasetFolder
from openmind_data.durable import write_atomic, write_with
from openmind_data.slices import save_figure

__all__ = ["FIGURES", "Example", "examples", "write_figures"]

#: name -> (its file in the folder, alt text)
FIGURES = {
    "modalities": (f"{ASSETS}/images_per_modality.png", "Images per modality"),
    "iqs": (f"{ASSETS}/iqs_per_modality.png", "Image quality score per modality"),
}
PREVIEWS = f"{ASSETS}/previews"
_PNG = {"Software": None}  # no version string: the same folder draws the same bytes


@dataclass(frozen=True)
class Example:
    """One preview the card shows: a modality's best (``rank`` "best") or worst image."""

    modality: str
    rank: str
    image_id: str
    iqs: float | None
    preview: bytes

    @property
    def path(self) -> str:
        return f"{PREVIEWS}/{self.modality}-{self.rank}.png"


def examples(folder: Path) -> list[Example]:
    """Per modality, its best and worst image: the first row of a split's first shard and the
    last row of its last shard (shards are sorted by IQS, unscored last), reading the preview
    column of one row group each."""
    found = []
    for modality, by_split in sorted(DatasetFolder.here(folder).shard_files().items()):
        ends = [_row(paths[0], 0) for paths in by_split.values()]
        ends += [_row(paths[-1], -1) for paths in by_split.values()]
        ranked = sorted(ends, key=lambda end: (end[1] is None, end[1] or 0.0, end[0]))
        best, worst = ranked[0], ranked[-1]
        found.append(Example(modality, "best", *best))
        if worst[0] != best[0]:
            found.append(Example(modality, "worst", *worst))
    return found


def _row(path: str, which: int) -> tuple[str, float | None, bytes]:
    file = pq.ParquetFile(path)
    group = which % file.num_row_groups
    table = file.read_row_group(group, columns=["image_id", "image_quality_score", "preview"])
    row = table.slice(which % table.num_rows, 1).to_pylist()[0]
    return row["image_id"], row["image_quality_score"], (row["preview"] or {}).get("bytes") or b""


def write_figures(folder: Path, summary: Summary, *, dpi: int = 90) -> dict[str, Path]:
    """Draw the two figures and write the example previews into the folder's assets; name ->
    path. Previews of modalities the folder no longer has are removed."""
    import matplotlib  # noqa: PLC0415 (keep matplotlib off the import path of the package)

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    written = {
        "modalities": _counts(plt, summary, folder / FIGURES["modalities"][0], dpi),
        "iqs": _histograms(plt, summary, folder / FIGURES["iqs"][0], dpi),
    }
    shown = examples(folder)
    for example in shown:
        path = folder / example.path
        written[f"preview {example.modality} {example.rank}"] = write_atomic(path, example.preview)
    kept = {folder / example.path for example in shown}
    for stale in (folder / PREVIEWS).glob("*.png"):
        if stale not in kept:
            stale.unlink()
    return written


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


def _save(figure: Any, out: Path, dpi: int) -> Path:
    """Write a figure whole (hidden name, flush, rename), as every file of the folder is."""
    return write_with(
        out, lambda partial: save_figure(figure, partial, dpi=dpi, metadata=_PNG, format="png")
    )

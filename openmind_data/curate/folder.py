"""The dataset folder (its layout: :mod:`openmind_data.dataset_folder`), written from the
build's journal alone: the metadata tables, the data shards (:mod:`~openmind_data.curate.
shards`), the previews (:mod:`~openmind_data.curate.previews`), the released columns
(:func:`~openmind_data.release.table.write_release_csv`) and the card.

Every file is written under a hidden name, flushed and renamed; writing the folder again from the
same journal gives the same bytes, which is what makes a killed build resumable at any point.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import pyarrow as pa

from openmind_data.card import write_card
from openmind_data.crawl import CrawlResult
from openmind_data.curate.dedup import drop_duplicates
from openmind_data.curate.journal import Journal
from openmind_data.curate.previews import write_previews
from openmind_data.curate.shards import ShardOptions, ShardRow, write_shard_rows
from openmind_data.curate.splits import SPLITS, assign_splits
from openmind_data.curate.tree import write_nifti_tree
from openmind_data.dataset_folder import (
    CARD,
    DATA,
    PREVIEWS,
    RELEASE_CSV,
    TABLES,
    DatasetFolder,
    shard_glob,
    table_path,
)
from openmind_data.durable import write_with
from openmind_data.quality import IqsModel, score_table
from openmind_data.release.table import write_release_csv
from openmind_data.schema import (
    EXCLUDED_SCHEMA,
    IMAGE_SCHEMA,
    PREVIEW_COLUMN,
    SOURCES_SCHEMA,
    table_from_records,
    write_table,
)

__all__ = ["FolderResult", "relative_details", "write_folder"]


@dataclass
class FolderResult:
    images: pa.Table
    excluded: pa.Table
    sources: pa.Table
    shards: dict[str, list[Path]]  # "<modality>/<split>" -> paths
    tables: dict[str, Path]


def write_folder(
    out: str | Path,
    crawled: CrawlResult,
    journal: Journal,
    keys: Mapping[tuple[str, str], str],
    shard_options: ShardOptions,
    *,
    validation: float,
    seed: int,
    roots: Mapping[str, str],
    iqs_model: IqsModel | None,
    nifti_tree: str | Path | None = None,
) -> FolderResult:
    """Write the folder for the candidates ``keys`` from what ``journal`` holds of them; each
    image's IQS is scored here by ``iqs_model``, against its peers among the published images
    (None keeps the scores the rows bring, as an import of a release does)."""
    out = Path(out)
    journaled = journal.rows(keys)
    located = journaled.published
    # image id -> (batch, row, voxel bytes): where its voxels wait in the journal.
    where = {
        r["image_id"]: (r["_batch"], r["_row"], r["_bytes"])
        for r in located.select(["image_id", "_batch", "_row", "_bytes"]).to_pylist()
    }
    kept, duplicates = drop_duplicates(located.select(IMAGE_SCHEMA.names).cast(IMAGE_SCHEMA))
    if iqs_model is not None:
        kept = score_table(kept, iqs_model)
    rows = assign_splits(kept, validation=validation, seed=seed).sort_by("image_id").to_pylist()
    # Made anew from the rows: the journal's batches give chunks and dictionaries that depend
    # on how the work was scheduled, and Parquet would write them into the file.
    images = table_from_records(rows, IMAGE_SCHEMA)
    excluded = _sorted_exclusions(
        [
            *relative_details(crawled.excluded.to_pylist(), roots),
            *journaled.excluded.to_pylist(),
            *duplicates.to_pylist(),
        ]
    )
    sources = crawled.sources.sort_by("dataset_id").cast(SOURCES_SCHEMA)

    tables = {name: out / table_path(name) for name in TABLES}
    tables["openneuro_metadata"] = out / RELEASE_CSV
    write_with(tables["images"], lambda path: write_table(images, path))
    write_with(tables["excluded"], lambda path: write_table(excluded, path))
    write_with(tables["sources"], lambda path: write_table(sources, path))
    released = write_release_csv(images)
    write_with(tables["openneuro_metadata"], lambda path: path.write_text(released))

    def voxels(image_id: str) -> dict[str, Any]:
        batch, row, _ = where[image_id]
        return journal.voxels(batch, row)

    def payload(image_id: str) -> pa.Table:
        batch, row, _ = where[image_id]
        return journal.payload(batch, row)

    shards: dict[str, list[Path]] = {}
    modalities = sorted({str(row["modality"]) for row in rows})
    for modality in modalities:
        for split in SPLITS:
            entries = [
                ShardRow(row, where[row["image_id"]][2], partial(payload, row["image_id"]))
                for row in rows
                if row["modality"] == modality and row["split"] == split
            ]
            paths = write_shard_rows(entries, out / DATA / modality, shard_options, split=split)
            if paths:
                shards[f"{modality}/{split}"] = paths
    _remove_stale_configs(DatasetFolder.here(out), modalities)

    def preview(image_id: str) -> Any:
        batch, row, _ = where[image_id]
        return journal.voxels(batch, row, (PREVIEW_COLUMN,))[PREVIEW_COLUMN]

    write_previews(rows, preview, out / PREVIEWS)
    if rows:
        write_card(out)
    else:
        write_with(out / CARD, lambda path: path.write_text(_EMPTY))
    if nifti_tree is not None:
        write_nifti_tree(nifti_tree, rows, lambda row: voxels(row["image_id"]), released)
    return FolderResult(images, excluded, sources, shards, tables)


_EMPTY = f"""\
---
configs:
- config_name: metadata
  data_files:
  - split: train
    path: {table_path("images")}
---

# An empty OpenMind-style dataset

The build published no image: `{table_path("excluded")}` says why each file was left out.
"""


def relative_details(rows: list[dict[str, Any]], roots: Mapping[str, str]) -> list[dict[str, Any]]:
    """Exclusion rows with the builder's absolute dataset folders in their details replaced by
    the dataset ids (a message may quote a file by its absolute path), changed in place."""
    for row in rows:
        root = roots.get(row["dataset_id"])
        if root and row.get("detail"):
            row["detail"] = row["detail"].replace(root, row["dataset_id"])
    return rows


def _sorted_exclusions(rows: list[dict[str, Any]]) -> pa.Table:
    def order(row: Mapping[str, Any]) -> tuple[str, ...]:
        return tuple(
            str(row.get(c) or "")
            for c in ("dataset_id", "source_path", "image_id", "stage", "reason", "detail")
        )

    return table_from_records(sorted(rows, key=order), EXCLUDED_SCHEMA)


def _remove_stale_configs(dataset: DatasetFolder, modalities: Sequence[str]) -> None:
    """Shard folders of modalities an earlier build had and this one has not."""
    for folder in dataset.modality_folders():
        if folder.name not in modalities:
            for shard in folder.glob(shard_glob()):
                shard.unlink()
            if not any(folder.iterdir()):
                folder.rmdir()

"""Data shards: one config's rows as Parquet files that ``datasets.load_dataset`` decodes.

A config's rows (image-table columns plus the payload columns: the voxel columns, each a NIfTI
``.nii.gz`` in the ``{"bytes", "path"}`` layout of the ``datasets.Nifti`` feature, and the
preview, a PNG in the same layout of the ``datasets.Image`` feature) are sorted by image quality
score (best first, unscored last, ties by image id), cut into shards of about ``shard_bytes`` of
voxels and, inside a shard, row groups of about ``row_group_bytes``; each file is named by
:func:`~openmind_data.dataset_folder.shard_name`, as the Hub's data-file conventions expect. The
schema carries the ``datasets`` features (``Nifti`` for the voxel columns, ``Image`` for the
preview) in its ``huggingface`` metadata, so the folder loads without a loading script.

A shard appears atomically: written under a hidden temporary name in the same folder, flushed
to disk (fsync), renamed, and the folder's entry flushed too; a half-written file is never
visible under its final name. The same rows always give the same bytes. Each file has a page
index, so a reader that wants some rows of a row group (the Hub's viewer) reads their pages.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache, partial
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from openmind_data.dataset_folder import shard_glob, shard_name
from openmind_data.durable import fsync_path, write_with
from openmind_data.errors import ConfigError
from openmind_data.schema import (
    PAYLOAD_COLUMNS,
    PREVIEW_COLUMN,
    SHARD_SCHEMA,
    VOXEL_COLUMNS,
    table_from_records,
)

__all__ = [
    "ShardOptions",
    "ShardRow",
    "parquet_options",
    "shard_schema",
    "with_features",
    "write_parquet",
    "write_shard_rows",
    "write_shards",
]

MIB = 1 << 20


@dataclass(frozen=True)
class ShardOptions:
    """Target sizes in bytes of voxel payload (the compressed NIfTI bytes dominate a row)."""

    row_group_bytes: int = 100 * MIB
    shard_bytes: int = 500 * MIB

    def __post_init__(self) -> None:
        if self.row_group_bytes <= 0 or self.shard_bytes < self.row_group_bytes:
            raise ConfigError(
                "shard sizes: need 0 < row_group_bytes <= shard_bytes, got "
                f"{self.row_group_bytes} and {self.shard_bytes}"
            )


@lru_cache(maxsize=1)
def shard_schema() -> pa.Schema:
    """The shard schema with the ``datasets`` features in its metadata (``Nifti`` voxels, an
    ``Image`` preview)."""
    return with_features(SHARD_SCHEMA)


def with_features(schema: pa.Schema) -> pa.Schema:
    """``schema`` with the ``datasets`` features its payload columns have (``Nifti`` for the
    voxel columns, ``Image`` for the preview) in its ``huggingface`` metadata."""
    import datasets  # noqa: PLC0415 - only the build needs it

    features = datasets.Features.from_arrow_schema(schema)
    for column in VOXEL_COLUMNS:
        if column in features:
            features[column] = datasets.Nifti()
    if PREVIEW_COLUMN in features:
        features[PREVIEW_COLUMN] = datasets.Image()
    info = {"info": {"features": features.to_dict()}}
    return schema.with_metadata(
        {**(schema.metadata or {}), b"huggingface": json.dumps(info).encode()}
    )


@dataclass(frozen=True)
class ShardRow:
    """One row of a shard before its payload is read: its image-table columns, the size of its
    payload columns in bytes, and how to read them (called when its row group is written, so
    only one row group's voxels are in memory at a time): a mapping of column to ``{"bytes",
    "path"}`` or None, or a one-row Arrow table of the payload columns (the journal's, whose
    bytes then go into the shard without being copied into Python objects and back)."""

    row: Mapping[str, Any]
    size: int
    voxels: Callable[[], Mapping[str, Any] | pa.Table]


def _voxel_bytes(row: Mapping[str, Any]) -> int:
    return sum(len((row.get(c) or {}).get("bytes") or b"") for c in PAYLOAD_COLUMNS)


def _order(entry: ShardRow) -> tuple[bool, float, str]:
    score = entry.row.get("image_quality_score")
    return (score is None, score if score is not None else 0.0, str(entry.row["image_id"]))


def _cut(entries: Sequence[ShardRow], limit: int) -> list[list[ShardRow]]:
    """Consecutive groups of rows of at most ``limit`` voxel bytes (at least one row each)."""
    groups: list[list[ShardRow]] = []
    size = 0
    for entry in entries:
        if not groups or (size + entry.size > limit and groups[-1]):
            groups.append([])
            size = 0
        groups[-1].append(entry)
        size += entry.size
    return groups


def _voxels_of(row: Mapping[str, Any]) -> dict[str, Any]:
    return {column: row.get(column) for column in PAYLOAD_COLUMNS}


def write_shards(
    rows: Sequence[Mapping[str, Any]],
    folder: str | Path,
    options: ShardOptions | None = None,
    *,
    split: str = "train",
) -> list[Path]:
    """Write one config's rows, voxel columns included, into ``folder`` (e.g. ``data/T1w``);
    returns the shard paths. See :func:`write_shard_rows`."""
    entries = [ShardRow(row, _voxel_bytes(row), partial(_voxels_of, row)) for row in rows]
    return write_shard_rows(entries, folder, options, split=split)


def write_shard_rows(
    entries: Sequence[ShardRow],
    folder: str | Path,
    options: ShardOptions | None = None,
    *,
    split: str = "train",
) -> list[Path]:
    """Write one split of one config into ``folder``; returns the shard paths. Shards of this
    split that the new set does not name (an earlier run's) are removed, so the folder holds
    exactly one consistent set; no rows leave none. One writer per folder at a time (the
    build's journal lock sees to it): a temporary file left by a killed writer is removed."""
    options = options or ShardOptions()
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for leftover in folder.glob(f".{split}-*.partial"):  # what a killed writer left
        leftover.unlink()
    ordered = sorted(entries, key=_order)
    shards = _cut(ordered, options.shard_bytes) if ordered else []
    schema = shard_schema()
    paths = []
    for index, shard in enumerate(shards):
        path = folder / shard_name(index, len(shards), split)
        groups = (_row_group(group, schema) for group in _cut(shard, options.row_group_bytes))
        write_parquet(path, groups, schema)
        paths.append(path)
    for stale in folder.glob(shard_glob(split)):
        if stale not in paths:
            stale.unlink()
    fsync_path(folder)
    return paths


def _row_group(entries: Sequence[ShardRow], schema: pa.Schema) -> pa.Table:
    """One row group of ``schema``: the rows' image-table columns, then their payload columns."""
    image_part, payload_part = _parts(schema)
    rows = [{k: v for k, v in e.row.items() if k not in PAYLOAD_COLUMNS} for e in entries]
    table = table_from_records(rows, image_part)
    # One chunk a column, as a table built from records has: the writer's pages follow chunks.
    voxels = pa.concat_tables(
        [_payload_table(e.voxels(), payload_part) for e in entries]
    ).combine_chunks()
    return pa.Table.from_arrays([*table.columns, *voxels.columns], schema=schema)


@lru_cache(maxsize=4)
def _parts(schema: pa.Schema) -> tuple[pa.Schema, pa.Schema]:
    """``schema`` cut in two: its image-table columns, its payload columns (the last ones)."""
    payload = [schema.field(name) for name in PAYLOAD_COLUMNS]
    if schema.names[-len(payload) :] != list(PAYLOAD_COLUMNS):
        raise ValueError(f"the payload columns must come last, got {schema.names}")
    rest = [field for field in schema if field.name not in PAYLOAD_COLUMNS]
    return pa.schema(rest, metadata=schema.metadata), pa.schema(payload, metadata=schema.metadata)


def _payload_table(voxels: Mapping[str, Any] | pa.Table, schema: pa.Schema) -> pa.Table:
    if isinstance(voxels, pa.Table):
        return voxels.select(schema.names).cast(schema)
    # Through the schema's own checks: a cell that is not a payload names its column.
    return table_from_records([{c: voxels.get(c) for c in schema.names}], schema)


def parquet_options(schema: pa.Schema) -> dict[str, Any]:
    """Writer options for a table with payload columns: zstd, dictionaries and statistics for
    every column but the NIfTI and PNG bytes, which are deflated already, unique and up to
    megabytes long (zstd would gain nothing, a dictionary would hash them whole, and min/max
    statistics of them mean nothing)."""
    leaves = _leaf_paths(schema)
    plain = [p for p in leaves if not _is_payload(p)]
    return {
        "compression": {p: "zstd" if p in plain else "none" for p in leaves},
        "use_dictionary": plain,
        "write_statistics": plain,
    }


def _is_payload(path: str) -> bool:
    column, _, leaf = path.partition(".")
    return column in PAYLOAD_COLUMNS and leaf == "bytes"


@lru_cache(maxsize=4)
def _leaf_paths(schema: pa.Schema) -> tuple[str, ...]:
    """Dotted paths of a schema's Parquet leaf columns (``image.bytes``, ``provenance.list.
    element.step``, ...): per-column writer options are keyed by them."""
    buffer = pa.BufferOutputStream()
    pq.write_table(schema.empty_table(), buffer)
    found = pq.ParquetFile(pa.BufferReader(buffer.getvalue())).schema
    return tuple(found.column(i).path for i in range(len(found)))


def write_parquet(path: Path, groups: Iterable[pa.Table], schema: pa.Schema) -> None:
    """``groups`` as the row groups of one file at ``path``, written atomically with the
    payload-aware options and a page index."""

    def write(partial: Path) -> None:
        options = parquet_options(schema)
        with pq.ParquetWriter(partial, schema, write_page_index=True, **options) as writer:
            for group in groups:
                writer.write_table(group, row_group_size=max(group.num_rows, 1))

    write_with(path, write)

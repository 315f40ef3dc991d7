"""The previews config: every image's preview with its image-table columns and no voxels.

The Hub's dataset viewer has no case for NIfTI cells (its cell conversion raises on a feature
it does not know), so it can show no row of a data config; this config it can show, and it
lets anyone look at a collection before downloading a voxel of it. Its files (named as the
shards are, in the folder's previews folder: :mod:`openmind_data.dataset_folder`) have the
preview column first, rows sorted by modality,
then IQS (best first, unscored last), then image id; row groups of :data:`ROWS_PER_GROUP`
rows, so the viewer's first-rows scan (100 rows, every column) reads one row group of a few
megabytes; a page index, so a page of rows reads only its pages; at most :data:`ROWS_PER_FILE`
rows per file. Written whole, like the shards (:mod:`openmind_data.curate.shards`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any

import pyarrow as pa

from openmind_data.curate.shards import with_features, write_parquet
from openmind_data.dataset_folder import shard_glob, shard_name
from openmind_data.durable import fsync_path
from openmind_data.schema import PREVIEW_COLUMN, PREVIEWS_SCHEMA, SPLITS, table_from_records

__all__ = ["ROWS_PER_FILE", "ROWS_PER_GROUP", "previews_schema", "write_previews"]

ROWS_PER_GROUP = 100
ROWS_PER_FILE = 10_000


@lru_cache(maxsize=1)
def previews_schema() -> pa.Schema:
    """The previews schema with its ``datasets`` features (an ``Image`` preview)."""
    return with_features(PREVIEWS_SCHEMA)


def _order(row: Mapping[str, Any]) -> tuple[str, bool, float, str]:
    score = row.get("image_quality_score")
    return (str(row["modality"]), score is None, score or 0.0, str(row["image_id"]))


def write_previews(
    rows: Sequence[Mapping[str, Any]],
    preview_of: Callable[[str], Mapping[str, Any] | None],
    folder: str | Path,
) -> list[Path]:
    """Write the previews of ``rows`` (image-table rows) into ``folder``; ``preview_of(image
    id)`` gives a row's preview cell. Files of a split the rows no longer have are removed."""
    folder = Path(folder)
    schema = previews_schema()
    written: list[Path] = []
    for split in SPLITS:
        chosen = sorted((r for r in rows if r["split"] == split), key=_order)
        files = [chosen[i : i + ROWS_PER_FILE] for i in range(0, len(chosen), ROWS_PER_FILE)]
        paths = [folder / shard_name(i, len(files), split) for i in range(len(files))]
        for path, part in zip(paths, files, strict=True):
            groups = (
                table_from_records(
                    [
                        {**row, PREVIEW_COLUMN: preview_of(str(row["image_id"]))}
                        for row in part[i : i + ROWS_PER_GROUP]
                    ],
                    schema,
                )
                for i in range(0, len(part), ROWS_PER_GROUP)
            )
            write_parquet(path, groups, schema)
        for stale in folder.glob(shard_glob(split)):
            if stale not in paths:
                stale.unlink()
        written += paths
    if folder.is_dir():
        fsync_path(folder)
    return written

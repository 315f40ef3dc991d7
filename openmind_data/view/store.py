"""A dataset folder or Hub repo as the QC browser reads it: its metadata tables whole, its
shards by range. An image is found from the shards' footers (rows are sorted by IQS, so a row
group's IQS statistics say whether it can hold the image) and read from its row group alone,
only the columns asked for."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from openmind_data.dataset_folder import DATA, DatasetFolder, table_path
from openmind_data.errors import ConfigError

__all__ = ["Location", "Store"]


@dataclass(frozen=True)
class Location:
    """Where an image's row is: a shard, its row group, the row within the group."""

    shard: str
    group: int
    row: int


@dataclass(frozen=True)
class _Group:
    index: int
    rows: int
    low: float | None  # IQS statistics (None: not written or all null)
    high: float | None
    nulls: int


class Store:
    """``source``: a dataset as :class:`~openmind_data.dataset_folder.DatasetFolder` names one
    (a folder here, ``ORG/NAME``, ``hf://datasets/ORG/NAME``). Footers and locations are
    cached; reads are safe from several threads."""

    def __init__(self, source: str | Path | DatasetFolder, *, revision: str | None = None) -> None:
        self.dataset = DatasetFolder.at(source, revision=revision)
        self.name = self.dataset.name
        self.filesystem: Any = self.dataset.filesystem
        self._footers: dict[str, pq.FileMetaData] = {}
        self._found: dict[str, Location] = {}
        self._lock = threading.Lock()

    def _open(self, path: str) -> Any:
        """A shard opened for range reads: over the Hub, each read fetches the bytes asked for
        and no more (no read-ahead block), so a row group costs what it holds."""
        if self.dataset.is_local:
            return Path(path).open("rb")
        return self.filesystem.open(path, "rb", cache_type="none")

    # -- the metadata tables ------------------------------------------------------------
    def table(self, name: str) -> pa.Table:
        """The metadata table ``name`` (images, excluded, sources) in its schema."""
        return self.dataset.table(name)

    # -- the shards -----------------------------------------------------------------------
    @cached_property
    def shards(self) -> dict[tuple[str, str], list[str]]:
        """(modality, split) -> its shard paths, sorted (the order of their rows)."""
        found = self.dataset.shard_files()
        return {
            (modality, split): paths
            for modality, by_split in sorted(found.items())
            for split, paths in sorted(by_split.items())
        }

    def locate(self, row: dict[str, Any]) -> Location:
        """Where the image-table ``row`` is in the shards (its modality's and split's)."""
        image_id = str(row["image_id"])
        if image_id in self._found:
            return self._found[image_id]
        score = row.get("image_quality_score")
        for shard in self.shards.get((str(row["modality"]), str(row["split"])), []):
            for group in self._groups(shard):
                if not _may_hold(group, score):
                    continue
                ids = self._read(shard, group.index, ["image_id"]).column(0).to_pylist()
                if image_id in ids:
                    found = Location(shard, group.index, ids.index(image_id))
                    self._found[image_id] = found
                    return found
        raise ConfigError(
            f"{self.name}: image {image_id} is in {table_path('images')} but in no shard of "
            f"{DATA}/{row['modality']}/ ({row['split']})"
        )

    def cells(self, where: Location, columns: Sequence[str]) -> dict[str, Any]:
        """The ``columns`` of one row, read from its row group alone."""
        table = self._read(where.shard, where.group, list(columns))
        row: dict[str, Any] = table.slice(where.row, 1).to_pylist()[0]
        return row

    def _footer(self, shard: str) -> pq.FileMetaData:
        """A shard's footer, read once: every later read of the shard reuses it."""
        with self._lock:
            if shard not in self._footers:
                with self._open(shard) as handle:
                    self._footers[shard] = pq.ParquetFile(handle).metadata
            return self._footers[shard]

    def _groups(self, shard: str) -> list[_Group]:
        metadata = self._footer(shard)
        leaves = [metadata.schema.column(i).path for i in range(metadata.num_columns)]
        column = leaves.index("image_quality_score")
        groups = []
        for index in range(metadata.num_row_groups):
            group = metadata.row_group(index)
            stats = group.column(column).statistics
            known = stats is not None and stats.has_min_max
            groups.append(
                _Group(
                    index,
                    group.num_rows,
                    float(stats.min) if known else None,
                    float(stats.max) if known else None,
                    int(stats.null_count) if stats is not None else group.num_rows,
                )
            )
        return groups

    def _read(self, shard: str, group: int, columns: list[str]) -> pa.Table:
        metadata = self._footer(shard)
        with self._open(shard) as handle:
            file = pq.ParquetFile(handle, metadata=metadata)
            table: pa.Table = file.read_row_group(group, columns=columns)
        return table


def _may_hold(group: _Group, score: float | None) -> bool:
    """Whether a row group's statistics allow a row of IQS ``score`` (None: unscored)."""
    if score is None:
        return group.nulls > 0
    if group.low is None or group.high is None:
        return group.nulls < group.rows  # no statistics: look inside
    return group.low <= float(score) <= group.high

"""The build's journal: finished units of work, kept on disk so a killed build resumes.

It lives in ``OUT/.build/`` (a hidden folder, left out of an upload) and holds:

- ``journal.json``: the format and the fingerprint of the build's options; a resume with other
  options is refused rather than mixing two builds.
- ``batches/NNNNNNNN/``: one committed batch of units: ``units.parquet`` (the candidates done:
  dataset, source path, candidate key), ``published.parquet`` (their image rows with voxel
  columns, one row per row group so a shard reads any row alone) and ``excluded.parquet``.
  A batch is written into a hidden folder, every file flushed to disk, then renamed into
  place: a batch is wholly there or not at all, whenever the build is killed.
- ``lock``: held (``flock``) while a build runs, so two builds never write one journal.

A candidate's key hashes its whole crawl row, so a file whose header, sidecar or licence
changed is processed again; a candidate that is no longer crawled is left out of the output,
though its batch stays. Nothing in the journal is a wall-clock time; batches are numbered in
the order they were written, which depends on scheduling, but the output never does.

The stage commands (``openmind dwi|masks|quality score``) journal their items with the same
class, in batches of their own tables (:mod:`openmind_data.stages.journal`).
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import shutil
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import pyarrow as pa
import pyarrow.parquet as pq

from openmind_data.curate.shards import parquet_options
from openmind_data.dataset_folder import JOURNAL
from openmind_data.durable import fsync_path, write_atomic
from openmind_data.errors import ConfigError
from openmind_data.schema import (
    EXCLUDED_SCHEMA,
    PAYLOAD_COLUMNS,
    SHARD_SCHEMA,
    read_table,
    table_from_records,
)

__all__ = ["JOURNAL_FORMAT", "Journal", "JournalRows", "candidate_key"]

JOURNAL_FORMAT = "openmind-build-journal/1"

UNITS_SCHEMA = pa.schema(
    [
        pa.field("dataset_id", pa.string(), nullable=False),
        pa.field("source_path", pa.string(), nullable=False),
        pa.field("candidate_key", pa.string(), nullable=False),
    ]
)


def candidate_key(row: Mapping[str, Any]) -> str:
    """A hash of a candidate's whole crawl row: what the unit of work was given."""
    text = json.dumps(row, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:32]


@dataclass
class JournalRows:
    """What the journal holds for the current candidates, without voxels.

    ``published`` has the image-table columns plus ``_batch`` and ``_row`` (where the voxels
    are) and ``_bytes`` (their size, from the file's metadata); ``excluded`` is in the
    exclusion-table schema.
    """

    published: pa.Table
    excluded: pa.Table


class Journal:
    """The journal of one output folder (see the module's docstring)."""

    def __init__(self, out: str | Path, fingerprint: Mapping[str, Any]) -> None:
        self.folder = Path(out) / JOURNAL
        self.batches = self.folder / "batches"
        self.fingerprint = json.loads(json.dumps(fingerprint, sort_keys=True, default=str))
        self._lock: IO[bytes] | None = None
        self._next = 0

    # -- opening -------------------------------------------------------------------------

    def open(self, *, fresh: bool = False) -> Journal:
        """Take the lock, check the fingerprint (or start over when ``fresh``), drop what a
        killed build left half-written."""
        self.folder.mkdir(parents=True, exist_ok=True)
        self._lock = (self.folder / "lock").open("wb")
        try:
            fcntl.flock(self._lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as error:
            self._lock.close()
            self._lock = None
            raise ConfigError(f"{self.folder.parent}: another build is writing there") from error
        header = self.folder / "journal.json"
        wanted = {"format": JOURNAL_FORMAT, "fingerprint": self.fingerprint}
        if fresh and self.batches.exists():
            shutil.rmtree(self.batches)
        if header.exists() and not fresh:
            found = json.loads(header.read_text())
            if found != wanted:
                raise ConfigError(_mismatch(header, found, wanted))
        else:
            write_atomic(header, (json.dumps(wanted, indent=2, sort_keys=True) + "\n").encode())
        self.batches.mkdir(exist_ok=True)
        for partial in self.batches.glob(".*"):
            shutil.rmtree(partial, ignore_errors=True)
        numbers = [int(p.name) for p in self.batches.iterdir() if p.name.isdigit()]
        self._next = max(numbers, default=-1) + 1
        return self

    def close(self) -> None:
        if self._lock is not None:
            fcntl.flock(self._lock, fcntl.LOCK_UN)
            self._lock.close()
            self._lock = None

    def __enter__(self) -> Journal:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- writing -------------------------------------------------------------------------

    def commit(
        self,
        units: Sequence[Mapping[str, str]],
        published: Sequence[Mapping[str, Any]],
        excluded: Sequence[Mapping[str, Any]],
    ) -> None:
        """Add one batch: ``units`` (dataset_id, source_path, candidate_key), their published
        rows (image-table columns plus voxel columns as ``{"bytes", "path"}``) and exclusions."""
        if not units:
            return
        table = table_from_records(published, SHARD_SCHEMA)
        self.write_batch(
            {
                "units.parquet": pa.Table.from_pylist(list(units), schema=UNITS_SCHEMA),
                # One row per row group, so a shard reads any row alone.
                "published.parquet": (
                    table,
                    {"row_group_size": 1, **parquet_options(table.schema)},
                ),
                "excluded.parquet": table_from_records(excluded, EXCLUDED_SCHEMA),
            }
        )

    def write_batch(
        self, tables: Mapping[str, pa.Table | tuple[pa.Table, Mapping[str, Any]]]
    ) -> None:
        """Commit one batch of named Parquet files (a table, or a table and ``pq.write_table``
        options): written into a hidden folder, each flushed, then the folder renamed into
        place, so a batch is wholly there or not at all."""
        name = f"{self._next:08d}"
        partial = self.batches / f".{name}"
        shutil.rmtree(partial, ignore_errors=True)
        partial.mkdir()
        for file, given in tables.items():
            table, options = given if isinstance(given, tuple) else (given, {})
            pq.write_table(table, partial / file, **options)
        for path in partial.iterdir():
            fsync_path(path)
        fsync_path(partial)
        partial.rename(self.batches / name)
        fsync_path(self.batches)
        self._next += 1

    # -- reading -------------------------------------------------------------------------

    def done(self) -> dict[tuple[str, str], tuple[str, str]]:
        """(dataset_id, source_path) -> (candidate key, batch) of every unit journaled; where a
        unit was journaled twice (a changed file), the latest batch wins."""
        found: dict[tuple[str, str], tuple[str, str]] = {}
        for batch in self.committed():
            for row in pq.read_table(batch / "units.parquet").to_pylist():
                found[(row["dataset_id"], row["source_path"])] = (row["candidate_key"], batch.name)
        return found

    def rows(self, keys: Mapping[tuple[str, str], str]) -> JournalRows:
        """The journaled rows of the candidates ``keys`` ((dataset_id, source_path) -> key)."""
        done = self.done()
        wanted: dict[str, set[tuple[str, str]]] = {}
        for where, key in keys.items():
            if where in done and done[where][0] == key:
                wanted.setdefault(done[where][1], set()).add(where)
        metadata = [name for name in SHARD_SCHEMA.names if name not in PAYLOAD_COLUMNS]
        published: list[pa.Table] = []
        excluded: list[pa.Table] = []
        for batch, members in sorted(wanted.items()):
            folder = self.batches / batch
            table = pq.read_table(folder / "published.parquet", columns=metadata)
            table = table.append_column("_batch", pa.array([batch] * table.num_rows, pa.string()))
            table = table.append_column("_row", pa.array(range(table.num_rows), pa.int64()))
            table = table.append_column("_bytes", pa.array(_voxel_sizes(folder), pa.int64()))
            published.append(_members(table, members))
            excluded.append(
                _members(read_table(folder / "excluded.parquet", EXCLUDED_SCHEMA), members)
            )
        located = pa.schema(
            [
                *(SHARD_SCHEMA.field(n) for n in metadata),
                ("_batch", pa.string()),
                ("_row", pa.int64()),
                ("_bytes", pa.int64()),
            ]
        )
        return JournalRows(
            published=_concat(published, located), excluded=_concat(excluded, EXCLUDED_SCHEMA)
        )

    def voxels(
        self, batch: str, row: int, columns: Sequence[str] = PAYLOAD_COLUMNS
    ) -> dict[str, Any]:
        """The payload ``columns`` (voxels and preview, ``{"bytes", "path"}`` or null) of one
        journaled row."""
        file = pq.ParquetFile(self.batches / batch / "published.parquet")
        group = file.read_row_group(row, columns=list(columns))
        return {column: group.column(column)[0].as_py() for column in columns}

    def payload(self, batch: str, row: int) -> pa.Table:
        """The payload columns of one journaled row as a one-row table, read without copying
        the bytes into Python objects (what a shard's row group is made of)."""
        file = pq.ParquetFile(self.batches / batch / "published.parquet")
        return file.read_row_group(row, columns=list(PAYLOAD_COLUMNS))

    def committed(self) -> Iterator[Path]:
        """The committed batches' folders, oldest first."""
        if not self.batches.exists():
            return
        yield from sorted(p for p in self.batches.iterdir() if p.name.isdigit())


def _members(table: pa.Table, members: set[tuple[str, str]]) -> pa.Table:
    pairs = zip(
        table.column("dataset_id").to_pylist(), table.column("source_path").to_pylist(), strict=True
    )
    keep = [i for i, pair in enumerate(pairs) if pair in members]
    return table.take(pa.array(keep, type=pa.int64()))


def _voxel_sizes(folder: Path) -> list[int]:
    """Bytes of the payload columns of each row (one row per row group), without reading them."""
    metadata = pq.ParquetFile(folder / "published.parquet").metadata
    names = [metadata.schema.column(i).path.split(".")[0] for i in range(metadata.num_columns)]
    voxel = [i for i, name in enumerate(names) if name in PAYLOAD_COLUMNS]
    return [
        sum(metadata.row_group(g).column(i).total_uncompressed_size for i in voxel)
        for g in range(metadata.num_row_groups)
        if metadata.row_group(g).num_rows  # an empty table is written as one empty group
    ]


def _concat(tables: list[pa.Table], empty: pa.Schema) -> pa.Table:
    return pa.concat_tables(tables) if tables else empty.empty_table()


def _mismatch(header: Path, found: Mapping[str, Any], wanted: Mapping[str, Any]) -> str:
    old = found.get("fingerprint", {})
    new = wanted["fingerprint"]
    differ = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
    if found.get("format") != wanted["format"]:
        differ.insert(0, "format")
    return (
        f"{header}: this folder's journal is of a build with other settings "
        f"(differ: {', '.join(differ)}); run with the same settings to resume, "
        "or with --fresh to start over"
    )

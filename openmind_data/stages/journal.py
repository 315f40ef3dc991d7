"""The stage commands' journal: the items a command finished, so a killed command resumes.

``openmind dwi|masks`` (and ``quality score``) keep it in ``OUT/.build/``, with the build's own
journal format (:class:`~openmind_data.curate.journal.Journal`: the lock, the fingerprint
check, batches that are wholly there or not at all). A batch of finished items holds:

- ``items.parquet``: each item's key (a hash of its whole input row) and how many image rows
  and exclusion rows it gave, in the order of the two tables below;
- ``images.parquet`` and ``excluded.parquet``: those rows.

An item's files are written before its batch is committed, so every journaled item's files are
on disk. The fingerprint is the command's stages with their options: running with other
options is refused (``--fresh`` starts over), as for the build.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from openmind_data.curate.journal import Journal, candidate_key
from openmind_data.schema import EXCLUDED_SCHEMA, IMAGE_SCHEMA, read_table, table_from_records
from openmind_data.stages.base import Item, Published, Stage, UnitResult

__all__ = ["StageJournal", "item_key"]

ITEMS_SCHEMA = pa.schema(
    [
        pa.field("item_key", pa.string(), nullable=False),
        pa.field("images", pa.int32(), nullable=False),
        pa.field("excluded", pa.int32(), nullable=False),
    ]
)


def item_key(item: Item) -> str:
    """What an item's result depends on besides the options: its whole input row and file."""
    return candidate_key({**item.row, "_source": str(item.source), "_root": str(item.root)})


class StageJournal:
    """The journal of one stage command's output folder (see the module's docstring)."""

    def __init__(
        self, out: str | Path, name: str, stages: Sequence[Stage], *, batch: int = 16
    ) -> None:
        from openmind_data import __version__  # noqa: PLC0415 - a cycle at import time

        fingerprint = {
            "command": name,
            "openmind_data": __version__,
            "stages": [repr(stage) for stage in stages],
        }
        self._journal = Journal(out, fingerprint)
        self._batch = batch
        self._pending: list[tuple[str, UnitResult]] = []

    def open(self, *, fresh: bool = False) -> StageJournal:
        self._journal.open(fresh=fresh)
        return self

    def close(self) -> None:
        """Commit the items added since the last batch (their files are written, even when
        the run stops on an error), then let the folder go."""
        self.commit(self._pending)
        self._pending = []
        self._journal.close()

    def add(self, key: str, result: UnitResult) -> None:
        """One finished item, whose files are written; a batch is committed every ``batch``."""
        self._pending.append((key, result))
        if len(self._pending) >= self._batch:
            self.commit(self._pending)
            self._pending = []

    def commit(self, finished: Sequence[tuple[str, UnitResult]]) -> None:
        """Add one batch of finished items: (item key, its result)."""
        if not finished:
            return
        items = [
            {"item_key": key, "images": len(r.published), "excluded": len(r.excluded)}
            for key, r in finished
        ]
        images = [p.row for _, r in finished for p in r.published]
        excluded = [e for _, r in finished for e in r.excluded]
        self._journal.write_batch(
            {
                "items.parquet": pa.Table.from_pylist(items, schema=ITEMS_SCHEMA),
                "images.parquet": table_from_records(images, IMAGE_SCHEMA),
                "excluded.parquet": table_from_records(excluded, EXCLUDED_SCHEMA),
            }
        )

    def results(self) -> dict[str, UnitResult]:
        """Item key -> its journaled rows (no files: they are on disk); the latest batch wins."""
        found: dict[str, UnitResult] = {}
        for batch in self._journal.committed():
            items = pq.read_table(batch / "items.parquet").to_pylist()
            images = iter(read_table(batch / "images.parquet", IMAGE_SCHEMA).to_pylist())
            excluded = iter(read_table(batch / "excluded.parquet", EXCLUDED_SCHEMA).to_pylist())
            for item in items:
                found[item["item_key"]] = UnitResult(
                    published=[Published(next(images)) for _ in range(item["images"])],
                    excluded=[next(excluded) for _ in range(item["excluded"])],
                )
        return found

"""Running a pipeline of stages over many items on an executor: the stage commands' runner.

Each item goes through the stages in a worker (:func:`~openmind_data.stages.base.run_stages`);
the files its stages give are written here, by this process alone, as results come back, and
the rows are put in the items' order, so the output does not depend on the executor. A worker
that dies twice on an item (see :mod:`openmind_data.executors`) excludes that item alone.

With ``journal=True`` finished items are journaled in the output folder as they come back
(:mod:`~openmind_data.stages.journal`): a command killed at any moment, run again, runs only
the items it had not finished and gives the same tables.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from contextlib import closing, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypedDict, Unpack

import pyarrow as pa
from tqdm import tqdm

from openmind_data.durable import write_atomic
from openmind_data.errors import ConfigError
from openmind_data.exclusions import ExclusionReason, exclusion_row
from openmind_data.executors import Executor, WorkerDied, make_executor
from openmind_data.schema import EXCLUDED_SCHEMA, IMAGE_SCHEMA, table_from_records, write_table
from openmind_data.stages.base import Item, Stage, UnitResult, run_stages

__all__ = ["Running", "StageResult", "run_pipeline"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class StageResult:
    """What a stage command made: its image-table rows and exclusion rows. ``voxels`` maps an
    image id to the file holding the voxels to publish (the masks command's); ``summary``
    holds the command's own counts for people."""

    stage: str
    images: pa.Table
    excluded: pa.Table
    voxels: dict[str, Path] = field(default_factory=dict)
    summary: dict[str, object] = field(default_factory=dict)

    def counts(self) -> dict[str, object]:
        def tally(table: pa.Table, column: str) -> dict[str, int]:
            return dict(sorted(Counter(map(str, table.column(column).to_pylist())).items()))

        return {
            f"{self.stage} images": self.images.num_rows,
            f"{self.stage} images_by_modality": tally(self.images, "modality"),
            **self.summary,
            f"{self.stage} excluded": self.excluded.num_rows,
            f"{self.stage} excluded_by_reason": tally(self.excluded, "reason"),
        }

    def write(self, out: str | Path) -> dict[str, Path]:
        """``<stage>.parquet`` and ``<stage>.excluded.parquet`` in ``out``."""
        paths = {
            "images": Path(out) / f"{self.stage}.parquet",
            "excluded": Path(out) / f"{self.stage}.excluded.parquet",
        }
        write_table(self.images, paths["images"])
        write_table(self.excluded, paths["excluded"])
        return paths


class Running(TypedDict, total=False):
    """How a stage command runs, whatever it does; every ``run_*`` of a stage takes these.

    ``executor`` runs the items (default: ``workers`` local processes, this process at 1);
    ``progress`` shows a bar; ``journal`` resumes from and journals into the output folder (a
    batch every ``journal_items`` finished items), and ``fresh`` discards what it holds."""

    executor: Executor | None
    workers: int
    progress: bool
    journal: bool
    fresh: bool
    journal_items: int


def run_pipeline(
    stages: Sequence[Stage],
    items: Sequence[Item],
    *,
    name: str,
    out: str | Path | None = None,
    unit: str = "image",
    summary: Callable[[pa.Table], Mapping[str, object]] | None = None,
    **running: Unpack[Running],
) -> StageResult:
    """Every item through ``stages`` as ``running`` says (:class:`Running`); the stages' files
    are written under ``out``. ``name`` is the command's stage, for the tables' names and the
    exclusion of an item whose worker died."""
    # The journal is the build's (curate), which runs these stages: imported here, not above.
    from openmind_data.stages.journal import StageJournal, item_key  # noqa: PLC0415

    book = None
    if running.get("journal", False):
        if out is None:
            raise ConfigError(f"{name}: a journaled run needs an output folder")
        book = StageJournal(out, name, stages, batch=running.get("journal_items", 16))
        book.open(fresh=running.get("fresh", False))
    with closing(book) if book is not None else nullcontext():
        keys = [item_key(item) for item in items] if book is not None else []
        done = book.results() if book is not None else {}
        results = {i: done[key] for i, key in enumerate(keys) if key in done}
        todo = [i for i in range(len(items)) if i not in results]
        if results:
            log.info("%s: %d of %d items journaled already", name, len(results), len(items))
        shown = running.get("progress", False)
        bar = tqdm(total=len(todo), desc=name, unit=unit, disable=None if shown else True)
        executor = running.get("executor")
        owned = executor is None
        if executor is None:
            executor = make_executor(workers=running.get("workers", 1))
        with closing(executor) if owned else nullcontext():
            jobs = [(tuple(stages), items[i]) for i in todo]
            for position, outcome in executor.imap_unordered(_run, jobs):
                index = todo[position]
                result = (
                    UnitResult(excluded=[_died(items[index].row, outcome.detail, name)])
                    if isinstance(outcome, WorkerDied)
                    else outcome
                )
                for path, payload in result.files.items():
                    assert out is not None, f"{name}: a stage gave files but the run has no folder"
                    write_atomic(Path(out) / path, payload)
                results[index] = UnitResult(result.published, result.excluded)  # files written
                if book is not None:
                    book.add(keys[index], results[index])
                bar.update()
        bar.close()
    ordered = [results[i] for i in range(len(items))]
    images = table_from_records([p.row for r in ordered for p in r.published], IMAGE_SCHEMA)
    excluded = table_from_records([e for r in ordered for e in r.excluded], EXCLUDED_SCHEMA)
    return StageResult(name, images, excluded, summary=dict(summary(images)) if summary else {})


def _run(job: tuple[tuple[Stage, ...], Item]) -> UnitResult:
    stages, item = job
    return run_stages(stages, item)


def _died(row: dict[str, Any], detail: str, stage: str) -> dict[str, Any]:
    return exclusion_row(row, ExclusionReason.PROCESSING_ERROR, detail, stage=stage)

"""``build(roots, out)``: BIDS datasets in, the OpenMind dataset folder out.

The build crawls the roots, runs the unit of work (:func:`process_candidate`) over every
candidate on an executor, journals finished units as they come back, and then writes the
folder from the journal (:mod:`openmind_data.curate.folder`): duplicates dropped, the split
drawn, shards per modality and split, the metadata tables. Only this process writes.

Killed at any moment, the same call finishes the job: units already journaled are not run
again, and the folder is written from the journal alone, so its bytes do not depend on how
often the build was interrupted or which executor ran it.
"""

from __future__ import annotations

import ctypes
import logging
import math
import multiprocessing
import os
import sys
import time
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import pyarrow as pa
from tqdm import tqdm

from openmind_data.crawl import CrawlResult, crawl, find_datasets
from openmind_data.curate.folder import FolderResult, relative_details, write_folder
from openmind_data.curate.journal import Journal, candidate_key
from openmind_data.curate.shards import ShardOptions
from openmind_data.curate.unit import UnitOptions, UnitResult, process_candidate
from openmind_data.errors import ConfigError
from openmind_data.exclusions import ExclusionReason as R
from openmind_data.exclusions import exclusion_row
from openmind_data.executors import Executor, SerialExecutor, WorkerDied
from openmind_data.quality import load_model
from openmind_data.schema import PREVIEW_COLUMN, SCHEMA_VERSION

__all__ = ["BuildOptions", "BuildResult", "FolderRun", "UnitBatch", "build"]

log = logging.getLogger(__name__)

MIB = 1 << 20


@dataclass(frozen=True)
class BuildOptions:
    """Everything that shapes a build's output, and how often it journals.

    ``validation``/``seed``: the subject-disjoint split. ``licenses``: SPDX ids a dataset must
    carry (None: any). ``journal_units``/``journal_bytes``: a batch of finished units is
    committed to the journal once it holds this many units or voxel bytes, whichever comes
    first; a kill loses at most one batch of work.
    """

    unit: UnitOptions = field(default_factory=UnitOptions)
    shards: ShardOptions = field(default_factory=ShardOptions)
    iqs_model: str | None = None  # a model file (None: the shipped one)
    validation: float = 0.1
    seed: int = 0
    licenses: tuple[str, ...] | None = None
    journal_units: int = 16
    journal_bytes: int = 256 * MIB

    def __post_init__(self) -> None:
        if self.journal_units < 1 or self.journal_bytes < 1:
            raise ConfigError("journal_units and journal_bytes must be positive")
        if not 0.0 <= self.validation < 1.0:
            raise ConfigError(f"the validation share must be in [0, 1), got {self.validation}")

    def fingerprint(self) -> dict[str, Any]:
        """What the journaled units depend on: a resume with another fingerprint is refused.
        The split, the shard sizes, the licence filter and the IQS model are applied when the
        folder is written (the IQS measures each image against its peers, so it needs them
        all), so changing them re-uses every finished unit."""
        from openmind_data import __version__  # noqa: PLC0415 - a cycle at import time

        return {
            "openmind_data": __version__,
            "schema": SCHEMA_VERSION,
            "masks": asdict(self.unit.masks),
            "dwi": asdict(self.unit.dwi),
        }


@dataclass
class FolderRun:
    """What a journaled run of units wrote and did (a build, an import): the folder ``out``,
    ``run`` units this call ran, ``resumed`` units it found in the journal."""

    out: Path
    folder: FolderResult
    run: int
    resumed: int

    @property
    def images(self) -> pa.Table:
        return self.folder.images

    @property
    def excluded(self) -> pa.Table:
        return self.folder.excluded

    def counts(self) -> dict[str, Any]:
        """Counts for people: published per modality and split, excluded by reason, units."""
        images = self.folder.images.select(["modality", "split"]).to_pylist()
        excluded = self.folder.excluded.column("reason").to_pylist()
        return {
            "published": len(images),
            "published_by_modality": dict(sorted(Counter(r["modality"] for r in images).items())),
            "published_by_split": dict(sorted(Counter(r["split"] for r in images).items())),
            "excluded": len(excluded),
            "excluded_by_reason": dict(sorted(Counter(excluded).items())),
            "units_run": self.run,
            "units_resumed": self.resumed,
        }


@dataclass
class BuildResult(FolderRun):
    """What a build wrote and did, with its crawl."""

    crawl: CrawlResult

    def summary(self) -> dict[str, Any]:
        shards = sum(len(paths) for paths in self.folder.shards.values())
        return {"candidates": self.crawl.candidates.num_rows, **self.counts(), "shards": shards}


def build(
    roots: str | Path | Sequence[str | Path],
    out: str | Path,
    options: BuildOptions | None = None,
    *,
    executor: Executor | None = None,
    fresh: bool = False,
    nifti_tree: str | Path | None = None,
    progress: bool = False,
) -> BuildResult:
    """Build the dataset folder ``out`` from the BIDS datasets under ``roots``.

    ``executor`` runs the units (default: this process; see
    :func:`~openmind_data.curate.executors.make_executor`). ``fresh`` discards the journal of
    an earlier build in ``out``; otherwise its finished units are re-used (a resume).
    ``nifti_tree`` also writes the released OpenMind layout there.
    """
    options = options or BuildOptions()
    executor = executor or SerialExecutor()
    if isinstance(roots, str | Path):
        roots = [roots]
    out = Path(out)
    datasets = {path.name: path for path in find_datasets(roots)}
    _check_separate(out, datasets.values(), nifti_tree)
    clock = time.perf_counter()
    crawled = crawl(
        roots,
        # Local processes: a cluster's workers do not crawl (the crawl reads headers only).
        workers=1 if executor.name == "serial" else min(executor.workers, os.cpu_count() or 1),
        licenses=options.licenses,
        progress=progress,
    )
    candidates = crawled.candidates.to_pylist()
    keys = {_where(row): candidate_key(row) for row in candidates}
    with Journal(out, options.fingerprint()).open(fresh=fresh) as journal:
        done = journal.done()
        todo = [row for row in candidates if done.get(_where(row), ("",))[0] != keys[_where(row)]]
        todo.sort(key=_largest_first)
        jobs = [(row, str(datasets[row["dataset_id"]]), options.unit) for row in todo]
        units_from = time.perf_counter()
        _run_units(journal, executor, jobs, keys, options, progress)
        folder_from = time.perf_counter()
        folder = write_folder(
            out,
            crawled,
            journal,
            keys,
            options.shards,
            validation=options.validation,
            seed=options.seed,
            roots={name: str(path) for name, path in datasets.items()},
            iqs_model=load_model(options.iqs_model),
            nifti_tree=nifti_tree,
        )
    # Timings go to the log only: nothing in the folder or the journal depends on the clock.
    log.info(
        "build of %s: crawl %.1f s, %d units on %s %.1f s, folder %.1f s",
        out,
        units_from - clock,
        len(todo),
        executor.name,
        folder_from - units_from,
        time.perf_counter() - folder_from,
    )
    return BuildResult(
        out=out, crawl=crawled, folder=folder, run=len(todo), resumed=len(candidates) - len(todo)
    )


def _where(row: Mapping[str, Any]) -> tuple[str, str]:
    """A candidate's place: its dataset and its path in it."""
    return (row["dataset_id"], row["source_path"])


def _largest_first(row: Mapping[str, Any]) -> tuple[int, str, str]:
    """The order units are handed out in: the most voxels (a DWI series' every volume) first,
    so that the last units to finish are small and the workers finish together."""
    return (-math.prod(row.get("shape") or [0]), *_where(row))


def _unit(job: tuple[dict[str, Any], str, UnitOptions]) -> UnitResult:
    _tune_worker()
    row, root, options = job
    return process_candidate(row, root, options)


#: glibc's malloc settings for a worker (mallopt's parameter numbers): volumes of up to 32 MiB
#: come from the heap, and freed memory stays there for the next image.
_MALLOPT = {-3: 32 * MIB, -1: 1 << 30, -2: 256 * MIB}  # MMAP_THRESHOLD, TRIM_THRESHOLD, TOP_PAD


@lru_cache(maxsize=1)
def _tune_worker() -> None:
    """In a worker process, BLAS, OpenMP, ITK and torch get one thread each: the build runs one
    image per worker, and nested thread pools oversubscribe the cores (measured on 2 cores, 16 T1w
    units: 2 workers ran 1.5x one worker with the libraries' own threads, 1.9x with one thread
    each). And malloc keeps what an image freed for the next one: a unit allocates a few
    gigabytes of volume-sized arrays, and by default each of them is mapped afresh, page fault
    by page fault: about a tenth of a unit's time at 1 mm on a 2-core VM. The next image reuses
    the memory, so a worker's peak stays where the largest image puts it. The driver's
    own process (the serial executor) keeps the user's settings."""
    if multiprocessing.parent_process() is None:
        return
    import SimpleITK as sitk  # noqa: N813, PLC0415 - loaded by the unit already
    from threadpoolctl import threadpool_limits  # noqa: PLC0415

    threadpool_limits(limits=1)
    sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(1)
    # torch (a learned masker's) takes its thread count from OpenMP's when it loads, which is
    # after this: the machine's cores, unless told (2 workers ran deepbet on 4 threads on 2 cores).
    os.environ["OMP_NUM_THREADS"] = "1"
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(1)
    mallopt = getattr(ctypes.CDLL(None), "mallopt", None) if sys.platform == "linux" else None
    if mallopt is not None:  # glibc (musl has none)
        for parameter, value in _MALLOPT.items():
            mallopt(parameter, value)


def _run_units(
    journal: Journal,
    executor: Executor,
    jobs: list[tuple[dict[str, Any], str, UnitOptions]],
    keys: Mapping[tuple[str, str], str],
    options: BuildOptions,
    progress: bool,
) -> None:
    """Run ``jobs`` on ``executor``, committing finished units to the journal in batches."""
    bar = tqdm(total=len(jobs), desc="build", unit="image", disable=None if progress else True)
    batch = UnitBatch()
    for index, outcome in executor.imap_unordered(_unit, jobs):
        row, root, _ = jobs[index]
        result = (
            UnitResult(
                excluded=[exclusion_row(row, R.PROCESSING_ERROR, outcome.detail, stage="build")]
            )
            if isinstance(outcome, WorkerDied)
            else outcome
        )
        batch.add(row, keys[_where(row)], result, root)
        bar.update()
        if len(batch.units) >= options.journal_units or batch.size >= options.journal_bytes:
            batch.commit(journal)
    batch.commit(journal)
    bar.close()


@dataclass
class UnitBatch:
    """Finished units waiting to be committed to the journal as one batch."""

    units: list[dict[str, str]] = field(default_factory=list)
    published: list[dict[str, Any]] = field(default_factory=list)
    excluded: list[dict[str, Any]] = field(default_factory=list)
    size: int = 0

    def add(self, row: Mapping[str, Any], key: str, result: UnitResult, root: str) -> None:
        self.units.append(
            {
                "dataset_id": row["dataset_id"],
                "source_path": row["source_path"],
                "candidate_key": key,
            }
        )
        for item in result.published:
            paths = {"image": item.row["image_path"]} | {
                column: item.row[f"{column}_path"] for column in item.voxels if column != "image"
            }
            cells = {c: {"bytes": b, "path": paths[c]} for c, b in item.voxels.items()}
            if item.preview is not None:
                cells[PREVIEW_COLUMN] = {
                    "bytes": item.preview,
                    "path": f"{item.row['image_id']}.png",
                }
            self.published.append(item.row | cells)
            self.size += sum(len(c["bytes"]) for c in cells.values())
        self.excluded.extend(
            relative_details([dict(r) for r in result.excluded], {row["dataset_id"]: root})
        )

    def commit(self, journal: Journal) -> None:
        journal.commit(self.units, self.published, self.excluded)
        self.units, self.published, self.excluded, self.size = [], [], [], 0


def _check_separate(out: Path, datasets: Iterable[Path], tree: str | Path | None) -> None:
    """The build never writes into the collection it reads, nor reads what it writes."""
    targets = [out.resolve()] + ([Path(tree).resolve()] if tree is not None else [])
    for dataset in datasets:
        source = dataset.resolve()
        for target in targets:
            if target == source or source in target.parents or target in source.parents:
                raise ConfigError(
                    f"{target}: the output must lie outside the datasets it is built from "
                    f"(overlaps {source})"
                )

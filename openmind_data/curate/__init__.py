"""The build: from BIDS roots to the OpenMind dataset folder (:func:`build`).

- :mod:`~openmind_data.curate.unit`: the unit of work, one candidate to its published images
  and their NIfTI bytes (:func:`process_candidate`), pure, so any executor runs it;
- :mod:`~openmind_data.executors`: who runs it (serial, local processes, Dask);
- :mod:`~openmind_data.curate.journal`: finished units on disk, so a killed build resumes;
- :mod:`~openmind_data.curate.folder`: the dataset folder written from the journal, with
  duplicates dropped (:mod:`~openmind_data.curate.dedup`), the subject-disjoint split
  (:mod:`~openmind_data.curate.splits`), the data shards (:mod:`~openmind_data.curate.shards`)
  and, on request, the released layout (:mod:`~openmind_data.curate.tree`);
- :mod:`~openmind_data.curate.run`: :func:`build`, which ties them together.
"""

from openmind_data.curate.dedup import drop_duplicates
from openmind_data.curate.run import BuildOptions, BuildResult, build
from openmind_data.curate.shards import (
    ShardOptions,
    ShardRow,
    shard_schema,
    write_shard_rows,
    write_shards,
)
from openmind_data.curate.splits import SPLITS, assign_splits, split_of
from openmind_data.curate.unit import Published, UnitOptions, UnitResult, process_candidate
from openmind_data.executors import (
    DaskExecutor,
    Executor,
    ProcessExecutor,
    SerialExecutor,
    WorkerDied,
    jobqueue_cluster,
    make_executor,
)
from openmind_data.ids import file_sha256

__all__ = [
    "SPLITS",
    "BuildOptions",
    "BuildResult",
    "DaskExecutor",
    "Executor",
    "ProcessExecutor",
    "Published",
    "SerialExecutor",
    "ShardOptions",
    "ShardRow",
    "UnitOptions",
    "UnitResult",
    "WorkerDied",
    "assign_splits",
    "build",
    "drop_duplicates",
    "file_sha256",
    "jobqueue_cluster",
    "make_executor",
    "process_candidate",
    "shard_schema",
    "split_of",
    "write_shard_rows",
    "write_shards",
]

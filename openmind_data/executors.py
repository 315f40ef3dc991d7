"""Who runs the toolkit's units of work: this process, local processes, or Dask distributed.

An executor maps a picklable function over jobs and yields ``(index, outcome)`` as each job
finishes, with at most ``window`` jobs in flight, so memory stays bounded however many images
there are. The build orders results itself, so its output never depends on the executor or on
the order of arrival.

A worker that dies (killed for memory, a segfault in a native library) does not stop a build:
the jobs it held are run again one at a time, and the one that kills a worker again comes back
as :class:`WorkerDied`, which the build records as an exclusion.

Local workers are started by a fork server, never forked from the build's own process: once
that process has run torch (a learned brain masker, a test before), its OpenMP threads do not
survive a plain fork, and a forked worker that runs torch again hangs or crashes. The server
loads the build's unit once (:data:`FORK_SERVER_PRELOAD`), so a pool's workers start with it
loaded, in milliseconds.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import select
import threading
import time
import tomllib
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Protocol, TypeVar

from tqdm import tqdm

from openmind_data.compression import GZIP_ENV
from openmind_data.errors import ConfigError, OpenMindError

__all__ = [
    "DaskExecutor",
    "Executor",
    "ProcessExecutor",
    "SerialExecutor",
    "WorkerDied",
    "WorkerDiedError",
    "jobqueue_cluster",
    "make_executor",
    "map_ordered",
]

log = logging.getLogger(__name__)

J = TypeVar("J")
R = TypeVar("R")


@dataclass(frozen=True)
class WorkerDied:
    """The outcome of a job whose worker died twice running it."""

    detail: str


class WorkerDiedError(OpenMindError):
    """A job whose worker died twice, where the caller has no exclusion row to make of it."""


class Executor(Protocol):
    name: str

    @property
    def workers(self) -> int:
        """How many jobs run at once."""
        ...

    def imap_unordered(
        self, function: Callable[[J], R], jobs: Iterable[J]
    ) -> Iterator[tuple[int, R | WorkerDied]]: ...

    def close(self) -> None: ...


class SerialExecutor:
    """Every job in this process, in order: for debugging (a breakpoint works)."""

    name = "serial"
    workers = 1

    def imap_unordered(
        self, function: Callable[[J], R], jobs: Iterable[J]
    ) -> Iterator[tuple[int, R | WorkerDied]]:
        for index, job in enumerate(jobs):
            yield index, function(job)

    def close(self) -> None:
        pass


class ProcessExecutor:
    """Local worker processes (the default)."""

    name = "processes"

    def __init__(self, workers: int, *, window: int | None = None) -> None:
        if workers < 1:
            raise ConfigError(f"workers must be at least 1, got {workers}")
        self.workers = workers
        self.window = window or 2 * workers
        self._pool: ProcessPoolExecutor | None = None

    def _fresh_pool(self) -> ProcessPoolExecutor:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
        self._pool = ProcessPoolExecutor(
            max_workers=self.workers,
            mp_context=_START,
            initializer=_start_worker,
            initargs=(os.getpid(), {name: os.environ.get(name) for name in FOLLOWED}),
        )
        return self._pool

    def imap_unordered(
        self, function: Callable[[J], R], jobs: Iterable[J]
    ) -> Iterator[tuple[int, R | WorkerDied]]:
        pool = self._pool or self._fresh_pool()
        pending: dict[Future[R], tuple[int, J]] = {}
        suspects: list[tuple[int, J]] = []
        queue = enumerate(jobs)
        exhausted = False
        while True:
            while not exhausted and len(pending) < self.window:
                item = next(queue, None)
                if item is None:
                    exhausted = True
                    break
                pending[pool.submit(function, item[1])] = item
            if not pending:
                break
            done, _ = wait(pending, return_when=FIRST_COMPLETED)
            broken = False
            for future in done:
                index, job = pending.pop(future)
                try:
                    yield index, future.result()
                except BrokenProcessPool:
                    suspects.append((index, job))
                    broken = True
            if broken:
                # Every job still in flight died with the pool; which one killed it is unknown.
                suspects.extend(pending.values())
                pending.clear()
                pool = self._fresh_pool()
                yield from self._one_at_a_time(function, suspects)
                suspects.clear()
                pool = self._pool or self._fresh_pool()

    def _one_at_a_time(
        self, function: Callable[[J], R], suspects: list[tuple[int, J]]
    ) -> Iterator[tuple[int, R | WorkerDied]]:
        log.warning("a worker process died; running its %d jobs one at a time", len(suspects))
        for index, job in sorted(suspects, key=lambda s: s[0]):
            pool = self._pool or self._fresh_pool()
            try:
                yield index, pool.submit(function, job).result()
            except BrokenProcessPool:
                yield index, WorkerDied("the worker process died while processing this image")
                self._fresh_pool()

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None


#: How local workers start: from a fork server where the platform has one (Linux), else spawned.
_START = multiprocessing.get_context(
    "forkserver" if "forkserver" in multiprocessing.get_all_start_methods() else "spawn"
)
#: What the fork server imports once, when it starts: the build's unit (numpy, scipy,
#: SimpleITK, nibabel, dipy, pyarrow and the toolkit). Its workers are forked with them loaded:
#: a pool starts in about 0.04 s, where each worker importing them itself took 1.8 s, once for
#: the crawl's pool and again for the units' (on 2 cores, 2 workers). The threads they start at
#: import (OpenBLAS's, Arrow's jemalloc's) are remade after a fork by their own libraries, as
#: under the plain 'fork' start method; torch's OpenMP threads are not, so torch is not among
#: them (a learned masker loads it in the worker). None of them reads at import time a setting
#: the workers follow (:data:`FOLLOWED`).
FORK_SERVER_PRELOAD: Final = ("openmind_data.curate.unit",)
if _START.get_start_method() == "forkserver":
    _START.set_forkserver_preload(list(FORK_SERVER_PRELOAD))


#: Settings the build reads from its environment that its workers follow as the build has them
#: when a pool starts: a fork server's workers inherit the server's environment, which is the
#: build's as it was when the server started (the first pool of the process).
FOLLOWED: Final = (GZIP_ENV,)


def _start_worker(build: int, environment: dict[str, str | None]) -> None:
    """A local worker's start: the build's :data:`FOLLOWED` settings, and its exit when the
    build dies."""
    for name, value in environment.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value
    _die_with_build(build)


def _die_with_build(build: int) -> None:
    """Exit this worker when the build (``build``) dies. A build killed with SIGKILL would
    otherwise leave its workers waiting forever on a queue nobody feeds, and with them the fork
    server, which lives while any worker does. A daemon thread waits on the build's pidfd
    (Linux), or asks every second where there is none."""
    try:
        watched = os.pidfd_open(build)
    except (AttributeError, OSError):  # not Linux, or a kernel before 5.3

        def wait() -> None:
            while _alive(build):
                time.sleep(1.0)
            os._exit(1)

    else:

        def wait() -> None:
            select.select([watched], [], [])  # readable once the process has exited
            os._exit(1)

    if not _alive(build):  # it died before the watch began
        os._exit(1)
    threading.Thread(target=wait, name="die-with-build", daemon=True).start()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


class DaskExecutor:
    """Dask distributed: a scheduler address (``tcp://host:8786``), a ``Client`` or a cluster
    object (``LocalCluster``, a dask-jobqueue cluster). Results come back to this process,
    which alone writes; nothing assumes a shared filesystem for the output, but the workers
    must see the source datasets under the same paths."""

    name = "dask"

    def __init__(
        self, target: Any, *, window: int | None = None, owns_cluster: bool = False
    ) -> None:
        try:
            from distributed import Client  # noqa: PLC0415 - an optional extra
        except ImportError as error:  # pragma: no cover - depends on the install
            raise ConfigError(
                "Dask needs the cluster extra: pip install -c constraints.txt '.[cluster]'"
            ) from error
        self._own = not isinstance(target, Client)
        self._cluster = target if owns_cluster else None
        self.client = Client(target) if self._own else target
        self._window = window

    @property
    def workers(self) -> int:
        """Worker threads now: a batch-system cluster grows as its jobs start."""
        threads: dict[str, int] = self.client.nthreads()
        return max(1, sum(threads.values()))

    @property
    def window(self) -> int:
        return self._window or 2 * self.workers

    def imap_unordered(
        self, function: Callable[[J], R], jobs: Iterable[J]
    ) -> Iterator[tuple[int, R | WorkerDied]]:
        from distributed import as_completed  # noqa: PLC0415
        from distributed.scheduler import KilledWorker  # noqa: PLC0415

        queue = enumerate(jobs)
        index_of: dict[Any, int] = {}
        stream = as_completed()
        in_flight = 0
        exhausted = False
        while True:
            window = self.window  # asked once a round: it grows with the cluster
            while not exhausted and in_flight < window:
                item = next(queue, None)
                if item is None:
                    exhausted = True
                    break
                # pure=False: a job is run even when an identical one ran before (a retry).
                future = self.client.submit(function, item[1], pure=False)
                index_of[future.key] = item[0]
                stream.add(future)
                in_flight += 1
            if in_flight == 0:
                break
            future = next(stream)
            in_flight -= 1
            index = index_of.pop(future.key)
            try:
                outcome: R | WorkerDied = future.result()
            except KilledWorker:
                # The scheduler already retried it on fresh workers (distributed's
                # allowed-failures); every one died.
                outcome = WorkerDied("every Dask worker that ran this image died")
            finally:
                future.release()
            yield index, outcome

    def close(self) -> None:
        if self._own:
            self.client.close()
        if self._cluster is not None:
            self._cluster.close()


def jobqueue_cluster(config: str | Path, *, scale: bool = True) -> Any:
    """A dask-jobqueue cluster from a small TOML file, scaled to its ``jobs`` (which submits
    them) unless ``scale`` is false::

    kind = "slurm"          # slurm, pbs, sge, lsf, htcondor, moab, oar
    jobs = 8                # batch jobs to start
    [cluster]               # keyword arguments of the dask-jobqueue cluster class
    cores = 16
    memory = "64GB"
    processes = 8
    walltime = "04:00:00"
    queue = "cpu"
    job_extra_directives = ["--account=my-lab"]
    """
    path = Path(config)
    try:
        settings = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as error:
        raise ConfigError(f"{path}: cannot read the cluster config: {error}") from error
    kinds = {
        "slurm": "SLURMCluster",
        "pbs": "PBSCluster",
        "sge": "SGECluster",
        "lsf": "LSFCluster",
        "htcondor": "HTCondorCluster",
        "moab": "MoabCluster",
        "oar": "OARCluster",
    }
    kind = str(settings.get("kind", "slurm")).lower()
    if kind not in kinds:
        raise ConfigError(f"{path}: kind must be one of {sorted(kinds)}, got {kind!r}")
    jobs = settings.get("jobs", 1)
    if not isinstance(jobs, int) or jobs < 1:
        raise ConfigError(f"{path}: jobs must be a positive integer, got {jobs!r}")
    arguments = settings.get("cluster", {})
    if not isinstance(arguments, dict):
        raise ConfigError(f"{path}: [cluster] must be a table of keyword arguments")
    try:
        import dask_jobqueue  # noqa: PLC0415 - an optional extra
    except ImportError as error:  # pragma: no cover - depends on the install
        raise ConfigError(
            "dask-jobqueue clusters need the cluster extra: "
            "pip install -c constraints.txt '.[cluster]'"
        ) from error
    try:
        cluster = getattr(dask_jobqueue, kinds[kind])(**arguments)
    except (TypeError, ValueError) as error:
        raise ConfigError(
            f"{path}: {kinds[kind]} rejects the [cluster] settings: {error}"
        ) from error
    if scale:
        cluster.scale(jobs=jobs)
    return cluster


def make_executor(
    *, workers: int = 1, dask: str | None = None, jobqueue: str | Path | None = None
) -> Executor:
    """The executor the command line asks for: ``dask`` (a scheduler address) or ``jobqueue``
    (a cluster config file) if given, else ``workers`` local processes (serial at 1)."""
    if dask and jobqueue:
        raise ConfigError("give either a Dask scheduler address or a jobqueue config, not both")
    if dask:
        return DaskExecutor(dask)
    if jobqueue:
        return DaskExecutor(jobqueue_cluster(jobqueue), owns_cluster=True)
    if workers <= 1:
        return SerialExecutor()
    return ProcessExecutor(workers)


def map_ordered(
    function: Callable[[J], R],
    jobs: Sequence[J],
    *,
    workers: int = 1,
    desc: str,
    unit: str,
    progress: bool = False,
) -> list[R]:
    """``[function(job) for job in jobs]``, in order, on ``workers`` local processes (this
    process at 1; ``function`` and the jobs must pickle). The bar draws only on a terminal.
    A job whose worker died twice raises :class:`WorkerDiedError`."""
    results: dict[int, R] = {}
    bar = tqdm(total=len(jobs), desc=desc, unit=unit, disable=None if progress else True)
    executor = make_executor(workers=workers if len(jobs) > 1 else 1)
    try:
        for index, outcome in executor.imap_unordered(function, jobs):
            if isinstance(outcome, WorkerDied):
                raise WorkerDiedError(f"{desc}: job {index}: {outcome.detail}")
            results[index] = outcome
            bar.update()
    finally:
        executor.close()
        bar.close()
    return [results[i] for i in range(len(jobs))]

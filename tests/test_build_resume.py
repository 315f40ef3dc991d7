"""Killed builds resume to the same bytes; every executor gives the same bytes.

The builds here run on a tiny collection (every kind of broken input, a duplicate, DWI series)
with small shards, so each shard has several row groups and each unit its own journal batch.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from openmind_data.compression import gunzip
from openmind_data.curate import (
    BuildOptions,
    DaskExecutor,
    ProcessExecutor,
    SerialExecutor,
    ShardOptions,
    WorkerDied,
    build,
    jobqueue_cluster,
)
from openmind_data.curate.journal import Journal
from openmind_data.errors import ConfigError
from openmind_data.synth import SynthConfig, synthesize
from tests.conftest import file_digests

CHILD = Path(__file__).with_name("build_child.py")
KIB = 1 << 10
#: The child's options (tests/build_child.py).
OPTIONS = BuildOptions(
    shards=ShardOptions(row_group_bytes=64 * KIB, shard_bytes=256 * KIB), journal_units=1
)


@pytest.fixture(scope="module")
def tiny_root(tmp_path_factory: pytest.TempPathFactory, tiny_config: SynthConfig) -> Path:
    return synthesize(tmp_path_factory.mktemp("tiny"), tiny_config).root


def _output(out: Path) -> dict[str, str]:
    """Digests of the published folder: everything but the journal."""
    return {k: v for k, v in file_digests(out).items() if not k.startswith(".build/")}


@pytest.fixture(scope="module")
def reference_out(tiny_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An uninterrupted build with local processes."""
    out = tmp_path_factory.mktemp("reference") / "openmind"
    executor = ProcessExecutor(2)
    try:
        build(tiny_root, out, OPTIONS, executor=executor)
    finally:
        executor.close()
    return out


@pytest.fixture(scope="module")
def reference(reference_out: Path) -> dict[str, str]:
    digests = _output(reference_out)
    assert any(k.startswith("data/") for k in digests)
    groups = [pq.read_metadata(p).num_row_groups for p in reference_out.glob("data/*/*.parquet")]
    assert max(groups) >= 3  # so that a kill can land inside a shard
    return digests


def _differences(expected: Path, actual: Path) -> str:
    """Where two folders' shards differ, cell by cell, and for a NIfTI cell whether its decoded
    bytes differ or only its gzip stream: the message of a failed byte-identity check."""
    lines = []
    for path in sorted(expected.glob("data/*/*.parquet")):
        rel = path.relative_to(expected).as_posix()
        other = actual / rel
        if not other.exists():
            lines.append(f"{rel}: missing")
            continue
        if other.read_bytes() == path.read_bytes():
            continue
        rows, others = pq.read_table(path).to_pylist(), pq.read_table(other).to_pylist()
        if len(rows) != len(others):
            lines.append(f"{rel}: {len(others)} rows, not {len(rows)}")
            continue
        for row, theirs in zip(rows, others, strict=True):
            for column, value in row.items():
                if value == theirs[column]:
                    continue
                detail = ""
                if isinstance(value, dict) and value.get("bytes") and theirs[column]:
                    decoded = gunzip(value["bytes"]) == gunzip(theirs[column]["bytes"])
                    detail = ": the gzip stream only" if decoded else ": its decoded bytes"
                lines.append(f"{rel} {row['image_id']} {column}{detail}")
    return "\n".join(lines) or "no shard cell differs"


def _child(root: Path, out: Path, point: str, n: int) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(CHILD.parent.parent)}
    # Its own session, so that nothing it started can outlive the test.
    child = subprocess.Popen(
        [sys.executable, str(CHILD), str(root), str(out), point, str(n)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        start_new_session=True,
    )
    try:
        stdout, stderr = child.communicate(timeout=300)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(child.pid, signal.SIGKILL)
    return subprocess.CompletedProcess(child.args, child.returncode, stdout, stderr)


def _journaled(out: Path) -> int:
    return sum(
        pq.read_metadata(batch / "units.parquet").num_rows
        for batch in (out / ".build" / "batches").iterdir()
        if batch.name.isdigit()
    )


@pytest.mark.parametrize(
    ("point", "n"),
    [
        ("commit", 3),  # between images
        ("in-shard", 2),  # a shard half-written, its earlier row groups on disk
        # The default run stays well under 30 minutes on 2 cores: these two run with -m slow.
        pytest.param("in-commit", 9, marks=pytest.mark.slow),  # a batch written, not renamed
        pytest.param("in-metadata", 2, marks=pytest.mark.slow),  # metadata half-written
    ],
)
def test_a_killed_build_resumes_to_the_same_bytes(
    tiny_root: Path,
    tmp_path: Path,
    reference_out: Path,
    reference: dict[str, str],
    point: str,
    n: int,
) -> None:
    out = tmp_path / "openmind"
    killed = _child(tiny_root, out, point, n)
    assert killed.returncode == -9, killed.stderr[-2000:]
    # Nothing half-written is visible under a final name.
    for path in [*out.glob("data/*/*.parquet"), *out.glob("metadata/*.parquet")]:
        pq.read_metadata(path)
    before = _journaled(out)
    resumed = _child(tiny_root, out, "never", 0)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    run, again = (int(part.split("=")[1]) for part in resumed.stdout.split())
    assert again == before  # journaled units are not run again
    assert run + again == _journaled(out)  # and the rest exactly once
    assert _output(out) == reference, _differences(reference_out, out)
    assert not list(out.rglob(".*.partial"))


def test_serial_and_dask_builds_are_byte_identical_to_local_processes(
    tiny_root: Path, tmp_path: Path, reference_out: Path, reference: dict[str, str]
) -> None:
    serial = tmp_path / "serial"
    build(tiny_root, serial, OPTIONS, executor=SerialExecutor())
    assert _output(serial) == reference, _differences(reference_out, serial)

    from distributed import LocalCluster

    with LocalCluster(
        n_workers=2,
        threads_per_worker=1,
        processes=True,
        host="127.0.0.1",
        dashboard_address=None,
    ) as cluster:
        executor = DaskExecutor(cluster)
        try:
            assert executor.workers == 2
            build(tiny_root, tmp_path / "dask", OPTIONS, executor=executor)
        finally:
            executor.close()
    assert _output(tmp_path / "dask") == reference, _differences(reference_out, tmp_path / "dask")


def test_a_resume_reuses_every_unit_and_fresh_starts_over(tiny_root: Path, tmp_path: Path) -> None:
    out = tmp_path / "openmind"
    executor = ProcessExecutor(2)
    try:
        first = build(tiny_root, out, OPTIONS, executor=executor)
        digests = _output(out)
        again = build(tiny_root, out, OPTIONS, executor=executor)
        assert (again.run, again.resumed) == (0, first.run)
        assert _output(out) == digests
        fresh = build(tiny_root, out, OPTIONS, executor=executor, fresh=True)
        assert (fresh.run, fresh.resumed) == (first.run, 0)
        assert _output(out) == digests
    finally:
        executor.close()


def test_one_journal_one_writer(tmp_path: Path) -> None:
    with Journal(tmp_path, {"a": 1}).open(), pytest.raises(ConfigError, match="another build"):
        Journal(tmp_path, {"a": 1}).open()
    with Journal(tmp_path, {"a": 1}).open():  # released when the first closed
        pass


def _dies_on_three(job: int) -> int:
    if job == 3:
        os._exit(9)  # as a segfault or the out-of-memory killer would end it
    return job * job


def test_a_dying_worker_costs_one_job(tmp_path: Path) -> None:
    executor = ProcessExecutor(2)
    try:
        outcomes = dict(executor.imap_unordered(_dies_on_three, range(8)))
    finally:
        executor.close()
    assert isinstance(outcomes.pop(3), WorkerDied)
    assert outcomes == {i: i * i for i in range(8) if i != 3}


def test_a_slurm_cluster_from_a_small_config(tmp_path: Path) -> None:
    config = tmp_path / "cluster.toml"
    config.write_text(
        'kind = "slurm"\njobs = 2\n[cluster]\ncores = 8\nmemory = "32GB"\nprocesses = 4\n'
        'walltime = "02:00:00"\nqueue = "cpu"\njob_extra_directives = ["--account=my-lab"]\n'
        'scheduler_options = {host = "127.0.0.1", dashboard_address = ":0"}\n'
    )
    cluster = jobqueue_cluster(config, scale=False)
    try:
        script = cluster.job_script()
    finally:
        cluster.close()
    assert "#SBATCH -p cpu" in script
    assert "#SBATCH --cpus-per-task=8" in script
    assert "#SBATCH --account=my-lab" in script
    assert "#SBATCH -t 02:00:00" in script
    config.write_text('kind = "kubernetes"\n')
    with pytest.raises(ConfigError, match="kind must be one of"):
        jobqueue_cluster(config)
    config.write_text("jobs = 0\n")
    with pytest.raises(ConfigError, match="jobs must be a positive integer"):
        jobqueue_cluster(config)
    config.write_text("[cluster]\ncores = 8\nnot_an_option = 1\n")
    with pytest.raises(ConfigError, match="rejects the"):
        jobqueue_cluster(config, scale=False)

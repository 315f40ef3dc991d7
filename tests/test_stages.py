"""The stage interface and its runner: errors become exclusion rows at the stage that met them,
a dead worker costs one item, files are written by the runner, and the same bad file is the same
exclusion row whichever command met it."""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pytest
from typer.testing import CliRunner

from openmind_data.cli import app
from openmind_data.compression import GZIP_ENV
from openmind_data.crawl import CrawlResult
from openmind_data.curate import process_candidate
from openmind_data.curate.run import _tune_worker
from openmind_data.errors import ConfigError, InvalidInputError
from openmind_data.exclusions import ExclusionReason
from openmind_data.executors import ProcessExecutor, SerialExecutor
from openmind_data.masks import run_masks
from openmind_data.stages import Item, Outcome, StageResult, run_pipeline, run_stages
from openmind_data.synth import Collection
from tests.pool_probe import loaded


@dataclass(frozen=True)
class Split:
    """Two items from one: ``<id>-a`` and ``<id>-b``."""

    name: str = "split"

    def process(self, item: Item) -> Outcome:
        return Outcome(
            [Item({**item.row, "image_id": f"{item.row['image_id']}-{s}"}) for s in "ab"]
        )


@dataclass(frozen=True)
class Judge:
    """Refuses ``*-a`` as bad input, fails on ``boom*`` as a bug, dies on ``kill*``, and gives a
    file named after each item it keeps."""

    name: str = "judge"

    def process(self, item: Item) -> Outcome:
        image = item.row["image_id"]
        if image.startswith("kill"):
            os._exit(3)  # a worker killed for memory looks like this to the pool
        if image.startswith("boom"):
            raise RuntimeError("a bug")
        if image.endswith("-a"):
            raise InvalidInputError(image, ExclusionReason.EMPTY_IMAGE, "every voxel the same")
        return Outcome([item], files={f"{image}.txt": image.encode()})


@dataclass(frozen=True)
class Interrupt:
    """Notes every item it sees in ``seen``, and stops the whole run (as Ctrl-C does) at a
    ``stop*`` item while a file ``armed`` stands beside ``seen``."""

    seen: Path
    name: str = "interrupt"

    def process(self, item: Item) -> Outcome:
        image = item.row["image_id"]
        with self.seen.open("a") as notes:
            notes.write(f"{image}\n")
        if image.startswith("stop") and (self.seen.parent / "armed").exists():
            raise KeyboardInterrupt
        return Outcome([item])


def _item(image_id: str) -> Item:
    return Item(
        {
            "image_id": image_id,
            "dataset_id": "ds000001",
            "source_path": f"{image_id}.nii",
            "modality": "T1w",
        }
    )


def test_an_error_is_an_exclusion_row_at_the_stage_that_met_it() -> None:
    done = run_stages((Split(), Judge()), _item("x"))
    assert [p.row["image_id"] for p in done.published] == ["x-b"]
    assert done.files == {"x-b.txt": b"x-b"}
    (refused,) = done.excluded
    assert (refused["image_id"], refused["stage"], refused["reason"]) == (
        "x-a",
        "judge",
        "empty_image",
    )
    bug = run_stages((Judge(),), _item("boom"))
    assert not bug.published
    assert [(e["stage"], e["reason"]) for e in bug.excluded] == [("judge", "processing_error")]
    assert "RuntimeError: a bug" in bug.excluded[0]["detail"]


def test_the_runner_writes_the_files_and_a_dead_worker_costs_one_item(tmp_path: Path) -> None:
    items = [_item(name) for name in ("one", "kill", "two", "three")]
    executor = ProcessExecutor(2)
    try:
        result = run_pipeline(
            (Split(), Judge()), items, name="judging", out=tmp_path, executor=executor
        )
    finally:
        executor.close()
    assert result.images.column("image_id").to_pylist() == ["one-b", "two-b", "three-b"]
    rows = result.excluded.select(["image_id", "stage", "reason"]).to_pylist()
    died = [r for r in rows if r["stage"] == "judging"]
    assert died == [{"image_id": "kill", "stage": "judging", "reason": "processing_error"}]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["one-b.txt", "three-b.txt", "two-b.txt"]
    assert (tmp_path / "two-b.txt").read_bytes() == b"two-b"
    # The same rows from this process alone: the output does not depend on the executor.
    alone = run_pipeline(
        (Split(), Judge()),
        [i for i in items if i.row["image_id"] != "kill"],
        name="judging",
        out=tmp_path / "alone",
        executor=SerialExecutor(),
    )
    assert alone.images.equals(result.images)
    assert result.counts()["judging excluded_by_reason"] == {
        "empty_image": 3,
        "processing_error": 1,
    }


def test_a_stopped_run_resumes_from_its_journal_to_the_same_tables(tmp_path: Path) -> None:
    items = [_item(name) for name in ("one", "two", "stop", "three", "boom")]
    seen = tmp_path / "seen.txt"
    (tmp_path / "armed").touch()
    stages = (Interrupt(seen), Split(), Judge())

    def run(out: Path, **options: Any) -> StageResult:
        return run_pipeline(
            stages, items, name="judging", out=out, executor=SerialExecutor(), **options
        )

    with pytest.raises(KeyboardInterrupt):
        run(tmp_path / "out", journal=True, journal_items=1)  # a batch per finished item
    assert seen.read_text().split() == ["one", "two", "stop"]
    (tmp_path / "armed").unlink()
    resumed = run(tmp_path / "out", journal=True)
    assert seen.read_text().split() == ["one", "two", "stop", "stop", "three", "boom"]
    whole = run(tmp_path / "whole")
    assert resumed.images.equals(whole.images)
    assert resumed.excluded.equals(whole.excluded)
    written = sorted(p.name for p in (tmp_path / "out").iterdir() if not p.name.startswith("."))
    assert written == ["one-b.txt", "stop-b.txt", "three-b.txt", "two-b.txt"]
    # A run with other stages or options is refused, and starts over when asked.
    with pytest.raises(ConfigError, match="--fresh"):
        run_pipeline(
            (Interrupt(tmp_path / "other.txt"), Split(), Judge()),
            items,
            name="judging",
            out=tmp_path / "out",
            journal=True,
        )
    seen.unlink()
    again = run(tmp_path / "out", journal=True, fresh=True)
    assert seen.read_text().split() == ["one", "two", "stop", "three", "boom"]
    assert again.images.equals(whole.images)


#: torch in this process, then in two local workers: forked workers would inherit its OpenMP
#: threads half-alive and hang (the learned brain masker in a test after another one).
TORCH_AFTER_TORCH = """
import functools, torch
from openmind_data.executors import ProcessExecutor
x = torch.ones(1, 1, 48, 48, 48)
convolve = functools.partial(torch.nn.functional.conv3d, weight=torch.ones(4, 1, 3, 3, 3))
here = convolve(x)
executor = ProcessExecutor(2)
try:
    done = dict(executor.imap_unordered(convolve, [x, x, x]))
finally:
    executor.close()
assert sorted(done) == [0, 1, 2] and all(torch.equal(d, here) for d in done.values())
"""


def test_local_workers_run_torch_after_this_process_did() -> None:
    pytest.importorskip("torch")
    # In a child with a deadline: the failure this guards against is a hang, not an error.
    subprocess.run([sys.executable, "-c", TORCH_AFTER_TORCH], check=True, timeout=180)


def test_a_bad_file_is_the_same_row_from_the_build_and_from_the_masks_command(
    tmp_path: Path, collection: Collection, crawled: CrawlResult
) -> None:
    index = crawled.candidates.column("modality").to_pylist().index("T1w")
    candidate = crawled.candidates.slice(index, 1)
    (row,) = candidate.to_pylist()
    root = tmp_path / "collection" / row["dataset_id"]
    shutil.copytree(collection.root / row["dataset_id"], root)
    source = root / row["source_path"]
    payload = source.read_bytes()
    source.write_bytes(payload[: len(payload) // 2])
    unit = process_candidate(row, root)
    command = run_masks(candidate, root.parent, tmp_path / "masks")
    keys = ["image_id", "stage", "reason"]
    (from_build,) = unit.excluded
    (from_command,) = command.excluded.select(keys).to_pylist()
    assert {k: from_build[k] for k in keys} == from_command
    assert from_command["stage"] == "load" and from_command["reason"] == "truncated"


def test_the_masks_command_resumes_from_its_journal(
    tmp_path: Path, collection: Collection, crawled: CrawlResult
) -> None:
    t1w = pc.equal(pc.cast(crawled.candidates["modality"], pa.string()), "T1w")
    index = tmp_path / "index.parquet"
    replace(crawled, candidates=crawled.candidates.filter(t1w).slice(0, 2)).write(index)
    out = tmp_path / "masks"
    command = ["--no-progress", "masks", str(index), "--root", str(collection.root)]
    command += ["--out", str(out), "--brain", "template"]
    first = CliRunner().invoke(app, command)
    assert first.exit_code == 0, first.output
    table = (out / "masks.parquet").read_bytes()
    written = {p: p.stat().st_mtime_ns for p in out.rglob("*.nii.gz")}
    assert written  # the masks of two images
    again = CliRunner().invoke(app, command)
    assert again.exit_code == 0, again.output
    assert (out / "masks.parquet").read_bytes() == table
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*.nii.gz")} == written  # none redone
    other = CliRunner().invoke(app, [*command[:-1], "auto"])
    assert other.exit_code == 2 and "--fresh" in other.output


def _gzip_setting(_: int) -> str | None:
    return os.environ.get(GZIP_ENV)


def test_workers_follow_the_builds_gzip_setting_after_the_fork_server_started(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The fork server starts with the first pool and keeps the environment it started with;
    # a later build that asks for the standard library's gzip must get it in its workers.
    monkeypatch.delenv(GZIP_ENV, raising=False)
    first = ProcessExecutor(1)
    try:
        assert [value for _, value in first.imap_unordered(_gzip_setting, [0])] == [None]
    finally:
        first.close()
    monkeypatch.setenv(GZIP_ENV, "zlib")
    second = ProcessExecutor(2)
    try:
        assert sorted(v for _, v in second.imap_unordered(_gzip_setting, [0, 1])) == ["zlib"] * 2
    finally:
        second.close()


def test_a_pools_workers_start_with_the_units_modules_loaded() -> None:
    # The fork server imports the build's unit once; its workers are forked with it loaded,
    # where each worker importing numpy, scipy, SimpleITK, dipy and pyarrow itself took 1.8 s
    # on 2 cores, for every pool a build starts (the crawl's, the units').
    executor = ProcessExecutor(2)
    try:
        jobs = ["openmind_data.curate.unit"] * 2
        assert [found for _, found in executor.imap_unordered(loaded, jobs)] == [True, True]
        # torch stays out of the server: its OpenMP threads would not survive the fork.
        assert [found for _, found in executor.imap_unordered(loaded, ["torch"])] == [False]
    finally:
        executor.close()


def _torch_threads(_: int) -> int:
    _tune_worker()  # what every build unit does first
    import torch  # after the tuning, as a learned masker imports it

    return int(torch.get_num_threads())


@pytest.mark.skipif(importlib.util.find_spec("torch") is None, reason="torch is not installed")
def test_a_workers_torch_gets_one_thread() -> None:
    # The build runs one image per worker; torch would otherwise take every core of the machine
    # in each worker (deepbet's check of a defacing runs in the workers).
    executor = ProcessExecutor(1)
    try:
        assert [threads for _, threads in executor.imap_unordered(_torch_threads, [0])] == [1]
    finally:
        executor.close()

"""The stage interface and its runner: errors become exclusion rows at the stage that met them,
a dead worker costs one item, files are written by the runner, and the same bad file is the same
exclusion row whichever command met it."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from openmind_data.crawl import CrawlResult
from openmind_data.curate import process_candidate
from openmind_data.errors import InvalidInputError
from openmind_data.exclusions import ExclusionReason
from openmind_data.executors import ProcessExecutor, SerialExecutor
from openmind_data.masks import run_masks
from openmind_data.stages import Item, Outcome, run_pipeline, run_stages
from openmind_data.synth import Collection


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

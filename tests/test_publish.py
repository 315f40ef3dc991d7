"""Publishing to the Hub and loading from it, for real over HTTP: ``huggingface_hub`` and
``datasets`` talk to the Hub-compatible server of ``tests/hub_server.py`` on loopback (the Hub
itself cannot be reached from here)."""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
from huggingface_hub import HfApi, snapshot_download
from typer.testing import CliRunner

from openmind_data import publishing as publish_module
from openmind_data.cli import app
from openmind_data.curate import BuildOptions, BuildResult, ShardOptions, build
from openmind_data.loading import load
from openmind_data.publishing import plan_publish, publish
from openmind_data.synth import Collection
from tests.hub_server import HubServer, logged_in

# huggingface_hub's LFS upload passes raw bytes as data=, which its HTTP client deprecates.
pytestmark = pytest.mark.filterwarnings("ignore:Use 'content=<...>':DeprecationWarning")

REPO = "openmind-lab/openmind-mini"
MIB = 1024**2


@pytest.fixture
def hub(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[HubServer]:
    """The server, with the client pointed at it and logged in through HF_TOKEN."""
    with logged_in(tmp_path / "hub", monkeypatch, token="hf_secret_do_not_print_1234") as server:
        yield server


@pytest.fixture
def folder(built: tuple[BuildResult, Path], tmp_path: Path) -> Path:
    """A copy of the built folder with its journal, so it can be rebuilt cheaply."""
    copy = tmp_path / "openmind"
    shutil.copytree(built[0].out, copy)
    return copy


def published_files(folder: Path) -> dict[str, bytes]:
    return {
        p.relative_to(folder).as_posix(): p.read_bytes()
        for p in sorted(folder.rglob("*"))
        if p.is_file() and not any(s.startswith(".") for s in p.relative_to(folder).parts)
    }


def test_publish_interrupted_and_resumed_mirrors_the_folder_byte_for_byte(
    hub: HubServer, folder: Path, collection: Collection, tmp_path: Path
) -> None:
    # A first publish, in several commits, the card last.
    first = publish(folder, REPO, commit_bytes=24 * MIB)
    assert len(first.commits) >= 3
    assert hub.commits[-1]["paths"] == ["README.md"]
    assert not any(path.startswith(".build") for c in hub.commits for path in c["paths"])
    lfs_once = hub.lfs_bytes_received
    text = (folder / "README.md").read_text()
    assert f'load_dataset("{REPO}", "T1w"' in text  # the card names the repo it is in

    # The folder changes: the same images resharded into smaller files (the journal makes
    # this a rewrite, nothing is processed again).
    options = BuildOptions(shards=ShardOptions(row_group_bytes=2 * MIB, shard_bytes=6 * MIB))
    rebuilt = build(collection.root, folder, options)
    assert rebuilt.run == 0
    plan = plan_publish(folder, REPO)
    assert plan.delete and all(path.startswith("data/") for path in plan.delete)
    assert "metadata/images.parquet" in plan.unchanged  # same content: not sent again
    assert len(plan.upload) > 4

    # The second publish dies at its third commit; what landed stays, nothing is half-done.
    before = len(hub.commits)
    hub.fail_commit = lambda index: index == before + 2
    with pytest.raises(Exception, match="500"):
        publish(folder, REPO, commit_bytes=6 * MIB)
    landed = len(hub.commits)
    hub.fail_commit = None
    remaining = plan_publish(folder, REPO)
    assert 0 < len(remaining.upload) < len(plan.upload)
    resumed = publish(folder, REPO, commit_bytes=6 * MIB)
    assert len(hub.commits) == landed + len(resumed.commits)
    assert {path for c in hub.commits[landed:] for path in c["paths"]} == {
        f.path for f in remaining.upload
    }
    # Every LFS object went up once: the failed commit's objects were not sent again.
    shard_bytes = sum(f.size for f in plan.upload if f.path.endswith((".parquet", ".png")))
    assert hub.lfs_bytes_received - lfs_once <= shard_bytes
    assert plan_publish(folder, REPO).upload == []

    # What the Hub holds is the folder, byte for byte, and nothing else.
    download = Path(snapshot_download(REPO, repo_type="dataset", local_dir=tmp_path / "dl"))
    remote = published_files(download)
    remote.pop(".gitattributes", None)
    assert remote == published_files(folder)


def test_dry_run_lists_and_changes_nothing(hub: HubServer, folder: Path) -> None:
    result = publish(folder, REPO, dry_run=True)
    assert not result.plan.repo_exists
    assert hub.commits == []
    assert not any(method == "POST" for method, _ in hub.requests)
    described = result.plan.describe()
    files = published_files(folder)
    assert f"{len(files)} files to upload" in described
    assert f"{REPO} will be created" in described


def test_a_child_process_finds_the_hub_by_hf_endpoint_alone(hub: HubServer, folder: Path) -> None:
    """The command as users run it: a new process, the endpoint and the token in the
    environment (HF_ENDPOINT, HF_TOKEN), nothing patched inside it."""
    assert os.environ["HF_ENDPOINT"] == hub.endpoint
    command = [sys.executable, "-m", "openmind_data.cli", "publish", str(folder)]
    done = subprocess.run(
        [*command, "--repo-id", REPO, "--no-card"], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr
    assert hub.token not in done.stdout + done.stderr
    assert {path for c in hub.commits for path in c["paths"]} == set(published_files(folder))
    # The SSL stream reads the repo through huggingface_hub's file system.
    pytest.importorskip("torch")
    from openmind_ssl.data import OpenMindStream, Preprocessing, StreamOptions

    options = StreamOptions(
        modalities=["T2w"],
        crop_size=(16, 16, 16),
        crops_per_volume=1,
        preprocessing=Preprocessing(4.0),
    )
    streamed = {s["image_id"] for s in OpenMindStream(f"hf://datasets/{REPO}", options)}
    images = pq.read_table(folder / "metadata" / "images.parquet").to_pylist()
    assert streamed == {
        r["image_id"] for r in images if r["modality"] == "T2w" and r["split"] == "train"
    }


def test_hashes_are_read_again_only_for_files_that_changed(
    hub: HubServer, folder: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = plan_publish(folder, REPO)
    hashed: list[str] = []
    original = publish_module._hashed

    def counting(name: str, path: Path) -> Any:
        hashed.append(name)
        return original(name, path)

    monkeypatch.setattr(publish_module, "_hashed", counting)
    again = plan_publish(folder, REPO)
    assert hashed == [] and again.upload == first.upload  # every hash from the cache
    csv = folder / "metadata" / "openneuro_metadata.csv"
    data = bytearray(csv.read_bytes())
    data[-2] = ord("7") if data[-2] != ord("7") else ord("8")  # same size, other content
    csv.write_bytes(bytes(data))
    changed = {f.path: f for f in plan_publish(folder, REPO).upload}
    assert hashed == ["metadata/openneuro_metadata.csv"]
    assert changed[hashed[0]].sha256 != {f.path: f for f in first.upload}[hashed[0]].sha256


def test_private_branch_publish_through_the_command_never_shows_the_token(
    hub: HubServer, folder: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    runner = CliRunner()
    args = ["publish", str(folder), "--repo-id", REPO, "--private", "--revision", "v1"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "files uploaded in" in result.output
    api = HfApi(token=hub.token)
    assert api.repo_info(REPO, repo_type="dataset").private
    on_branch = set(api.list_repo_files(REPO, repo_type="dataset", revision="v1"))
    assert "README.md" in on_branch
    assert "README.md" not in api.list_repo_files(REPO, repo_type="dataset")
    again = runner.invoke(app, [*args, "--dry-run"])
    assert "0 files to upload" in again.output
    shown = runner.invoke(app, ["info", REPO, "--revision", "v1"])  # the metadata alone
    assert shown.exit_code == 0, shown.output
    assert "| **all** |" in shown.output
    assert not any("/data/" in path for _, path in hub.requests if "/resolve/" in path)
    for text in (result.output, again.output, shown.output, caplog.text):
        assert hub.token not in text


def test_a_hub_repo_loads_with_filters_and_streams_only_the_row_groups_it_keeps(
    hub: HubServer, folder: Path, collection: Collection
) -> None:
    # Small row groups, so a quality filter has whole groups to skip.
    options = BuildOptions(shards=ShardOptions(row_group_bytes=1 * MIB, shard_bytes=64 * MIB))
    build(collection.root, folder, options)
    publish(folder, REPO)
    everything = list(load(REPO, modalities="T1w", split="train", streaming=True))
    shards = sorted(p for p in hub.bytes_served if p.startswith("data/T1w/train-"))
    full = sum(hub.bytes_served[p] for p in shards)
    worst = sorted(r["image_quality_score"] for r in everything)[-3]
    hub.bytes_served.clear()
    kept = list(
        load(
            REPO,
            modalities="T1w",
            split="train",
            streaming=True,
            filters=[("image_quality_score", ">=", worst)],
        )
    )
    assert len(kept) == 3 and all(r["image_quality_score"] >= worst for r in kept)
    assert kept[0]["image"].shape == tuple(kept[0]["shape"])
    read = sum(hub.bytes_served.get(p, 0) for p in shards)
    selected = _row_group_bytes(folder, shards, worst)
    assert read <= 1.3 * selected + 1 * MIB, (read, selected, full)  # + footers
    assert read < full / 3


def _row_group_bytes(folder: Path, shards: list[str], threshold: float) -> int:
    """Stored bytes of the row groups holding a row with an IQS at or above ``threshold``."""
    import pyarrow.parquet as pq

    total = 0
    for shard in shards:
        metadata = pq.ParquetFile(folder / shard).metadata
        column = metadata.schema.names.index("image_quality_score")
        for index in range(metadata.num_row_groups):
            group = metadata.row_group(index)
            if group.column(column).statistics.max >= threshold:
                total += sum(
                    group.column(c).total_compressed_size for c in range(group.num_columns)
                )
    return total

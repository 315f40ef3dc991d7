"""One dataset folder object: its addressing, its layout, and the same listing from a folder
here and from its Hub repo (the Hub is the loopback server of ``tests/hub_server.py``)."""

from __future__ import annotations

import fnmatch
import shutil
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from openmind_data.curate import BuildResult
from openmind_data.dataset_folder import (
    TABLES,
    DatasetFolder,
    parse_repo,
    shard_glob,
    shard_name,
    shard_split,
    table_path,
)
from openmind_data.errors import ConfigError
from openmind_data.publishing import publish
from openmind_data.view.store import Store
from openmind_ssl.data.stream import OpenMindStream, StreamOptions
from tests.hub_server import logged_in

REPO = "openmind-lab/folder-test"


@pytest.fixture
def folder(built: tuple[BuildResult, Path]) -> Path:
    """The built folder, shared: only read here (publishing writes into a copy)."""
    return built[0].out


def test_every_address_form_names_the_same_repo_and_bad_ones_say_the_forms() -> None:
    assert parse_repo("org/name") == ("org/name", None)
    assert parse_repo("org/name@v1") == ("org/name", "v1")
    assert parse_repo("hf://datasets/org/name") == ("org/name", None)
    assert parse_repo("hf://datasets/org/name@v1/") == ("org/name", "v1")
    assert parse_repo("org/name", "v2") == ("org/name", "v2")
    assert parse_repo("org/name@v2", "v2") == ("org/name", "v2")
    with pytest.raises(ConfigError, match="'v1' in the address, 'v2' apart"):
        parse_repo("org/name@v1", "v2")
    for bad in ("no/such/folder", "not a repo", "hf://datasets/name", "org/name@", "/abs/x"):
        with pytest.raises(ConfigError, match=r"neither a folder here nor a Hub .*ORG/NAME"):
            DatasetFolder.at(bad)
    hub = DatasetFolder.at("hf://datasets/org/name@v1")
    assert (hub.repo_id, hub.revision, hub.is_local) == ("org/name", "v1", False)
    assert hub.root == "datasets/org/name@v1"
    assert hub.datasets_path == "org/name" and str(hub) == "hf://datasets/org/name"
    with pytest.raises(ConfigError, match="a Hub repo; this needs a dataset folder here"):
        hub.local()


def test_a_folder_that_exists_is_local_even_when_it_looks_like_a_repo_id(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "org" / "name").mkdir(parents=True)
    monkeypatch.chdir(tmp_path)
    here = DatasetFolder.at("org/name")
    assert here.is_local and here.path == Path("org/name") and here.name == "name"
    assert DatasetFolder.at(here) is here
    with pytest.raises(ConfigError, match="does not exist: is org/name an OpenMind folder"):
        here.table("images")


def test_the_layout_names_and_globs_agree() -> None:
    names = [shard_name(i, 3, split) for split in ("train", "validation") for i in range(3)]
    assert names[0] == "train-00000-of-00003.parquet"
    assert all(fnmatch.fnmatchcase(n, shard_glob()) for n in names)
    assert [n for n in names if fnmatch.fnmatchcase(n, shard_glob("train"))] == names[:3]
    assert {shard_split(n) for n in names} == {"train", "validation"}
    assert [table_path(name) for name in TABLES] == [
        "metadata/images.parquet",
        "metadata/excluded.parquet",
        "metadata/sources.parquet",
    ]
    with pytest.raises(ConfigError, match="no metadata table 'image'; the tables are images"):
        table_path("image")


def test_a_built_folder_lists_its_shards_and_tables_as_they_are_on_disk(folder: Path) -> None:
    dataset = DatasetFolder.at(folder)
    on_disk = sorted(p.resolve().as_posix() for p in folder.glob("data/*/*.parquet"))
    assert dataset.shards() == on_disk
    by_config = dataset.shard_files()
    assert sorted(p for by_split in by_config.values() for ps in by_split.values() for p in ps) == (
        on_disk
    )
    for modality, by_split in by_config.items():
        for split, paths in by_split.items():
            assert paths == dataset.shards(modality, split)
            assert all(f"/data/{modality}/{split}-" in path for path in paths)
    assert sum(len(paths) for paths in dataset.preview_files().values()) == len(
        list(folder.glob("previews/*.parquet"))
    )
    in_shards = sorted(
        i
        for path in on_disk
        for i in pq.read_table(path, columns=["image_id"])["image_id"].to_pylist()
    )
    assert sorted(dataset.table("images")["image_id"].to_pylist()) == in_shards
    assert [p.name for p in dataset.modality_folders()] == sorted(by_config)


def test_the_hub_repo_lists_the_same_shards_and_tables_as_the_folder(
    built: tuple[BuildResult, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = tmp_path / "openmind"  # publishing keeps its hash cache in the folder
    shutil.copytree(built[0].out, folder, ignore=shutil.ignore_patterns(".build"))
    with logged_in(tmp_path / "hub", monkeypatch, token="hf_folder_test_token"):
        _compare_with_the_hub(folder)


def _compare_with_the_hub(folder: Path) -> None:
    publish(folder, f"hf://datasets/{REPO}")
    here, there = DatasetFolder.at(folder), DatasetFolder.at(REPO)

    def relative(dataset: DatasetFolder) -> list[str]:
        return [path.removeprefix(dataset.root + "/") for path in dataset.shards()]

    assert relative(there) == relative(here)
    assert there.table("images").equals(here.table("images"))
    assert there.shard_files().keys() == here.shard_files().keys()
    assert Store(f"hf://datasets/{REPO}").shards.keys() == Store(folder).shards.keys()
    modality = sorted(here.shard_files())[0]
    over_hub = OpenMindStream(REPO, StreamOptions(modalities=[modality]))
    local = OpenMindStream(folder, StreamOptions(modalities=[modality]))
    assert len(over_hub.units) == len(local.units)
    with pytest.raises(ConfigError, match="neither a folder here nor a dataset repo on the Hub"):
        DatasetFolder.at("openmind-lab/nothing-here").table("images")
    missing = r"no metadata/images\.parquet\.missing; is it an OpenMind"
    with pytest.raises(ConfigError, match=missing):
        DatasetFolder.at(REPO, revision="main").file("metadata/images.parquet.missing")


def test_a_typo_in_the_stream_source_is_a_config_error_naming_the_forms(folder: Path) -> None:
    with pytest.raises(ConfigError, match="neither a folder here nor a Hub dataset repo"):
        OpenMindStream(str(folder) + "-typo", StreamOptions())
    with pytest.raises(ConfigError, match="has no train shards of modality 'T1W'"):
        OpenMindStream(folder, StreamOptions(modalities=["T1W"]))

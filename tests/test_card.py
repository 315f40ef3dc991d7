"""The dataset card, ``openmind_data.load`` and ``openmind info``, on the default collection's
build (the session's ``built`` folder; tests that change a folder work on a copy)."""

from __future__ import annotations

import json
import re
import shutil
from collections import Counter
from pathlib import Path

import datasets
import matplotlib.image
import pyarrow.parquet as pq
import pytest
from huggingface_hub import DatasetCard
from typer.testing import CliRunner

from openmind_data.card import read_summary, validate_card, write_card
from openmind_data.card.header import hub_licence
from openmind_data.cli import app
from openmind_data.curate import BuildResult
from openmind_data.errors import ConfigError
from openmind_data.loading import build_filters, load
from tests.conftest import file_digests


@pytest.fixture
def folder(built: tuple[BuildResult, Path], tmp_path: Path) -> Path:
    """A copy of the built folder (without its journal) to change."""
    copy = tmp_path / "openmind"
    shutil.copytree(built[0].out, copy, ignore=shutil.ignore_patterns(".build"))
    return copy


def test_the_build_writes_a_valid_card(built: tuple[BuildResult, Path]) -> None:
    result, _ = built
    out = result.out
    assert validate_card(out) == []
    card = DatasetCard.load(out / "README.md")
    data = card.data.to_dict()
    # ds000004 gives no licence: the card cannot name one Hub licence for everything.
    assert data["license"] == "other"
    assert data["license_link"] == "metadata/sources.parquet"
    assert data["size_categories"] == ["n<1K"]
    modalities = Counter(result.images.column("modality").to_pylist())
    infos = {info["config_name"]: info for info in data["dataset_info"]}
    assert set(infos) == {*modalities, "all", "previews", "metadata"}
    for modality, count in modalities.items():
        voxels = {f["name"]: f.get("dtype") for f in infos[modality]["features"]}
        assert voxels["image"] == voxels["anon_mask"] == "nifti"
        assert "splits" not in infos[modality]  # row counts would fail every filtered load
        assert f"| {modality} | {count} |" in card.text
    # The body: counts, every source with its DOI, every column, the figures.
    text = card.text
    for source in pq.read_table(out / "metadata" / "sources.parquet").to_pylist():
        assert source["doi"] in text and source["name"] in text
    for column in ("image_quality_score", "anon_mask", "provenance"):
        assert f"| `{column}` |" in text
    assert f"| **all** | **{result.images.num_rows}** |" in text
    assert "openmind-iqs/" in text
    figures = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", text)
    previews = [f for f in figures if f.startswith("assets/previews/")]
    assert len(figures) - len(previews) == 2
    assert {p.split("/")[-1].split("-")[0] for p in previews} == set(modalities)
    for figure in figures:
        pixels = matplotlib.image.imread(out / figure)
        if figure in previews:  # three planes side by side, 128 pixels tall
            assert pixels.shape[0] == 128 and pixels.shape[1] > 2 * 128
        else:
            assert pixels.shape[0] > 200 and pixels.shape[1] > 400
        assert pixels[..., :3].std() > 0.05  # drawn, not blank


def test_the_card_renders_to_the_same_bytes(built: tuple[BuildResult, Path], folder: Path) -> None:
    before = file_digests(folder)
    write_card(folder)
    assert file_digests(folder) == before
    write_card(folder, repo_id="my-lab/openmind-mini")
    text = (folder / "README.md").read_text()
    assert 'load_dataset("my-lab/openmind-mini", "T1w"' in text


def test_validation_names_each_broken_rule(folder: Path) -> None:
    readme = folder / "README.md"
    text = readme.read_text()
    broken = (
        text.replace("license: other", "license: cc-by-4.0-ish", 1)
        .replace("path: data/T1w/train-*.parquet", "path: data/T1w/trian-*.parquet", 1)
        .replace("- n<1K", "- tiny", 1)
        .replace("assets/iqs_per_modality.png", "assets/missing.png", 1)
    )
    readme.write_text(broken)
    found = {problem.field for problem in validate_card(folder)}
    assert {"license", "size_categories", "configs.T1w", "figures"} <= found
    (folder / "README.md").write_text("---\nlicense: [unclosed\n---\n")
    assert [p.field for p in validate_card(folder)] == ["README.md"]


def test_a_card_that_would_break_loading_is_found(folder: Path) -> None:
    readme = folder / "README.md"
    text = readme.read_text()
    # Split sizes in dataset_info: `datasets` would check every filtered load against them.
    sized = text.replace(
        "- config_name: T2w\n  features:",
        "- config_name: T2w\n  splits:\n  - name: train\n    num_examples: 7\n  features:",
        1,
    )
    assert sized != text
    readme.write_text(sized)
    problems = [str(p) for p in validate_card(folder)]
    assert any(p.startswith("dataset_info.T2w: split sizes") for p in problems), problems
    # Features that are not the files': the voxels declared as plain structs.
    header, body = text.split("\n---\n", 1)
    declared = header.replace("dtype: nifti", "dtype: string")
    readme.write_text(declared + "\n---\n" + body)
    problems = [str(p) for p in validate_card(folder)]
    assert any("its features are not those of" in p for p in problems), problems


def test_filtered_loads_pass_the_checks_datasets_makes(built: tuple[BuildResult, Path]) -> None:
    out = str(built[0].out)
    everything = built[0].images.to_pylist()
    t1w = [r for r in everything if r["modality"] == "T1w" and r["split"] == "train"]
    good = datasets.load_dataset(
        out, "T1w", split="train", filters=[("image_quality_score", "<=", 2.0)]
    )
    assert 0 < good.num_rows < len(t1w)  # fewer rows than the files hold, and no error


def test_the_previews_config_is_what_the_hub_viewer_can_show(
    built: tuple[BuildResult, Path],
) -> None:
    """The viewer reads the first 100 rows of a split, every column, and converts each cell by
    its feature, raising on a feature it has no case for (Nifti): the previews config has
    none, its first rows fit one row group of a few MB, and its files carry a page index."""
    out = built[0].out
    images = built[0].images.to_pylist()
    files = sorted((out / "previews").glob("*.parquet"))
    assert files
    for path in files:
        declared = json.loads(pq.read_schema(path).metadata[b"huggingface"])["info"]["features"]
        assert declared["preview"]["_type"] == "Image"
        assert "Nifti" not in json.dumps(declared)
        file = pq.ParquetFile(path)
        assert file.schema_arrow.names[0] == "preview"
        for index in range(file.metadata.num_row_groups):
            group = file.metadata.row_group(index)
            assert group.num_rows <= 100
            assert group.total_byte_size < 100 * 45_000
            assert all(group.column(i).has_offset_index for i in range(group.num_columns))
    loaded = datasets.load_dataset(str(out), "previews", split="train")
    assert loaded.features["preview"] == datasets.Image()
    assert set(loaded.features) == {"preview", *built[0].images.column_names}
    assert loaded.num_rows == sum(r["split"] == "train" for r in images)
    first = loaded[0]
    assert first["preview"].format == "PNG" and first["preview"].size[1] == 128
    # The data shards hold the same preview beside the voxels.
    shard = load(
        str(out), modalities=first["modality"], split="train", columns=["image_id", "preview"]
    )
    same = next(r for r in shard if r["image_id"] == first["image_id"])
    assert same["preview"].tobytes() == first["preview"].tobytes()


def test_hub_licences() -> None:
    assert hub_licence(["CC0-1.0"]) == {"license": "cc0-1.0"}
    assert hub_licence(["CC-BY-4.0", "CC0-1.0", "PDDL-1.0"]) == {
        "license": ["cc-by-4.0", "cc0-1.0", "pddl"]
    }
    assert hub_licence(["CC0-1.0", "Custom terms"])["license"] == "other"
    assert hub_licence(["none given"])["license"] == "other"


def test_the_summary_counts_what_the_tables_hold(built: tuple[BuildResult, Path]) -> None:
    result, _ = built
    summary = read_summary(result.out)
    rows = result.images.to_pylist()
    assert summary.images == len(rows)
    assert summary.subjects == len({(r["dataset_id"], r["subject"]) for r in rows})
    assert summary.excluded == result.excluded.num_rows
    for row in summary.modalities:
        mine = [r for r in rows if r["modality"] == row.modality]
        assert row.images == len(mine) == row.train + row.validation
        assert sum(summary.iqs_histogram[row.modality]) == len(mine)
    assert sum(summary.licences.values()) == len(rows)


def test_openmind_info_and_card_commands(built: tuple[BuildResult, Path], folder: Path) -> None:
    runner = CliRunner()
    shown = runner.invoke(app, ["info", str(built[0].out)])
    assert shown.exit_code == 0, shown.output
    assert f"| **all** | **{built[0].images.num_rows}** |" in shown.output
    assert "licences: CC0-1.0" in shown.output
    checked = runner.invoke(app, ["card", str(folder), "--repo-id", "lab/om"])
    assert checked.exit_code == 0, checked.output
    assert "valid" in checked.output
    (folder / "assets" / "images_per_modality.png").unlink()
    failed = runner.invoke(app, ["card", str(folder), "--check"])
    assert failed.exit_code == 1
    assert "images_per_modality.png does not exist" in failed.output


def test_load_builds_checked_filters(built: tuple[BuildResult, Path]) -> None:
    out = built[0].out
    rows = built[0].images.to_pylist()
    good = load(out, modalities=["T1w", "T2w"], max_iqs=2.0, split="train")
    expected = [
        r
        for r in rows
        if r["modality"] in ("T1w", "T2w")
        and r["split"] == "train"
        and r["image_quality_score"] <= 2.0
    ]
    assert sorted(good["image_id"]) == sorted(r["image_id"] for r in expected)
    under = load(out, modalities="T1w", licenses=["cc0", "CC-BY 4.0"], streaming=True)
    seen = [example for split in under.values() for example in split]
    assert {e["license"] for e in seen} == {"CC0-1.0", "CC-BY-4.0"}
    assert len(seen) == sum(
        r["modality"] == "T1w" and r["license"] in ("CC0-1.0", "CC-BY-4.0") for r in rows
    )
    assert seen[0]["image"].shape == tuple(seen[0]["shape"])  # decoded NIfTI
    assert seen[0]["anat_mask"].shape == seen[0]["image"].shape
    with pytest.raises(ConfigError, match=r"no modality 'T1'.*did you mean 'T1w'"):
        load(out, modalities="T1")
    with pytest.raises(ConfigError, match=r"did you mean 'CC-BY-4\.0'"):
        load(out, licenses="CC-BY-SA-4.0")
    with pytest.raises(ConfigError, match="unknown split 'test'"):
        load(out, split="test")
    with pytest.raises(ConfigError, match="runs from 1"):
        build_filters(max_iqs=0.5)
    with pytest.raises(TypeError):
        load(out, modality="T1w")  # type: ignore[call-arg]  # a misspelt argument is an error


def test_a_folder_named_openmind_loads_by_its_name(
    built: tuple[BuildResult, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    out = built[0].out
    assert out.name == "openmind"
    monkeypatch.chdir(out.parent)
    metadata = datasets.load_dataset("openmind", "metadata", split="train")
    assert metadata.num_rows == built[0].images.num_rows


def test_the_package_exports_the_functions_not_their_modules() -> None:
    import openmind_data
    import openmind_data.loading
    import openmind_data.publishing

    assert callable(openmind_data.load) and callable(openmind_data.publish)
    assert callable(openmind_data.build) and callable(openmind_data.write_card)

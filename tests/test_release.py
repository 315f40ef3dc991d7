"""``openmind import-release`` and ``export-nnssl`` on a mock of OpenMind's release.

The mock (:mod:`tests.release_mock`) is the demo's build in the release's layout with the
release's quirks; the Hub is the loopback server of :mod:`tests.hub_server`, which counts the
bytes it serves per file.
"""

from __future__ import annotations

import csv
import gzip
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import datasets
import nibabel as nib
import numpy as np
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from openmind_data.cli import app
from openmind_data.curate import BuildResult
from openmind_data.errors import ConfigError
from openmind_data.nifti import decode_nifti
from openmind_data.quality import load_model
from openmind_data.release.importer import ImportResult, import_release
from openmind_data.release.layout import IMAGES_FOLDER, METADATA_CSV, mask_paths, tree_file
from openmind_data.release.nnssl import export_nnssl, pretrain_data
from openmind_data.release.unit import ImportOptions
from tests.hub_server import HubServer, patch_endpoint
from tests.nnssl_schema import iqs_filter, read_collection
from tests.release_mock import GOOD, MockRelease, make_mock_release

REPO = "MIC-DKFZ/OpenMind"
CHILD = Path(__file__).with_name("import_child.py")


@pytest.fixture(scope="module")
def mock(built: tuple[BuildResult, Path], tmp_path_factory: pytest.TempPathFactory) -> MockRelease:
    return make_mock_release(built, tmp_path_factory.mktemp("release") / "OpenMind-copy")


@pytest.fixture(scope="module")
def imported(mock: MockRelease, tmp_path_factory: pytest.TempPathFactory) -> ImportResult:
    """The whole mock, imported from its local copy."""
    return import_release(mock.root, tmp_path_factory.mktemp("imported") / "openmind")


@pytest.fixture
def hub(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, mock: MockRelease) -> Iterator[HubServer]:
    """The mock published as the public dataset repo REPO; served bytes counted from zero."""
    from huggingface_hub import HfApi

    with HubServer(tmp_path / "hub") as server:
        patch_endpoint(monkeypatch, server.endpoint)
        api = HfApi(endpoint=server.endpoint, token=server.token)
        api.create_repo(REPO, repo_type="dataset")
        api.upload_folder(folder_path=mock.root, repo_id=REPO, repo_type="dataset")
        server.bytes_served.clear()
        yield server


def _selected(mock: MockRelease) -> list[dict[str, str]]:
    """The CSV rows ``--modality T1w --max-iqs 2`` keeps."""
    return [
        row
        for row in mock.rows
        if row["modality"] == "T1w" and row["image_quality_score"]
        if float(row["image_quality_score"]) <= 2
    ]


def _key(row: dict[str, Any]) -> str:
    """A table row by the release path it came from (the CSV's ``image_path``)."""
    return f"{row['dataset_id']}/{row['source_path']}"


def _by_path(result: ImportResult) -> dict[str, dict[str, Any]]:
    return {_key(row): row for row in result.images.to_pylist()}


def _excluded(result: ImportResult) -> dict[str, tuple[str, str]]:
    return {_key(r): (r["stage"], r["reason"]) for r in result.excluded.to_pylist()}


def _voxels(result: ImportResult, image_id: str) -> dict[str, Any]:
    for shard in sorted((result.out / "data").glob("*/*.parquet")):
        table = pq.read_table(shard, filters=[("image_id", "==", image_id)])
        if table.num_rows:
            return table.to_pylist()[0]
    raise AssertionError(f"{image_id} is in no shard")


def _array(cell: dict[str, Any]) -> np.ndarray:
    return np.asanyarray(decode_nifti(cell["bytes"]).dataobj)


def _file(path: Path) -> np.ndarray:
    return np.asanyarray(nib.load(path).dataobj)


def _import_steps(row: dict[str, Any]) -> list[str]:
    return [
        json.loads(p["parameters"])["masks"] for p in row["provenance"] if p["step"] == "import"
    ]


def test_a_hub_release_downloads_only_the_selected_rows_files(
    hub: HubServer, mock: MockRelease, tmp_path: Path
) -> None:
    out = tmp_path / "openmind"
    result = CliRunner().invoke(
        app,
        [
            *("--no-progress", "import-release", REPO, "--out", str(out)),
            *("--modality", "T1w", "--max-iqs", "2"),
        ],
    )
    assert result.exit_code == 0, result.output
    selected = _selected(mock)
    wanted = {path for row in selected for path in mock.files(row)}
    allowed = wanted | {METADATA_CSV, "README.md"}
    assert set(hub.bytes_served) <= allowed, sorted(set(hub.bytes_served) - allowed)
    assert wanted <= set(hub.bytes_served)  # every selected file that exists came
    for path, served in hub.bytes_served.items():
        assert served == (mock.root / path).stat().st_size, path  # whole, and once
    assert not (out / ".import").exists()  # downloads go once they are journaled

    t1w = datasets.load_dataset(str(out), "T1w", split="train")
    assert {"image", "anat_mask", "anon_mask"} <= set(t1w.features)
    first = t1w[0]
    assert first["anat_mask"].shape == first["image"].shape
    images = pq.read_table(out / "metadata" / "images.parquet").to_pylist()
    excluded = pq.read_table(out / "metadata" / "excluded.parquet").to_pylist()
    assert len(images) + len(excluded) == len(selected)
    assert {r["modality"] for r in images} == {"T1w"}
    assert all(r["released_quality_score"] == 1.5 for r in images)
    reasons = sorted((r["reason"], _key(r)) for r in excluded)
    assert reasons == sorted(
        [
            ("truncated", mock.quirks["truncated"]["image_path"]),
            ("missing_file", mock.quirks["missing"]["image_path"]),
            *(("invalid_metadata", r["image_path"]) for r in selected if ".." in r["image_path"]),
            *(
                ("invalid_metadata", f"ds000001/<line {mock.rows.index(r) + 2}>")
                for r in selected
                if not r["image_path"]
            ),
        ]
    )


def test_the_ssl_stream_reads_an_imported_folder_with_its_masks(imported: ImportResult) -> None:
    torch = pytest.importorskip("torch")
    from openmind_ssl.data import OpenMindStream, Preprocessing, StreamOptions

    options = StreamOptions(
        modalities=["T1w"],
        crop_size=(16, 16, 16),
        crops_per_volume=1,
        shuffle_buffer=0,
        preprocessing=Preprocessing(spacing=3.0),
    )
    sample = next(iter(OpenMindStream(imported.out, options)))
    assert sample["image"].shape == (1, 16, 16, 16) and sample["image"].dtype == torch.float32
    assert sample["anat_mask"][0, 8, 8, 8] == 1


def test_a_killed_import_resumes_without_downloading_twice(
    hub: HubServer, mock: MockRelease, tmp_path: Path
) -> None:
    out = tmp_path / "openmind"
    killed = subprocess.run(
        [sys.executable, str(CHILD), REPO, str(out), "3"],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
        env={**os.environ, "PYTHONPATH": str(CHILD.parent.parent)},
    )
    assert killed.returncode == -9, killed.stderr[-3000:]
    partial = dict(hub.bytes_served)
    result = import_release(REPO, out, modalities=["T1w"], max_iqs=2.0, download_workers=2)
    usable = [r for r in _selected(mock) if r["image_path"] and ".." not in r["image_path"]]
    assert result.resumed >= 3 and result.run + result.resumed == result.selected == len(usable)
    for path, served in hub.bytes_served.items():
        assert served == (mock.root / path).stat().st_size, (path, partial.get(path))
    fresh = import_release(mock.root, tmp_path / "local", modalities=["T1w"], max_iqs=2.0)
    # The same rows as an uninterrupted import of the local copy (provenance names the source).
    unnamed = [{**r, "provenance": None} for r in result.images.to_pylist()]
    assert unnamed == [{**r, "provenance": None} for r in fresh.images.to_pylist()]


def test_a_download_that_does_not_match_its_lfs_pointer_is_fetched_again_then_excluded(
    hub: HubServer, mock: MockRelease, tmp_path: Path
) -> None:
    import hashlib

    row = mock.quirks["clean"]
    path = f"{IMAGES_FOLDER}/{row['image_path']}"
    data = (mock.root / path).read_bytes()
    blob = hub.storage / "blobs" / hashlib.sha256(data).hexdigest()[:2]
    (blob / hashlib.sha256(data).hexdigest()).write_bytes(data[:-1] + bytes([data[-1] ^ 1]))
    result = import_release(REPO, tmp_path / "openmind", modalities=["T1w"], max_iqs=2.0)
    (excluded,) = [r for r in result.excluded.to_pylist() if r["reason"] == "checksum_mismatch"]
    assert _key(excluded) == row["image_path"] and excluded["stage"] == "import"
    assert hub.bytes_served[path] == 2 * len(data)  # once, then once again, then given up


def test_a_local_copy_keeps_every_row_and_the_released_scores(
    imported: ImportResult, mock: MockRelease
) -> None:
    rows, excluded = _by_path(imported), _excluded(imported)
    unmapped = [r for r in mock.rows if r["modality"] in ("sbref", "PET")]
    invalid = [r for r in mock.rows if not r["image_path"] or ".." in r["image_path"]]
    assert len(rows) + len(excluded) == len(mock.rows)
    for row in unmapped:
        assert excluded[row["image_path"]] == ("import", "unmapped_modality")
    reasons = [r["reason"] for r in imported.excluded.to_pylist()]
    assert reasons.count("invalid_metadata") == len(invalid) == 2
    assert excluded[mock.quirks["truncated"]["image_path"]] == ("load", "truncated")
    assert excluded[mock.quirks["missing"]["image_path"]] == ("import", "missing_file")
    for line in mock.rows:
        row = rows.get(line["image_path"])
        if row is None:
            continue
        released = float(line["image_quality_score"]) if line["image_quality_score"] else None
        assert row["released_quality_score"] == released
        assert row["image_quality_score"] == released and row["iqs_model"] == "openmind-release"
        assert row["unique_id"] == line["unique_id"] and row["license"] == "CC-BY-4.0"
    unit1 = rows[mock.quirks["unit1_denoised"]["image_path"]]
    assert unit1["modality"] == "UNIT1"
    assert {p["key"]: p["value"] for p in unit1["extra_metadata"]}["release.modality"] == (
        '"UNIT1_denoised"'
    )
    first, second = (rows[r["image_path"]] for r in mock.rows[:2])
    assert first["age"] is None and first["sex"] is None and first["weight"] is None
    assert first["bmi"] is None
    assert {p["key"]: p["value"] for p in second["extra_metadata"]}["release.age"] == ('"adult"')
    sources = pq.read_table(imported.out / "metadata" / "sources.parquet").to_pylist()
    assert {s["dataset_id"] for s in sources} == {r["dataset_id"] for r in rows.values()}
    # Nothing names this machine's folders: the release is its folder's name, details relative.
    texts = [p.read_text() for p in imported.out.glob("**/*.md")]
    texts += [p.read_text() for p in imported.out.glob("**/*.csv")]
    texts += [
        json.dumps(
            pq.read_table(p)
            .drop_columns(["image", "anat_mask", "anon_mask", "brain_mask"])
            .to_pylist()
            if "data" in p.parts
            else pq.read_table(p).to_pylist(),
            default=str,
        )
        for p in imported.out.glob("[!.]*/**/*.parquet")
    ]
    assert texts and not [t for t in texts if str(mock.root.parent) in t]


def test_released_masks_are_kept_where_the_voxels_agree_and_remade_where_not(
    imported: ImportResult, mock: MockRelease
) -> None:
    rows = _by_path(imported)

    def published(quirk: str) -> tuple[dict[str, Any], dict[str, Any]]:
        row = rows[mock.quirks[quirk]["image_path"]]
        return row, _voxels(imported, row["image_id"])

    def released(quirk: str, column: str) -> np.ndarray:
        return _file(tree_file(mock.root, mock.quirks[quirk][column]))

    row, cells = published("clean")
    assert _import_steps(row) == ["released"] and row["defacing"] == "source"
    assert np.array_equal(_array(cells["image"]), released("clean", "image_path"))
    assert np.array_equal(_array(cells["anat_mask"]), released("clean", "anat_mask_path"))
    assert np.array_equal(_array(cells["anon_mask"]), released("clean", "anon_mask_path"))
    assert cells["brain_mask"] is None

    row, cells = published("nii")
    assert row["source_path"].endswith(".nii") and row["image_path"].endswith(".nii.gz")
    assert cells["image"]["bytes"][:2] == b"\x1f\x8b"
    assert np.array_equal(_array(cells["image"]), released("nii", "image_path"))

    row, cells = published("swapped")
    assert row["qc_flags"] == ["release_masks_swapped"]
    assert np.array_equal(_array(cells["anat_mask"]), released("swapped", "anon_mask_path"))
    assert np.array_equal(_array(cells["anon_mask"]), released("swapped", "anat_mask_path"))

    row, cells = published("regridded")
    assert any("resampled" in step for step in _import_steps(row))
    expected = mock.regridded.copy()
    expected[:3] = 0  # cropped away from the released mask: no anatomy there any more
    assert np.array_equal(_array(cells["anat_mask"]), expected)

    for quirk, why in [
        ("no_anat_cell", "the release gives no anatomy mask"),
        ("no_mask_cells", "the release gives no anatomy mask"),
        ("no_anon_file", "holds no"),
        ("anon_on_signal", "still hold signal"),
    ]:
        row, cells = published(quirk)
        steps = _import_steps(row)
        assert len(steps) == 1 and steps[0].startswith("recomputed") and why in steps[0], steps
        assert row["brain_mask_backend"] is not None and cells["brain_mask"] is not None
        assert row["defacing"] in ("source", "toolkit", "out_of_view")
        assert row["anat_mask_path"] == mask_paths(row["image_path"])["anat_mask_path"]

    row, _ = published("unscored")
    assert row["image_quality_score"] is None and row["released_quality_score"] is None


def test_our_released_layout_imports_back_to_the_same_voxels(
    built: tuple[BuildResult, Path], tmp_path: Path
) -> None:
    result, tree = built
    back = import_release(tree, tmp_path / "openmind")
    ours = {r["image_path"]: r for r in result.images.to_pylist()}
    theirs = {r["image_path"]: r for r in back.images.to_pylist()}
    assert set(theirs) == set(ours) and back.excluded.num_rows == 0
    for path, row in theirs.items():
        # Defaced before the import: by the release's uploader, as far as the import knows.
        theirs_expected = {"toolkit": "source"}.get(ours[path]["defacing"], ours[path]["defacing"])
        assert row["defacing"] == theirs_expected, path
        assert row["image_quality_score"] == pytest.approx(ours[path]["image_quality_score"])
        mine, imported = _voxels(result, ours[path]["image_id"]), _voxels(back, row["image_id"])
        for column in ("image", "anat_mask", "anon_mask"):
            assert np.array_equal(_array(mine[column]), _array(imported[column])), (path, column)
            assert mine[column]["path"] == imported[column]["path"]


def test_recompute_quality_scores_against_the_peers_and_keeps_the_released_score(
    mock: MockRelease, tmp_path: Path
) -> None:
    result = import_release(
        mock.root,
        tmp_path / "openmind",
        modalities=["T1w"],
        datasets=list(GOOD),
        options=ImportOptions(recompute=("quality",)),
    )
    rows = result.images.to_pylist()
    assert rows and all(r["iqs_model"] == load_model().label for r in rows)
    assert all(r["iqm_efc"] is not None and 1 <= r["image_quality_score"] <= 5 for r in rows)
    assert {r["released_quality_score"] for r in rows} <= {1.5, None}


def test_recompute_masks_makes_every_mask_anew(mock: MockRelease, tmp_path: Path) -> None:
    result = import_release(
        mock.root,
        tmp_path / "openmind",
        modalities=["T1w"],
        datasets=["ds000002"],
        options=ImportOptions(recompute=("masks",)),
    )
    rows = result.images.to_pylist()
    assert rows and all(_import_steps(r) == ["recomputed: --recompute masks"] for r in rows)
    assert all(r["brain_mask_backend"] is not None for r in rows)
    assert all(r["iqs_model"] == "openmind-release" for r in rows)  # the score stays released


def test_bad_arguments_are_refused_with_a_hint(mock: MockRelease, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="did you mean 'T1w'"):
        import_release(mock.root, tmp_path / "a", modalities=["T1W"])
    with pytest.raises(ConfigError, match="--recompute 'brain'"):
        import_release(mock.root, tmp_path / "a", options=ImportOptions(recompute=("brain",)))
    with pytest.raises(ConfigError, match="no dataset 'ds00001'; did you mean 'ds000001'"):
        import_release(mock.root, tmp_path / "a", datasets=["ds00001"])
    with pytest.raises(ConfigError, match="outside the release"):
        import_release(mock.root, mock.root / "out")
    with pytest.raises(ConfigError, match="neither a folder here nor a Hub"):
        import_release("not a repo", tmp_path / "a")


def test_a_missing_revision_is_a_config_error(hub: HubServer, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no revision"):
        import_release(f"{REPO}@v9", tmp_path / "a")
    with pytest.raises(ConfigError, match="neither a folder here nor a dataset repo"):
        import_release("MIC-DKFZ/Nothing", tmp_path / "a")


def test_export_nnssl_reads_back_with_every_mask_where_it_belongs(
    built: tuple[BuildResult, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    result, tree = built
    monkeypatch.setenv("nnssl_raw", str(tmp_path))
    out = tmp_path / "Dataset745_OpenMind"
    runner = CliRunner()
    done = runner.invoke(app, ["export-nnssl", str(result.out), "--out", str(out)])
    assert done.exit_code == 0, done.output
    document = json.loads((out / "pretrain_data.json").read_text())
    images = read_collection(document)
    rows = {r["image_id"]: r for r in result.images.to_pylist()}
    assert sorted(i.info["image_id"] for i in images) == sorted(rows)
    raw = json.dumps(document)
    assert "NaN" not in raw and '/nan"' not in raw and f'"{tmp_path}' not in raw
    for image in images:
        assert image.path.startswith(str(tmp_path))
        cells = _voxels(result, image.info["image_id"])
        assert Path(image.path).read_bytes() == cells["image"]["bytes"]
        assert (
            image.anatomy_mask
            and Path(image.anatomy_mask).read_bytes() == cells["anat_mask"]["bytes"]
        )
        assert image.anonymization_mask
        assert Path(image.anonymization_mask).read_bytes() == cells["anon_mask"]["bytes"]
        assert image.subject == f"sub-{rows[image.info['image_id']]['subject']}"
    for threshold in (1.5, 2.0, 5.0):
        kept = {i.info["image_id"] for i in iqs_filter(document, threshold)}
        groups: dict[tuple[str, str, Any], float] = {}
        for row in rows.values():
            key = (row["dataset_id"], row["modality"], row["derived_from"])
            groups[key] = max(groups.get(key, 0.0), row["image_quality_score"])
        expected = {
            i
            for i, r in rows.items()
            if groups[(r["dataset_id"], r["modality"], r["derived_from"])] <= threshold
        }
        assert kept == expected
    again = export_nnssl(result.out, tmp_path / "pointing", tree=tree)
    assert again.images == len(rows) and not (tmp_path / "pointing" / IMAGES_FOLDER).exists()


def test_export_nnssl_refuses_a_tree_of_another_folder(
    built: tuple[BuildResult, Path], mock: MockRelease, tmp_path: Path
) -> None:
    with pytest.raises(ConfigError, match="not the tree of"):
        export_nnssl(built[0].out, tmp_path / "raw", tree=mock.root)


def test_an_image_without_a_mask_gets_null_never_a_path() -> None:
    row = {
        "image_id": "om-1", "dataset_id": "ds000001", "subject": "01", "session": None,
        "image_path": "ds000001/sub-01/anat/sub-01_T1w.nii.gz", "modality": "T1w",
        "anat_mask_path": None, "anon_mask_path": "ds000001/x__Data/deface_mask.nii.gz",
        "image_quality_score": None, "derived_from": None,
    }  # fmt: skip
    document = pretrain_data(
        [row], Path("/data"), {"om-1": {"anat_mask": False, "anon_mask": True}}, "C", 1
    )
    (image,) = read_collection(document)
    assert image.anatomy_mask is None and image.anonymization_mask.endswith("deface_mask.nii.gz")
    assert image.session == "ses-DEFAULT"
    (group,) = document["datasets"]["ds000001"]["dataset_info"]["image_quality_score"]
    assert group == {"modality": "T1w", "derived_from": None, "image_quality_score": 5.0}


def test_the_tree_is_the_release_layout(built: tuple[BuildResult, Path]) -> None:
    _, tree = built
    with (tree / METADATA_CSV).open() as file:
        rows = list(csv.DictReader(file))
    assert rows and all(r["unique_id"].startswith(r["image_path"][:8]) for r in rows)
    for row in rows:
        image = tree_file(tree, row["image_path"])
        assert (image.parent / (image.name.removesuffix(".nii.gz") + "__Data")).is_dir()
        assert row["anat_mask_path"].endswith("__Data/fb_mask.nii.gz")
        assert row["anon_mask_path"].endswith("__Data/deface_mask.nii.gz")
        assert gzip.decompress(image.read_bytes())[344:348] == b"n+1\0"

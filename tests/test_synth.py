"""The synthetic collection: deterministic, BIDS-valid, and its ground truth matches its files."""

from __future__ import annotations

import gzip
import json
import os
import re
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pytest

from openmind_data.errors import ConfigError, SynthError
from openmind_data.exclusions import ExclusionReason
from openmind_data.modalities import modality_for
from openmind_data.synth import Collection, SynthConfig, synthesize, write_montage
from openmind_data.synth.artifacts import DEGRADATIONS
from openmind_data.synth.diffusion import SCHEMES
from tests.conftest import file_digests

_ENTITY = re.compile(r"(?P<key>[a-zA-Z]+)-(?P<label>[a-zA-Z0-9]+)")


def _parse(path: str) -> tuple[str, str, dict[str, str]]:
    """datatype, suffix and entities of a BIDS path (enough for the generator's names)."""
    parts = path.split("/")
    stem = parts[-1].removesuffix(".nii.gz")
    *pairs, suffix = stem.split("_")
    entities = {m["key"]: m["label"] for p in pairs if (m := _ENTITY.fullmatch(p))}
    return parts[-2], suffix, entities


def _load(collection: Collection, rel: str) -> nib.Nifti1Image:
    return nib.load(collection.root / rel)


# -- determinism -------------------------------------------------------------------------------
def test_same_seed_same_bytes_whatever_the_worker_count(
    tmp_path: Path, tiny_config: SynthConfig
) -> None:
    one = synthesize(tmp_path / "a", tiny_config, workers=1)
    two = synthesize(tmp_path / "b", tiny_config, workers=2)
    digests = file_digests(one.root)
    assert digests == file_digests(two.root)
    assert len(digests) > 80
    other = synthesize(tmp_path / "c", SynthConfig(**{**tiny_config.to_dict(), "seed": 8}))
    changed = {k for k, v in file_digests(other.root).items() if digests.get(k) != v}
    assert any(k.endswith("_T1w.nii.gz") for k in changed)


def test_refuses_to_overwrite_what_it_did_not_make(
    tmp_path: Path, tiny_config: SynthConfig
) -> None:
    (tmp_path / "mine.txt").write_text("precious")
    with pytest.raises(SynthError, match="not empty"):
        synthesize(tmp_path, tiny_config)
    with pytest.raises(SynthError, match="refusing to delete"):
        synthesize(tmp_path, tiny_config, overwrite=True)
    assert (tmp_path / "mine.txt").read_text() == "precious"
    made = synthesize(tmp_path / "col", tiny_config)
    again = synthesize(made.root, tiny_config, overwrite=True)
    assert file_digests(made.root) == file_digests(again.root)


def test_config_validation_and_round_trip() -> None:
    config = SynthConfig(seed=3, copies=2, resolution="tiny")
    assert SynthConfig.from_dict(config.to_dict()) == config
    with pytest.raises(ConfigError, match="resolution"):
        SynthConfig(resolution="huge")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="copies"):
        SynthConfig(copies=0)
    with pytest.raises(ConfigError, match="unknown"):
        SynthConfig.from_dict({"seeds": 1})


def test_copies_scale_the_collection(tmp_path: Path, tiny_config: SynthConfig) -> None:
    config = SynthConfig(**{**tiny_config.to_dict(), "copies": 2, "subjects": 4})
    collection = synthesize(tmp_path, config, workers=2)
    assert collection.dataset_ids == [f"ds{i:06d}" for i in range(1, 11)]
    base = synthesize(tmp_path / "one", tiny_config)
    assert len(collection.files("image")) > 2 * len(base.files("image"))


# -- the truth describes every file, and nothing else -------------------------------------------
def test_truth_accounts_for_every_file_exactly_once(collection: Collection) -> None:
    on_disk = set()
    for dataset in collection.dataset_ids:
        for dirpath, _dirs, names in os.walk(collection.root / dataset):
            for name in names:
                on_disk.add((Path(dirpath) / name).relative_to(collection.root).as_posix())
    paths = [f["path"] for f in collection.files()]
    assert len(paths) == len(set(paths))
    assert set(paths) == on_disk
    roles = {f["role"] for f in collection.files()}
    assert roles == {"image", "excluded", "ignored", "metadata"}


def test_default_collection_size(collection: Collection) -> None:
    images = collection.files("image")
    assert 40 <= len(images) <= 60
    modalities = {f["modality"] for f in images}
    assert {"T1w", "T2w", "FLAIR", "PDw", "UNIT1", "MP2RAGE", "inplaneT2", "DWI"} <= modalities
    assert {f["dtype"] for f in images} == {"int16", "uint16", "float32"}
    assert {f["defacing"] for f in images if "defacing" in f} == {"none", "pydeface", "quickshear"}
    orientations = {f["orientation"] for f in images}
    assert len(orientations) >= 4


def test_expected_modalities_follow_the_vocabulary(collection: Collection) -> None:
    for record in collection.files("image"):
        datatype, suffix, entities = _parse(record["path"])
        assert modality_for(datatype, suffix, entities) == record["modality"], record["path"]


def test_images_match_their_truth(collection: Collection) -> None:
    for record in collection.files("image"):
        image = _load(collection, record["path"])
        assert list(image.shape) == record["shape"], record["path"]
        assert str(image.get_data_dtype()) == record["dtype"]
        assert "".join(nib.aff2axcodes(image.affine)) == record["orientation"]
        assert np.allclose(image.header.get_zooms()[:3], record["spacing"], atol=1e-3)
        expected_dims = 4 if record["modality"] == "DWI" else 3
        assert len(image.shape) == expected_dims
        for rel in record["truth_masks"].values():
            truth = _load(collection, rel)
            assert truth.shape == image.shape[:3]
            assert np.allclose(truth.affine, image.affine)


def test_masks_are_binary_and_consistent(collection: Collection) -> None:
    defaced = 0
    for record in collection.files("image"):
        if record["modality"] == "DWI":
            continue
        data = np.asarray(_load(collection, record["path"]).dataobj)
        masks = {
            name: np.asarray(_load(collection, rel).dataobj)
            for name, rel in record["truth_masks"].items()
        }
        for name, mask in masks.items():
            assert mask.dtype == np.uint8 and set(np.unique(mask)) <= {0, 1}, name
        anon, brain, head = masks["anon"] > 0, masks["brain"] > 0, masks["anatomy"] > 0
        assert not (anon & brain).any(), "defacing must never touch the brain"
        assert not (anon & head).any(), "removed voxels are not anatomy"
        assert not (masks["face"].astype(bool) & brain).any()
        if record["defacing"] == "none":
            assert not anon.any(), record["path"]
        else:
            defaced += 1
            assert anon.mean() > 0.02, record["path"]
            assert np.all(data[anon] == 0), "the defaced region is exactly zero"
            assert (data[~anon & ~head] > 0).mean() > 0.3, "air outside it is noisy"
        if record["is_brain_extract"]:
            assert np.array_equal(head, brain)
            assert np.all(data[~brain] == 0)
        if record["padded"]:
            assert np.all(data[0] == 0) and np.all(data[-1] == 0)
    assert defaced >= 20


def test_undefaced_heads_show_a_face(collection: Collection) -> None:
    faces = [
        f
        for f in collection.files("image")
        if f["modality"] == "T1w" and f["defacing"] == "none" and not f["is_brain_extract"]
    ]
    assert faces
    for record in faces:
        data = np.asarray(_load(collection, record["path"]).dataobj, dtype=np.float32)
        face = np.asarray(_load(collection, record["truth_masks"]["face"]).dataobj) > 0
        brain = np.asarray(_load(collection, record["truth_masks"]["brain"]).dataobj) > 0
        assert face.sum() > 100
        # The face is tissue: brighter than the background noise around the head.
        air = np.asarray(_load(collection, record["truth_masks"]["anatomy"]).dataobj) == 0
        assert np.median(data[face]) > 3 * np.median(data[air])
        assert data[brain].mean() > data[air].mean() * 5


# -- broken inputs break the way the truth says -------------------------------------------------
def _check_broken(path: Path, record: dict[str, Any]) -> None:
    reason = ExclusionReason(record["reason"])
    if reason is ExclusionReason.ZERO_BYTE:
        assert path.stat().st_size == 0
    elif reason is ExclusionReason.DANGLING_SYMLINK:
        assert path.is_symlink() and not path.exists()
        assert ".git/annex/objects" in str(path.readlink())
    elif reason is ExclusionReason.APPLEDOUBLE:
        assert path.name.startswith("._")
        assert path.read_bytes()[:4] == b"\x00\x05\x16\x07"
    elif reason is ExclusionReason.NOT_NIFTI:
        with pytest.raises(Exception):  # noqa: B017 (nibabel raises several types here)
            nib.load(path)
    elif reason is ExclusionReason.TRUNCATED:
        with pytest.raises(EOFError), gzip.open(path) as stream:
            stream.read()
    elif reason is ExclusionReason.TOO_FEW_DIMENSIONS:
        assert len(nib.load(path).shape) == 2
    elif reason is ExclusionReason.TOO_MANY_DIMENSIONS:
        assert len(nib.load(path).shape) == 5
    elif reason is ExclusionReason.NON_FINITE:
        data = np.asarray(nib.load(path).dataobj)
        assert np.isnan(data).any() and np.isinf(data).any()
    elif reason is ExclusionReason.GRADIENT_MISMATCH:
        if path.name.endswith(".nii.gz"):
            volumes = nib.load(path).shape[3]
            bvals = np.loadtxt(str(path).replace(".nii.gz", ".bval"))
            assert len(bvals) != volumes
    elif reason is ExclusionReason.INVALID_JSON:
        with pytest.raises(json.JSONDecodeError):
            json.loads(path.read_text())
    elif reason is ExclusionReason.NOT_UTF8:
        with pytest.raises(UnicodeDecodeError):
            path.read_bytes().decode("utf-8")
    elif reason is ExclusionReason.INVALID_TSV:
        rows = [line.split("\t") for line in path.read_text().splitlines()]
        assert len({len(r) for r in rows}) > 1
    elif reason is ExclusionReason.DUPLICATE:
        original = path.parents[3] / record["duplicate_of"]
        assert path.read_bytes() == original.read_bytes()
    elif reason is ExclusionReason.UNMAPPED_MODALITY:
        datatype, suffix, entities = _parse(record["path"])
        assert modality_for(datatype, suffix, entities) is None
        assert len(nib.load(path).shape) == 3
    else:
        pytest.fail(f"no check for {reason}")


def test_broken_files_break_as_the_truth_says(collection: Collection) -> None:
    excluded = collection.files("excluded")
    for record in excluded:
        _check_broken(collection.root / record["path"], record)
    reasons = {r["reason"] for r in excluded}
    assert reasons == {
        "zero_byte",
        "dangling_symlink",
        "appledouble",
        "not_nifti",
        "truncated",
        "too_few_dimensions",
        "too_many_dimensions",
        "non_finite",
        "gradient_mismatch",
        "invalid_json",
        "not_utf8",
        "invalid_tsv",
        "unmapped_modality",
        "duplicate",
    }
    assert {r["earliest_stage"] for r in excluded} == {"crawl", "load", "build"}


def test_no_broken_files_on_request(tmp_path: Path, tiny_config: SynthConfig) -> None:
    clean = synthesize(tmp_path, SynthConfig(**{**tiny_config.to_dict(), "broken": False}))
    assert clean.files("excluded") == []


# -- BIDS: pybids accepts the collection and resolves the same sidecars -------------------------
def test_pybids_validates_and_agrees_on_inherited_metadata(collection: Collection) -> None:
    from bids import BIDSLayout, BIDSLayoutIndexer

    for dataset in collection.dataset_ids:
        broken = [
            f["path"].split("/", 1)[1]
            for f in collection.files("excluded")
            if f["dataset_id"] == dataset
        ]
        ignore = ["code", "sourcedata", "derivatives", re.compile(r"(^|/)\."), *broken]
        layout = BIDSLayout(
            collection.root / dataset,
            validate=True,
            indexer=BIDSLayoutIndexer(validate=True, ignore=ignore),
        )
        indexed = set(layout.get(return_type="file", extension=".nii.gz"))
        for record in collection.files("image"):
            if record["dataset_id"] != dataset:
                continue
            path = str(collection.root / record["path"])
            assert path in indexed, f"pybids' validator rejects {record['path']}"
            metadata = layout.get_metadata(path)
            kept = {k: v for k, v in metadata.items() if k not in record["identifying_fields"]}
            assert kept == record["resolved_sidecar"], record["path"]


def test_identifying_fields_are_listed_where_present(collection: Collection) -> None:
    flagged = [f for f in collection.files("image") if f["identifying_fields"]]
    assert len(flagged) >= 3
    for record in flagged:
        sidecar = json.loads(
            (collection.root / record["path"].replace(".nii.gz", ".json")).read_text()
        )
        assert set(record["identifying_fields"]) <= set(sidecar)


def test_times_written_in_milliseconds_are_flagged(collection: Collection) -> None:
    for record in collection.files("image"):
        expected = record.get("expected") or {}
        if not expected:
            continue
        raw = record["resolved_sidecar"]["RepetitionTime"]
        if expected["converted_from_ms"]:
            assert raw == pytest.approx(expected["repetition_time"] * 1000)
        else:
            assert raw == pytest.approx(expected["repetition_time"])
    assert any(
        (f.get("expected") or {}).get("converted_from_ms") for f in collection.files("image")
    )


def test_participants_truth_matches_the_messy_cells(collection: Collection) -> None:
    tsv = (collection.root / "ds000002" / "participants.tsv").read_text().splitlines()
    header, *rows = (line.split("\t") for line in tsv)
    cells = {row[0].removeprefix("sub-"): dict(zip(header, row, strict=True)) for row in rows}
    ages = {c["age"] for c in cells.values()}
    assert {"n/a", "20-25", "89+"} <= ages
    assert {"male", "female", "1", "2"} <= {c["sex"] for c in cells.values()}
    for record in collection.files("image"):
        if record["dataset_id"] != "ds000002":
            continue
        cell = cells[record["subject"]]
        truth = record["participant"]
        assert (
            truth["sex"] == {"male": "M", "female": "F", "1": "M", "2": "F", "M": "M"}[cell["sex"]]
        )
        age = {"n/a": None, "20-25": 22.5, "89+": 89.0}.get(cell["age"])
        assert truth["age"] == (
            age if age is not None or cell["age"] == "n/a" else pytest.approx(float(cell["age"]))
        )


def test_dataset_descriptions_carry_licences(collection: Collection) -> None:
    licences = {d["dataset_id"]: d["license"] for d in collection.truth["datasets"]}
    assert licences == {
        "ds000001": "CC0-1.0",
        "ds000002": "CC-BY-4.0",
        "ds000003": "PDDL-1.0",
        "ds000004": None,
        "ds000005": "CC0-1.0",
    }
    missing = json.loads((collection.root / "ds000004/dataset_description.json").read_text())
    assert "License" not in missing


# -- diffusion ---------------------------------------------------------------------------------
def test_dwi_uses_real_schemes_and_exact_tensor_truth(collection: Collection) -> None:
    from dipy.core.gradients import gradient_table
    from dipy.reconst.dti import TensorModel

    series = [f for f in collection.files("image") if f["modality"] == "DWI"]
    assert {s["gradient_scheme"] for s in series} == {"small_64D", "gtab_3shell"}
    for record in series:
        assert record["gradient_scheme"] in SCHEMES
        stem = str(collection.root / record["path"]).removesuffix(".nii.gz")
        bvals, bvecs = np.loadtxt(f"{stem}.bval"), np.loadtxt(f"{stem}.bvec")
        image = _load(collection, record["path"])
        assert bvecs.shape == (3, image.shape[3]) and len(bvals) == image.shape[3]
        # The recorded noise level is the written file's: Rayleigh air has mean sigma*sqrt(pi/2).
        air = np.asarray(_load(collection, record["truth_masks"]["anatomy"]).dataobj) == 0
        b0 = np.asarray(image.dataobj[..., 0], dtype=np.float32)
        assert np.mean(b0[air]) / np.sqrt(np.pi / 2) == pytest.approx(
            record["noise_sigma"], rel=0.15
        )
        fa = np.asarray(_load(collection, record["truth_masks"]["fa"]).dataobj)
        md = np.asarray(_load(collection, record["truth_masks"]["md"]).dataobj)
        brain = np.asarray(_load(collection, record["truth_masks"]["brain"]).dataobj) > 0
        assert fa.min() >= 0 and fa.max() <= 1
        assert 0.5e-3 < np.median(md[brain]) < 1.5e-3
        # A plain dipy fit on the b<=1000 shell recovers the truth: the simulation is sound.
        keep = bvals <= 1100
        gtab = gradient_table(bvals[keep], bvecs=bvecs[:, keep].T)
        data = np.asarray(image.dataobj, dtype=np.float32)[..., keep]
        fit = TensorModel(gtab, fit_method="WLS").fit(data, mask=brain)
        white = brain & (fa > 0.6)
        assert white.sum() > 20
        assert np.median(np.abs(fit.fa[white] - fa[white])) < 0.06
        assert np.median(np.abs(fit.md[brain] - md[brain]) / md[brain]) < 0.06


# -- quality ladder ----------------------------------------------------------------------------
def test_quality_ladder_covers_every_degradation(collection: Collection) -> None:
    ladder = [f for f in collection.files("image") if f["dataset_id"] == "ds000005"]
    cases = {(f["degradation"], f["severity"]) for f in ladder}
    assert (None, 0) in cases
    for kind in DEGRADATIONS:
        assert {(kind, s) for s in (1, 2, 3)} <= cases


def test_noise_severity_raises_background_noise(collection: Collection) -> None:
    ladder = [
        f
        for f in collection.files("image")
        if f["dataset_id"] == "ds000005" and f["degradation"] in (None, "noise")
    ]
    spread = {}
    for record in ladder:
        data = np.asarray(_load(collection, record["path"]).dataobj, dtype=np.float32)
        head = np.asarray(_load(collection, record["truth_masks"]["anatomy"]).dataobj) > 0
        anon = np.asarray(_load(collection, record["truth_masks"]["anon"]).dataobj) > 0
        air = ~head & ~anon
        spread[record["severity"]] = data[air].std() / np.percentile(data[head], 90)
    assert spread[0] < spread[1] < spread[2] < spread[3]


def test_montage_is_a_picture(collection: Collection, tmp_path: Path) -> None:
    import matplotlib.image

    path = write_montage(collection, tmp_path / "montage.png")
    picture = matplotlib.image.imread(path)
    assert picture.shape[0] > 300 and picture.shape[1] > 600
    assert picture[..., :3].std() > 0.1  # not blank


def test_ages_in_months_become_years(collection: Collection) -> None:
    tsv = (collection.root / "ds000005" / "participants.tsv").read_text().splitlines()
    header, *rows = (line.split("\t") for line in tsv)
    assert "age_months" in header and "age" not in header
    months = {row[0].removeprefix("sub-"): float(row[header.index("age_months")]) for row in rows}
    for record in collection.files("image"):
        if record["dataset_id"] == "ds000005":
            expected = months[record["subject"]] / 12
            assert record["participant"]["age"] == pytest.approx(expected, abs=1e-3)

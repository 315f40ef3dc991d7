"""The crawl's parts on hand-made inputs: names, headers, normalisation, participants."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from openmind_data.crawl import crawl, crawl_dataset, find_datasets
from openmind_data.crawl.bidsname import parse_bids_name
from openmind_data.crawl.header import read_header
from openmind_data.crawl.normalize import (
    normalize_age,
    normalize_doi,
    normalize_handedness,
    normalize_license,
    normalize_manufacturer,
    normalize_seconds,
    normalize_sex,
    normalize_tesla,
)
from openmind_data.crawl.privacy import IDENTIFYING_FIELDS, is_identifying
from openmind_data.errors import ConfigError, InvalidInputError


def test_bids_names() -> None:
    name = parse_bids_name("sub-01/ses-2/anat/sub-01_ses-2_acq-MPRAGE_run-01_T1w.nii.gz")
    assert name is not None
    assert name.entities == {"sub": "01", "ses": "2", "acq": "MPRAGE", "run": "01"}
    assert (name.suffix, name.extension, name.datatype) == ("T1w", ".nii.gz", "anat")
    top = parse_bids_name("acq-MPRAGE_T1w.json")
    assert top is not None and top.matches(name)
    assert parse_bids_name("run-1_T1w.json").matches(name)  # type: ignore[union-attr]
    assert not parse_bids_name("acq-other_T1w.json").matches(name)  # type: ignore[union-attr]
    assert not parse_bids_name("T2w.json").matches(name)  # type: ignore[union-attr]
    assert parse_bids_name("README") is None
    assert parse_bids_name("sub-01/anat/sub-01_bad entity_T1w.nii.gz") is None
    inherited = parse_bids_name("sub-01/sub-01_T1w.json")
    assert inherited is not None and inherited.datatype is None


def _nifti(path: Path, shape: tuple[int, ...]) -> Path:
    data = np.arange(np.prod(shape), dtype=np.int16).reshape(shape)
    nib.save(nib.Nifti1Image(data, np.diag([1.0, 1.2, 3.0, 1.0])), path)
    return path


def test_header_reads_shape_spacing_orientation_without_voxels(tmp_path: Path) -> None:
    info = read_header(str(_nifti(tmp_path / "a.nii.gz", (6, 7, 8))))
    assert info.shape == (6, 7, 8)
    assert info.spacing == pytest.approx((1.0, 1.2, 3.0))
    assert (info.orientation, info.dtype) == ("RAS", "int16")
    plain = read_header(str(_nifti(tmp_path / "a.nii", (6, 7, 8, 1))))
    assert plain.shape == (6, 7, 8)  # trailing singleton dimensions do not count
    two = nib.Nifti2Image(np.zeros((4, 5, 6), np.float32), np.diag([-2.0, 2, 2, 1]))
    nib.save(two, tmp_path / "two.nii.gz")
    assert read_header(str(tmp_path / "two.nii.gz")).orientation == "LAS"
    big = nib.Nifti1Image(np.zeros((4, 5, 6), ">f4"), np.eye(4))
    nib.save(big, tmp_path / "big.nii")
    assert read_header(str(tmp_path / "big.nii")).dtype == "float32"


def test_header_only_qform(tmp_path: Path) -> None:
    image = nib.Nifti1Image(np.zeros((4, 5, 6), np.int16), None)
    image.set_qform(np.diag([-1.0, -1, 1, 1]), code=1)
    image.set_sform(np.eye(4), code=0)
    nib.save(image, tmp_path / "q.nii.gz")
    assert read_header(str(tmp_path / "q.nii.gz")).orientation == "LPS"


@pytest.mark.parametrize(
    ("make", "reason"),
    [
        (lambda p: p.write_bytes(b""), "zero_byte"),
        (lambda p: p.symlink_to("missing/target.nii.gz"), "dangling_symlink"),
        (lambda p: p.write_bytes(b"<html>404</html>"), "not_nifti"),
        (lambda p: p.write_bytes(gzip.compress(b"not a nifti header" * 50)), "not_nifti"),
        (lambda p: p.write_bytes(b"\x1f\x8b\x08\x00garbage-after-magic" * 10), "not_nifti"),
    ],
)
def test_header_rejects_broken_files_with_reasons(
    tmp_path: Path, make: object, reason: str
) -> None:
    path = tmp_path / "x.nii.gz"
    make(path)  # type: ignore[operator]
    with pytest.raises(InvalidInputError) as caught:
        read_header(str(path))
    assert caught.value.reason == reason
    assert str(path) in str(caught.value)


def test_header_detects_truncation(tmp_path: Path) -> None:
    full = _nifti(tmp_path / "t.nii.gz", (20, 20, 20))
    full.write_bytes(full.read_bytes()[:-200])
    with pytest.raises(InvalidInputError, match="truncated"):
        read_header(str(full))
    plain = _nifti(tmp_path / "t.nii", (20, 20, 20))
    plain.write_bytes(plain.read_bytes()[:-10])
    with pytest.raises(InvalidInputError, match="truncated"):
        read_header(str(plain))
    flat = _nifti(tmp_path / "flat.nii.gz", (20, 20, 1))
    with pytest.raises(InvalidInputError, match="too_few_dimensions"):
        read_header(str(flat))


def test_multi_member_gzip_is_not_truncation(tmp_path: Path) -> None:
    """A trailer that disagrees (several gzip members) is checked by reading the stream."""
    image = nib.Nifti1Image(np.ones((10, 10, 10), np.int16), np.eye(4))
    raw = image.to_bytes()
    path = tmp_path / "m.nii.gz"
    path.write_bytes(gzip.compress(raw[:1000]) + gzip.compress(raw[1000:]))
    assert read_header(str(path)).shape == (10, 10, 10)


@pytest.mark.parametrize(
    ("raw", "units", "years", "unusual"),
    [
        ("25", None, 25.0, False),
        ("25.5", None, 25.5, False),
        (" 31 ", None, 31.0, False),
        ("n/a", None, None, False),
        ("", None, None, False),
        ("20-25", None, 22.5, True),
        ("89+", None, 89.0, True),
        (">89", None, 89.0, True),
        ("302", "months", 302 / 12, False),
        ("adult", None, None, True),
        (30, None, 30.0, False),
        ("26y", None, 26.0, False),
    ],
)
def test_age(raw: object, units: str | None, years: float | None, unusual: bool) -> None:
    value, flagged = normalize_age(raw, units)
    assert value == (pytest.approx(years) if years is not None else None)
    assert flagged is unusual


def test_codes_and_spellings() -> None:
    levels = {"1": "male", "2": "female"}
    assert [normalize_sex(v, levels) for v in ("1", "2", "M", "female", "x")] == [
        "M",
        "F",
        "M",
        "F",
        None,
    ]
    assert normalize_sex("1") is None  # a bare code without Levels is not guessed
    assert normalize_sex("F", {"F": {"Description": "female"}}) == "F"
    assert [normalize_handedness(v) for v in ("right", "L", "ambidextrous", "n/a")] == [
        "R",
        "L",
        "A",
        None,
    ]
    assert [
        normalize_manufacturer(v)
        for v in (
            "SIEMENS",
            "GE MEDICAL SYSTEMS",
            "Philips Medical Systems",
            "Toshiba",
            None,
            "Acme",
        )
    ] == ["Siemens", "GE", "Philips", "Canon", None, "Acme"]
    assert normalize_tesla(3) == 3.0 and normalize_tesla(30000) == 3.0
    assert normalize_tesla("1.5") == 1.5 and normalize_tesla(-1) is None


def test_times_in_milliseconds_are_converted() -> None:
    assert normalize_seconds(2300, 20.0) == (2.3, True)
    assert normalize_seconds(2.3, 20.0) == (2.3, False)
    assert normalize_seconds(0.00298, 1.0) == (0.00298, False)
    assert normalize_seconds(2.98, 1.0) == (pytest.approx(0.00298), True)
    assert normalize_seconds(5e6, 20.0) == (None, False)
    assert normalize_seconds("n/a", 1.0) == (None, False)


def test_licences_and_dois() -> None:
    cases = {
        "CC0": "CC0-1.0",
        "CC0 1.0": "CC0-1.0",
        "PDDL": "PDDL-1.0",
        "ODC-PDDL-1.0": "PDDL-1.0",
        "CC-BY 4.0": "CC-BY-4.0",
        "CC BY 4.0": "CC-BY-4.0",
        "CC-BY-4.0": "CC-BY-4.0",
        "Creative Commons Attribution 4.0 International": "CC-BY-4.0",
        "CC-BY-NC-SA-4.0": "CC-BY-NC-SA-4.0",
        "Custom terms": "Custom terms",
    }
    for raw, spdx in cases.items():
        assert normalize_license(raw) == spdx, raw
    assert normalize_license(None) is None
    for raw in (
        "10.18112/openneuro.ds000001.v1.0.0",
        "doi:10.18112/openneuro.ds000001.v1.0.0",
        "https://doi.org/10.18112/openneuro.ds000001.v1.0.0",
    ):
        assert normalize_doi(raw) == "doi:10.18112/openneuro.ds000001.v1.0.0"


def test_identifying_fields_list() -> None:
    for field in (
        "AcquisitionDateTime",
        "InstitutionName",
        "InstitutionAddress",
        "DeviceSerialNumber",
        "StationName",
        "PatientName",
        "PatientID",
        "PatientBirthDate",
        "acquisitiontime",
    ):
        assert is_identifying(field), field
    for field in ("RepetitionTime", "Manufacturer", "MagneticFieldStrength", "EchoTime"):
        assert not is_identifying(field)
    assert len(IDENTIFYING_FIELDS) >= 30


def _dataset(root: Path, description: dict[str, object] | None = None) -> Path:
    root.mkdir(parents=True)
    (root / "dataset_description.json").write_text(
        json.dumps(description or {"Name": "t", "BIDSVersion": "1.8.0", "License": "CC0"})
    )
    return root


def test_dwi_gradients_inherited_and_checked(tmp_path: Path) -> None:
    ds = _dataset(tmp_path / "ds1")
    dwi = ds / "sub-01" / "dwi"
    dwi.mkdir(parents=True)
    image = nib.Nifti1Image(np.zeros((4, 4, 4, 7), np.int16), np.eye(4))
    nib.save(image, dwi / "sub-01_dwi.nii.gz")
    (ds / "dwi.bval").write_text("0 1000 1000 1000 1000 1000 1000\n")
    (ds / "dwi.bvec").write_text("\n".join(" ".join(["0"] * 7) for _ in range(3)) + "\n")
    result = crawl_dataset(str(ds))
    [row] = result.candidates
    assert (row["bval_path"], row["bvec_path"]) == ("dwi.bval", "dwi.bvec")
    # One row per volume is accepted too; a wrong count is not.
    (ds / "dwi.bvec").write_text("\n".join("1 0 0" for _ in range(7)) + "\n")
    assert len(crawl_dataset(str(ds)).candidates) == 1
    (ds / "dwi.bval").write_text("0 1000 1000\n")
    [excluded] = crawl_dataset(str(ds)).excluded
    assert excluded["reason"] == "gradient_mismatch"
    (ds / "dwi.bval").unlink()
    [excluded] = crawl_dataset(str(ds)).excluded
    assert excluded["reason"] == "missing_gradients"


def test_4d_anatomy_and_masks(tmp_path: Path) -> None:
    ds = _dataset(tmp_path / "ds2")
    anat = ds / "sub-01" / "anat"
    anat.mkdir(parents=True)
    nib.save(
        nib.Nifti1Image(np.zeros((4, 4, 4, 2), np.int16), np.eye(4)), anat / "sub-01_T1w.nii.gz"
    )
    nib.save(
        nib.Nifti1Image(np.zeros((4, 4, 4), np.uint8), np.eye(4)), anat / "sub-01_defacemask.nii.gz"
    )
    result = crawl_dataset(str(ds))
    assert [r["reason"] for r in result.excluded] == ["too_many_dimensions"]
    rules = {r["path"]: r["rule"] for r in result.ignored}
    assert rules["sub-01/anat/sub-01_defacemask.nii.gz"] == "mask:defacemask"


def test_find_datasets(tmp_path: Path) -> None:
    _dataset(tmp_path / "mirror" / "ds000001")
    _dataset(tmp_path / "mirror" / "ds000002")
    (tmp_path / "mirror" / "notes").mkdir()
    single = _dataset(tmp_path / "single" / "ds000003")
    found = find_datasets([tmp_path / "mirror", single])
    assert [p.name for p in found] == ["ds000001", "ds000002", "ds000003"]
    with pytest.raises(ConfigError, match="no BIDS dataset"):
        find_datasets([tmp_path / "mirror" / "notes"])
    _dataset(tmp_path / "other" / "ds000001")
    with pytest.raises(ConfigError, match="unique"):
        find_datasets([tmp_path / "mirror", tmp_path / "other"])
    assert crawl(tmp_path / "mirror").sources.num_rows == 2


def test_unreadable_files_and_linked_folders_do_not_stop_the_crawl(tmp_path: Path) -> None:
    import os

    ds = _dataset(tmp_path / "ds3")
    anat = ds / "sub-01" / "anat"
    anat.mkdir(parents=True)
    nib.save(nib.Nifti1Image(np.zeros((4, 4, 4), np.int16), np.eye(4)), anat / "sub-01_T1w.nii.gz")
    (ds / "sub-02").symlink_to(ds / "sub-01", target_is_directory=True)
    locked = anat / "sub-01_T2w.nii.gz"
    locked.write_bytes(b"x")
    locked.chmod(0)
    try:
        readable = os.access(locked, os.R_OK)  # root reads anything
        result = crawl_dataset(str(ds))
    finally:
        locked.chmod(0o644)
    assert [r["source_path"] for r in result.candidates] == ["sub-01/anat/sub-01_T1w.nii.gz"]
    assert {r["path"]: r["rule"] for r in result.ignored}["sub-02"] == "symlinked folder"
    [excluded] = result.excluded
    assert excluded["reason"] == ("not_nifti" if readable else "unreadable_header")

"""The synthetic fine-tuning tasks: nnU-Net layout, lesion placement and contrast, determinism,
and a classification set whose lesion images differ from their healthy replay only at lesions."""

from __future__ import annotations

import csv
import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pytest
from nibabel.orientations import aff2axcodes
from numpy.typing import NDArray
from scipy import ndimage

from openmind_data.synth import BRAIN_FLAG, label_codes, phantom_resolution, sample_phantom
from openmind_data.templates import Tissue, head_phantom
from openmind_ssl.finetune.synthetic import (
    CaseSpec,
    case_spec,
    render_case,
    write_classification_task,
    write_segmentation_task,
)

VOXEL_MM = 4.0
SEG_CASES = 3
CLS_CASES = 4


def _array(path: Path) -> NDArray[Any]:
    return np.asarray(nib.load(path).dataobj)


def _phantom_codes(spec: CaseSpec) -> NDArray[np.uint8]:
    """The phantom's tissue and brain codes sampled in the case's pose, independently of the
    renderer."""
    resolution = phantom_resolution(spec.grid)
    phantom = head_phantom(resolution)
    codes: NDArray[np.uint8] = sample_phantom(
        label_codes(resolution), phantom, spec.grid, spec.pose, order=0
    )
    return codes


@pytest.fixture(scope="module")
def segmentation(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("segmentation") / "Dataset901_Lesions"
    returned = write_segmentation_task(out, cases=SEG_CASES, seed=0, voxel_mm=VOXEL_MM)
    assert returned == out
    return out


@pytest.fixture(scope="module")
def classification(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("classification")
    return write_classification_task(out, cases=CLS_CASES, seed=0, voxel_mm=VOXEL_MM)


def test_segmentation_layout(segmentation: Path) -> None:
    description = json.loads((segmentation / "dataset.json").read_text())
    assert isinstance(description.pop("name"), str)
    assert isinstance(description.pop("description"), str)
    assert description == {
        "channel_names": {"0": "T1w", "1": "FLAIR"},
        "labels": {"background": 0, "lesion": 1, "perilesional": 2},
        "numTraining": SEG_CASES,
        "file_ending": ".nii.gz",
        "licence": "CC-BY-4.0",
        "reference": "synthetic (openmind-toolkit)",
    }
    cases = [f"lesions_{i:03d}" for i in range(SEG_CASES)]
    assert sorted(p.name for p in (segmentation / "labelsTr").iterdir()) == [
        f"{case}.nii.gz" for case in cases
    ]
    assert sorted(p.name for p in (segmentation / "imagesTr").iterdir()) == [
        f"{case}_{k:04d}.nii.gz" for case in cases for k in (0, 1)
    ]
    for case in cases:
        label = nib.load(segmentation / "labelsTr" / f"{case}.nii.gz")
        assert label.get_data_dtype() == np.uint8
        assert label.header.get_zooms() == (VOXEL_MM, VOXEL_MM, VOXEL_MM)
        assert aff2axcodes(label.affine) == ("R", "A", "S")
        for k in (0, 1):
            image = nib.load(segmentation / "imagesTr" / f"{case}_{k:04d}.nii.gz")
            assert image.get_data_dtype() == np.float32
            assert image.shape == label.shape
            np.testing.assert_array_equal(image.affine, label.affine)
            assert np.isfinite(image.get_fdata()).all()


def test_lesions_sit_in_the_brain_with_their_contrast(segmentation: Path) -> None:
    for i in range(SEG_CASES):
        case = f"lesions_{i:03d}"
        labels = _array(segmentation / "labelsTr" / f"{case}.nii.gz")
        t1w = _array(segmentation / "imagesTr" / f"{case}_0000.nii.gz")
        flair = _array(segmentation / "imagesTr" / f"{case}_0001.nii.gz")
        assert set(np.unique(labels)) == {0, 1, 2}, case

        codes = _phantom_codes(case_spec("segmentation", i, seed=0, voxel_mm=VOXEL_MM))
        brain = codes >= BRAIN_FLAG
        core, rim = labels == 1, labels == 2
        assert brain[labels > 0].all(), case
        # The rim is a shell around the core, at most two voxels deep.
        assert (rim <= ndimage.binary_dilation(core, iterations=2)).all(), case
        white = brain & (codes % BRAIN_FLAG == Tissue.WM) & (labels == 0)
        assert flair[core].mean() > 1.3 * flair[white].mean(), case
        assert flair[rim].mean() > flair[white].mean(), case
        assert t1w[core].mean() < 0.8 * t1w[white].mean(), case
        assert np.median(flair[labels > 0]) > np.median(flair[white]), case


def test_each_lesion_spans_two_voxels_at_4mm() -> None:
    for i in range(SEG_CASES):
        spec = case_spec("segmentation", i, seed=0, voxel_mm=VOXEL_MM)
        assert 1 <= len(spec.lesions) <= 4
        for lesion in spec.lesions:
            assert 6.0 <= min(lesion.semi_axes) <= max(lesion.semi_axes) <= 14.0
            core = render_case(replace(spec, lesions=(lesion,)), ("FLAIR",)).labels == 1
            extent = [np.ptp(axis) + 1 for axis in np.nonzero(core)]
            assert min(extent) >= 2, (i, extent)


def test_same_seed_same_arrays_other_seed_different(segmentation: Path, tmp_path: Path) -> None:
    again = write_segmentation_task(tmp_path / "again", cases=2, seed=0, voxel_mm=VOXEL_MM)
    other = write_segmentation_task(tmp_path / "other", cases=2, seed=1, voxel_mm=VOXEL_MM)
    for name in ("imagesTr/lesions_001_0000.nii.gz", "labelsTr/lesions_001.nii.gz"):
        first = _array(segmentation / name)
        assert _array(again / name).tobytes() == first.tobytes()
        assert (again / name).read_bytes() == (segmentation / name).read_bytes()
        assert _array(other / name).tobytes() != first.tobytes()


def test_a_channel_looks_the_same_whatever_the_others(segmentation: Path, tmp_path: Path) -> None:
    out = write_segmentation_task(tmp_path, cases=2, voxel_mm=VOXEL_MM, channels=("FLAIR", "T2w"))
    description = json.loads((out / "dataset.json").read_text())
    assert description["channel_names"] == {"0": "FLAIR", "1": "T2w"}
    np.testing.assert_array_equal(
        _array(out / "imagesTr/lesions_000_0000.nii.gz"),
        _array(segmentation / "imagesTr/lesions_000_0001.nii.gz"),
    )
    labels = _array(out / "labelsTr/lesions_000.nii.gz")
    t2w = _array(out / "imagesTr/lesions_000_0001.nii.gz")
    codes = _phantom_codes(case_spec("segmentation", 0, seed=0, voxel_mm=VOXEL_MM))
    white = (codes == BRAIN_FLAG + Tissue.WM) & (labels == 0)
    assert t2w[labels == 1].mean() > 1.3 * t2w[white].mean()


def test_classification_table(classification: Path) -> None:
    assert classification.name == "labels.csv"
    with classification.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [row["label"] for row in rows] == ["healthy", "lesions"] * (CLS_CASES // 2)
    assert [row["image"] for row in rows] == [
        f"images/subject_{i:03d}.nii.gz" for i in range(CLS_CASES)
    ]
    shapes = {nib.load(classification.parent / row["image"]).shape for row in rows}
    assert len(shapes) == 1


def test_lesion_images_differ_from_healthy_ones_only_at_lesions(classification: Path) -> None:
    folder = classification.parent
    for i in range(CLS_CASES):
        written = _array(folder / f"images/subject_{i:03d}.nii.gz")
        spec = case_spec("classification", i, seed=0, voxel_mm=VOXEL_MM)
        replay = render_case(spec, ("FLAIR",))
        np.testing.assert_array_equal(replay.images["FLAIR"], written)
        if i % 2 == 0:
            assert spec.lesions == ()
            assert not replay.labels.any()
            continue
        assert 2 <= len(spec.lesions) <= 5
        healthy = render_case(replace(spec, lesions=()), ("FLAIR",)).images["FLAIR"]
        changed = written != healthy
        lesion = replay.labels > 0
        assert changed.any()
        assert not (changed & ~lesion).any()
        assert changed[replay.labels == 1].all()
        assert written[lesion].mean() > healthy[lesion].mean()


@pytest.mark.parametrize(
    ("options", "argument"),
    [
        ({"cases": 1}, "cases"),
        ({"voxel_mm": 0.0}, "voxel_mm"),
        ({"voxel_mm": -2.0}, "voxel_mm"),
        ({"voxel_mm": 12.0}, "voxel_mm"),
        ({"channels": ()}, "channels"),
        ({"channels": ("T1w", "DWI")}, "channels"),
        ({"channels": "FLAIR"}, "channels"),
        ({"channels": ("FLAIR", "FLAIR")}, "channels"),
    ],
)
def test_bad_arguments(tmp_path: Path, options: dict[str, Any], argument: str) -> None:
    with pytest.raises(ValueError, match=argument):
        write_segmentation_task(tmp_path, **options)
    if "channels" not in options:
        with pytest.raises(ValueError, match=argument):
            write_classification_task(tmp_path, **options)
    assert not any(tmp_path.iterdir())

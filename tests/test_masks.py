"""Anatomy, anonymization and brain masks, defacing and its check, against the synthetic truth."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pyarrow as pa
import pytest
from numpy.typing import NDArray
from scipy import ndimage

from openmind_data.crawl import CrawlResult
from openmind_data.errors import ConfigError, InvalidInputError
from openmind_data.masks import (
    MaskOptions,
    brain_masker,
    foreground,
    mask_image,
    quickshear,
    run_masks,
    write_mask_figure,
)
from openmind_data.masks.anatomy import fill_holes, zero_padding
from openmind_data.masks.brain import for_image
from openmind_data.nifti import encode_mask
from openmind_data.release.layout import mask_paths
from openmind_data.schema import IMAGE_SCHEMA
from openmind_data.synth import Collection

ANATOMY_DICE = 0.95
ANON_DICE = 0.90


def dice(a: NDArray[np.bool_], b: NDArray[np.bool_]) -> float:
    total = int(a.sum() + b.sum())
    return 1.0 if total == 0 else 2.0 * float((a & b).sum()) / total


def load_mask(path: Path) -> NDArray[np.bool_]:
    return np.asarray(nib.load(path).dataobj) > 0


def anatomical(collection: Collection) -> list[dict[str, Any]]:
    return [f for f in collection.files("image") if f["modality"] != "DWI"]


def truth_masks(collection: Collection, record: dict[str, Any]) -> dict[str, NDArray[np.bool_]]:
    return {k: load_mask(collection.root / v) for k, v in record["truth_masks"].items()}


def truth_record(collection: Collection, row: dict[str, Any]) -> dict[str, Any]:
    path = f"{row['dataset_id']}/{row['source_path']}"
    return next(f for f in collection.files() if f["path"] == path)


# -- anatomy and anonymization masks from the voxels ----------------------------------------------


@pytest.fixture(scope="module")
def found(collection: Collection) -> list[tuple[dict[str, Any], Any, dict[str, Any]]]:
    out = []
    for record in anatomical(collection):
        image = nib.load(collection.root / record["path"])
        result = foreground(image.get_fdata(dtype=np.float32), image.header.get_zooms())
        out.append((record, result, truth_masks(collection, record)))
    return out


def test_anatomy_masks_match_the_truth_for_every_contrast(found: list[Any]) -> None:
    scores = {}
    for record, result, truth in found:
        scores[record["path"]] = dice(result.anatomy, truth["anatomy"])
    extreme = {
        path
        for path, (record, _, _) in zip(scores, found, strict=True)
        if record.get("severity") == 3 and record.get("degradation") == "blur"
    }
    low = {p: round(s, 3) for p, s in scores.items() if s < ANATOMY_DICE and p not in extreme}
    assert not low, low
    # The heaviest blur of the quality ladder smears the head's edge over several voxels.
    assert all(scores[p] >= 0.93 for p in extreme)
    contrasts = {record["modality"] for record, _, _ in found}
    assert {"T1w", "T2w", "FLAIR", "PDw", "UNIT1", "MP2RAGE", "inplaneT2"} <= contrasts


def test_anonymization_masks_match_where_defaced_and_are_empty_elsewhere(
    found: list[Any],
) -> None:
    for record, result, truth in found:
        if truth["anon"].any():
            assert dice(result.anon, truth["anon"]) >= ANON_DICE, record["path"]
        else:
            assert result.anon.mean() <= 0.001, record["path"]
    padded = [r for r, _, _ in found if r.get("padded")]
    defaced = [r for r, _, _ in found if r.get("defacing") != "none"]
    assert padded and defaced  # both cases were really seen


def test_brain_extraction_is_read_from_the_voxels(found: list[Any]) -> None:
    for record, result, _ in found:
        assert result.is_brain_extract == record["is_brain_extract"], record["path"]
    assert any(r["is_brain_extract"] for r, _, _ in found)


def test_padding_is_whole_border_planes_only() -> None:
    data = np.ones((10, 12, 8), dtype=np.float32)
    data = np.pad(data, ((2, 1), (0, 3), (1, 0)))
    data[5, 5, 5] = 0.0  # an interior zero is not padding
    padding = zero_padding(data)
    assert padding.sum() == data.size - 10 * 12 * 8
    assert not padding[5, 5, 5]


def test_fill_holes_fills_enclosed_and_slice_enclosed_holes() -> None:
    shell = np.zeros((9, 9, 9), dtype=bool)
    shell[1:8, 1:8, 1:8] = True
    shell[3:6, 3:6, 3:6] = False  # enclosed in 3D
    assert fill_holes(shell)[4, 4, 4]
    tube = np.zeros((9, 9, 9), dtype=bool)
    tube[1:8, 1:8, :] = True
    tube[3:6, 3:6, :] = False  # a canal open at both ends: only slices across z enclose it
    assert not fill_holes(tube)[4, 4, 4]
    assert fill_holes(tube, slices_across=2)[4, 4, 4]


def test_fill_holes_matches_scipy_inside_and_at_the_grid_edge() -> None:
    # Random bodies, some touching the grid's faces, some far from them (where fill_holes
    # works in their bounding box only): the same voxels as scipy's iterative filling.
    rng = np.random.default_rng(7)
    for trial in range(12):
        mask = ndimage.binary_dilation(rng.random((23, 31, 27)) < 0.03, iterations=2)
        if trial % 2:
            mask[:4], mask[:, -5:], mask[..., :3] = False, False, False
        assert (fill_holes(mask) == ndimage.binary_fill_holes(mask)).all(), trial


# -- defacing, the brain mask and the check -------------------------------------------------------


def test_quickshear_removes_the_face_and_keeps_the_brain(collection: Collection) -> None:
    undefaced = [
        r for r in anatomical(collection) if r["defacing"] == "none" and not r["is_brain_extract"]
    ]
    assert len(undefaced) >= 4
    for record in undefaced:
        truth = truth_masks(collection, record)
        affine = nib.load(collection.root / record["path"]).affine
        cut = quickshear(truth["brain"], affine)
        assert (cut & truth["face"]).sum() >= 0.95 * truth["face"].sum(), record["path"]
        assert (cut & truth["brain"]).sum() <= 0.005 * truth["brain"].sum(), record["path"]


def test_policies(collection: Collection) -> None:
    record = next(
        r for r in anatomical(collection) if r["defacing"] == "none" and not r["is_brain_extract"]
    )
    image = nib.load(collection.root / record["path"])
    data, zooms = image.get_fdata(dtype=np.float32), image.header.get_zooms()
    with pytest.raises(InvalidInputError) as error:
        mask_image(data, image.affine, zooms, MaskOptions(deface="exclude"), None, where="x")
    assert error.value.reason == "deface_unconfirmed"
    kept = mask_image(
        data, image.affine, zooms, MaskOptions(brain="none", deface="off"), None, where="x"
    )
    assert kept.fields["defacing"] == "none" and not kept.anon.any()
    np.testing.assert_array_equal(kept.data, data)
    with pytest.raises(ConfigError):
        MaskOptions(brain="none", deface="deface")
    with pytest.raises(ConfigError):
        MaskOptions(deface="blur")


def test_a_defacing_that_cuts_the_brain_is_excluded_or_flagged(collection: Collection) -> None:
    record = next(r for r in anatomical(collection) if r["defacing"] == "pydeface")
    image = nib.load(collection.root / record["path"])
    data = image.get_fdata(dtype=np.float32)
    brain = truth_masks(collection, record)["brain"]
    # Cut a thick slab through the middle of the brain, as a careless defacer might.
    middle = int(np.median(np.argwhere(brain)[:, 0]))
    data[middle - 6 : middle + 6] = 0.0
    with pytest.raises(InvalidInputError) as error:
        mask_image(
            data,
            image.affine,
            image.header.get_zooms(),
            MaskOptions(brain="template"),
            brain_masker("template"),
            where=record["path"],
        )
    assert error.value.reason == "deface_hits_brain" and record["path"] in str(error.value)
    result = mask_image(
        data,
        image.affine,
        image.header.get_zooms(),
        MaskOptions(brain="template", brain_cut="flag"),
        brain_masker("template"),
        where=record["path"],
    )
    assert result.fields["defacing"] == "source"
    assert result.fields["anon_brain_overlap"] > 0.02
    assert result.fields["qc_flags"] == ["deface_hits_brain"]


def test_non_finite_and_empty_images_are_refused() -> None:
    data = np.ones((8, 8, 8), dtype=np.float32)
    options = MaskOptions(brain="none", deface="off")
    with pytest.raises(InvalidInputError) as error:
        mask_image(data, np.eye(4), (1.0, 1.0, 1.0), options, None, where="flat.nii.gz")
    assert error.value.reason == "empty_image"
    data[1, 1, 1] = np.nan
    with pytest.raises(InvalidInputError) as error:
        mask_image(data, np.eye(4), (1.0, 1.0, 1.0), options, None, where="nan.nii.gz")
    assert error.value.reason == "non_finite"


def test_only_boolean_masks_can_be_encoded() -> None:
    like = nib.Nifti1Image(np.zeros((4, 5, 6), dtype=np.float32), np.eye(4))
    labels = np.zeros((4, 5, 6), dtype=np.int16)
    labels[0] = -1
    with pytest.raises(TypeError):
        encode_mask(labels, like)
    with pytest.raises(ValueError, match="shape"):
        encode_mask(np.zeros((4, 5, 5), dtype=bool), like)


# -- the stage over the collection, files on disk -------------------------------------------------


def test_every_candidate_is_masked_or_excluded_with_a_reason(
    collection: Collection, crawled: CrawlResult, masked: tuple[Path, Any]
) -> None:
    _, result = masked
    anatomical_rows = [r for r in crawled.candidates.to_pylist() if r["modality"] != "DWI"]
    done = {r["image_id"] for r in result.images.to_pylist()}
    refused = {r["image_id"]: r["reason"] for r in result.excluded.to_pylist()}
    assert done | set(refused) == {r["image_id"] for r in anatomical_rows}
    assert not done & set(refused)
    # The collection's NaN/Inf image is caught when its voxels are first read.
    truth = {f["path"]: f for f in collection.files()}
    for row in anatomical_rows:
        if row["image_id"] in refused:
            expected = truth[f"{row['dataset_id']}/{row['source_path']}"]
            assert refused[row["image_id"]] == expected["reason"], row["source_path"]


def test_written_masks_are_binary_in_the_image_grid_and_never_swapped(
    collection: Collection, masked: tuple[Path, Any]
) -> None:
    """Each file is compared with the truth of its own name: a swapped pair cannot pass, since
    anatomy, brain and anonymization masks differ from one another far more than from their
    truths."""
    out, result = masked
    for row in result.images.to_pylist():
        source = nib.load(collection.root / row["dataset_id"] / row["source_path"])
        record = truth_record(collection, row)
        truth = truth_masks(collection, record)
        assert row["anat_mask_path"] == mask_paths(row["image_path"])["anat_mask_path"]
        files = {
            "anatomy": out / row["anat_mask_path"],
            "anon": out / row["anon_mask_path"],
            "brain": out / row["brain_mask_path"],
        }
        masks = {}
        for name, path in files.items():
            image = nib.load(path)
            raw = np.asarray(image.dataobj)
            assert raw.dtype == np.uint8 and set(np.unique(raw)) <= {0, 1}, path
            assert image.shape == source.shape
            np.testing.assert_allclose(image.affine, source.affine, atol=1e-4)
            masks[name] = raw > 0
        toolkit = row["defacing"] == "toolkit"
        removed = masks["anon"] if toolkit else np.zeros_like(masks["anon"])
        assert dice(masks["anatomy"], truth["anatomy"] & ~removed) >= 0.93, row["image_path"]
        assert dice(masks["brain"], truth["brain"]) >= 0.90, row["image_path"]
        if truth["anon"].any():
            assert dice(masks["anon"], truth["anon"]) >= ANON_DICE, row["image_path"]
        assert not (masks["anon"] & masks["anatomy"]).any()


@pytest.mark.parametrize("cut", [200, 5000])  # inside the header; inside the voxels
def test_a_cut_file_is_excluded_as_truncated(
    tmp_path: Path, collection: Collection, crawled: CrawlResult, cut: int
) -> None:
    row = next(r for r in crawled.candidates.to_pylist() if r["modality"] == "T1w")
    image_path = f"{row['dataset_id']}/{row['source_path']}"
    source = (collection.root / image_path).read_bytes()
    (tmp_path / image_path).parent.mkdir(parents=True)
    (tmp_path / image_path).write_bytes(source[:cut])
    derived = pa.Table.from_pylist([{**row, "image_path": image_path}], schema=IMAGE_SCHEMA)
    result = run_masks(
        crawled.candidates.slice(0, 0),
        collection.root,
        tmp_path / "out",
        derived=derived,
        derived_root=tmp_path,
    )
    (excluded,) = result.excluded.to_pylist()
    assert (excluded["reason"], excluded["stage"]) == ("truncated", "load")


def test_toolkit_defacing_is_written_and_recorded(
    collection: Collection, masked: tuple[Path, Any]
) -> None:
    out, result = masked
    rows = [r for r in result.images.to_pylist() if r["defacing"] == "toolkit"]
    assert rows
    for row in rows:
        defaced = nib.load(out / row["image_path"]).get_fdata(dtype=np.float32)
        anon = load_mask(out / row["anon_mask_path"])
        assert anon.any() and np.all(defaced[anon] == defaced[anon].flat[0])
        record = truth_record(collection, row)
        truth = truth_masks(collection, record)
        assert (anon & truth["face"]).sum() >= 0.95 * truth["face"].sum(), row["image_path"]
        assert (anon & truth["brain"]).sum() <= 0.005 * truth["brain"].sum(), row["image_path"]
        steps = {p["step"]: p for p in row["provenance"]}
        assert steps["masks.deface"]["method"] == "quickshear+facial-region"
        assert json.loads(steps["masks.brain"]["parameters"])
        shape = tuple(nib.load(out / row["image_path"]).shape)
        expected = for_image(brain_masker("auto"), shape, row["modality"]).name
        assert row["brain_mask_backend"] == expected
    assert {r["defacing"] for r in result.images.to_pylist()} == {
        "toolkit",
        "source",
        "brain_extract",
    }


def test_the_mask_figure_is_drawn_from_the_published_voxels(
    masked: tuple[Path, Any], tmp_path: Path
) -> None:
    out, result = masked
    for row in result.images.to_pylist():
        published = result.voxels[row["image_id"]]
        assert published.is_file()
        assert (published == out / row["image_path"]) == (row["defacing"] == "toolkit")
    picture = write_mask_figure(result.images, result.voxels, out, tmp_path / "masks.png")
    assert picture.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_either_memory_order_gives_the_same_masks_in_that_order(collection: Collection) -> None:
    # A loaded NIfTI is Fortran-ordered and is masked as its transpose; a C-ordered array as it
    # is. Same voxels, same masks, each returned in the order it came in (NIfTI writes Fortran).
    record = next(
        r for r in anatomical(collection) if r["defacing"] == "none" and not r["is_brain_extract"]
    )
    image = nib.load(collection.root / record["path"])
    stored = np.asarray(image.dataobj, dtype=np.float32)
    assert np.isfortran(stored)
    options = MaskOptions(brain="template")
    out = {
        order: mask_image(
            np.asarray(stored, order=order),
            image.affine,
            image.header.get_zooms(),
            options,
            brain_masker("template"),
            where=record["path"],
        )
        for order in "FC"
    }
    assert out["F"].defaced_here and out["F"].fields == out["C"].fields
    for name in ("data", "anatomy", "anon", "brain"):
        fortran, c = getattr(out["F"], name), getattr(out["C"], name)
        assert np.isfortran(fortran) and c.flags.c_contiguous, name
        np.testing.assert_array_equal(fortran, c, err_msg=name)

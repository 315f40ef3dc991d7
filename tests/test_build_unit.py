"""The build's unit of work against the stages run one after the other, on the default
collection's files."""

from __future__ import annotations

import gzip
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pytest

from openmind_data.crawl import CrawlResult
from openmind_data.curate import UnitResult, process_candidate
from openmind_data.executors import map_ordered
from openmind_data.quality import run_quality
from openmind_data.schema import IQM_COLUMNS
from openmind_data.stages import StageResult
from openmind_data.synth import Collection


def _process(job: tuple[dict[str, Any], str]) -> UnitResult:
    row, root = job
    return process_candidate(row, root)


@pytest.fixture(scope="module")
def units(collection: Collection, crawled: CrawlResult) -> dict[str, UnitResult]:
    rows = crawled.candidates.to_pylist()
    jobs = [(row, str(collection.root / row["dataset_id"])) for row in rows]
    done = map_ordered(_process, jobs, workers=2, desc="units", unit="image")
    return {row["image_id"]: result for row, result in zip(rows, done, strict=True)}


@pytest.fixture(scope="module")
def staged(masked: tuple[Path, StageResult]) -> StageResult:
    out, result = masked
    return run_quality(result.images, result.voxels, out, workers=2)


def _decode(payload: bytes) -> Any:
    return nib.Nifti1Image.from_bytes(gzip.decompress(payload))


def test_the_unit_gives_what_the_stages_give(
    collection: Collection,
    units: dict[str, UnitResult],
    staged: StageResult,
    masked: tuple[Path, StageResult],
) -> None:
    out, result = masked
    compared = 0
    for row in staged.images.to_pylist():
        unit = units[row["image_id"]]
        assert not unit.excluded, unit.excluded
        # Only float32 against float64 scaling of the same voxels differs (~1e-5).
        tolerance = 1e-4
        (published,) = unit.published
        mine = published.row
        for column in ("defacing", "is_brain_extract", "image_path", "anat_mask_path"):
            assert mine[column] == row[column], column
        assert mine["source_sha256"] and len(mine["source_sha256"]) == 64
        # Masks: the same bytes the masks stage wrote.
        assert published.voxels["anat_mask"] == (out / row["anat_mask_path"]).read_bytes()
        assert published.voxels["anon_mask"] == (out / row["anon_mask_path"]).read_bytes()
        # The image: the voxels the stages publish, in the source's stored type and scaling.
        image = _decode(published.voxels["image"])
        reference = nib.load(result.voxels[row["image_id"]])
        assert image.get_data_dtype() == np.dtype(row["dtype"])
        np.testing.assert_allclose(
            np.asanyarray(image.dataobj),
            reference.get_fdata(),
            rtol=tolerance,
            atol=tolerance,
        )
        if row["defacing"] == "toolkit":  # outside the removed face: the source's integers
            source = nib.load(collection.root / row["dataset_id"] / row["source_path"])
            kept = ~(np.asanyarray(_decode(published.voxels["anon_mask"]).dataobj) > 0)
            np.testing.assert_array_equal(
                np.asanyarray(image.dataobj.get_unscaled())[kept],
                np.asanyarray(source.dataobj.get_unscaled())[kept],
            )
        compared += 1
    assert compared == staged.images.num_rows >= 40
    assert any(r["defacing"] == "toolkit" for r in staged.images.to_pylist())


def test_unreadable_images_are_exclusions_with_the_reason_the_truth_gives(
    collection: Collection, crawled: CrawlResult, units: dict[str, UnitResult]
) -> None:
    truth = {f["path"]: f for f in collection.files()}
    refused = 0
    for row in crawled.candidates.to_pylist():
        unit = units[row["image_id"]]
        expected = truth[f"{row['dataset_id']}/{row['source_path']}"]
        # A duplicate is published by its unit and dropped by the build.
        if row["modality"] == "DWI" or expected.get("earliest_stage") != "load":
            continue
        (excluded,) = unit.excluded
        assert not unit.published
        assert (excluded["reason"], excluded["stage"]) == (expected["reason"], "load")
        refused += 1
    assert refused >= 1


def test_a_dwi_series_publishes_its_three_maps_with_masks_and_metrics(
    crawled: CrawlResult, units: dict[str, UnitResult]
) -> None:
    series = [r for r in crawled.candidates.to_pylist() if r["modality"] == "DWI"]
    assert series
    for row in series:
        unit = units[row["image_id"]]
        assert sorted(p.row["derivation"] for p in unit.published) == ["fa", "md", "mean_b0"]
        for published in unit.published:
            assert published.row["iqm_efc"] is not None
            # The IQS is given when the folder is written, against the image's peers.
            assert published.row["image_quality_score"] is None
            assert published.row["derived_from"] == f"{row['dataset_id']}/{row['source_path']}"
            assert set(published.voxels) >= {"image", "anat_mask", "anon_mask"}
            assert _decode(published.voxels["image"]).get_data_dtype() == np.float32


def test_the_unit_measures_as_the_stages_do(
    units: dict[str, UnitResult], staged: StageResult
) -> None:
    for row in staged.images.to_pylist():
        (published,) = units[row["image_id"]].published
        mine = published.row
        assert mine["image_quality_score"] is None  # scored by the folder, against peers
        for column in IQM_COLUMNS:
            if row[column] is None:
                assert mine[column] is None, column
            else:
                assert mine[column] == pytest.approx(row[column], rel=1e-4, abs=1e-4), column

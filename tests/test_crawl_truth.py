"""The crawl against the synthetic collection's ground truth: every file accounted for."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest

from openmind_data.crawl import CrawlResult, crawl, read_index
from openmind_data.crawl.privacy import IDENTIFYING_FIELDS
from openmind_data.schema import key_values
from openmind_data.synth import Collection
from openmind_data.synth.builder import IDENTIFYING_FIELDS as WRITTEN_BY_SYNTH
from tests.conftest import file_digests


def _rows(table: Any, key: str) -> dict[str, dict[str, Any]]:
    return {f"{r['dataset_id']}/{r[key]}": r for r in table.to_pylist()}


def test_every_file_lands_in_exactly_one_place(
    collection: Collection, crawled: CrawlResult
) -> None:
    candidates = _rows(crawled.candidates, "source_path")
    excluded = _rows(crawled.excluded, "source_path")
    ignored = {f"{r['dataset_id']}/{r['path']}": r for r in crawled.ignored.to_pylist()}
    folders = [p for p, r in ignored.items() if r["kind"] == "directory"]
    assert not set(candidates) & set(excluded)
    for record in collection.files():
        path = record["path"]
        places = [
            path in candidates,
            path in excluded,
            path in ignored or any(path.startswith(f + "/") for f in folders),
        ]
        assert sum(places) == 1, (path, places)
        if record["role"] == "image":
            assert path in candidates, path
        elif record["role"] == "excluded" and record["earliest_stage"] == "crawl":
            assert path in excluded, path
            assert excluded[path]["reason"] == record["reason"], path
        elif record["role"] == "excluded":  # needs voxels: a candidate until it is loaded
            assert path in candidates, path
        else:
            assert path not in candidates and path not in excluded, path
    assert crawled.candidates.num_rows == len(collection.files("image")) + sum(
        f["earliest_stage"] in ("load", "build") for f in collection.files("excluded")
    )


def test_candidates_match_truth(collection: Collection, crawled: CrawlResult) -> None:
    candidates = _rows(crawled.candidates, "source_path")
    for record in collection.files("image"):
        row = candidates[record["path"]]
        assert row["modality"] == record["modality"], record["path"]
        assert row["shape"] == record["shape"]
        assert row["orientation"] == record["orientation"]
        assert row["dtype"] == record["dtype"]
        assert row["spacing"] == pytest.approx(record["spacing"], abs=1e-3)
        assert row["subject"] == record["subject"]
        assert row["session"] == record.get("session")
        if row["modality"] == "DWI":
            stem = record["path"].split("/", 1)[1].removesuffix(".nii.gz")
            assert (row["bval_path"], row["bvec_path"]) == (f"{stem}.bval", f"{stem}.bvec")


def test_acquisition_metadata_is_normalised(collection: Collection, crawled: CrawlResult) -> None:
    candidates = _rows(crawled.candidates, "source_path")
    converted = 0
    for record in collection.files("image"):
        expected, row = record.get("expected") or {}, candidates[record["path"]]
        if not expected:
            continue
        for column in (
            "repetition_time",
            "echo_time",
            "inversion_time",
            "flip_angle",
            "magnetic_field_strength",
        ):
            if column in expected:
                assert row[column] == pytest.approx(expected[column], rel=1e-5), (
                    record["path"],
                    column,
                )
        assert row["manufacturer"] == expected["manufacturer"]
        assert row["model_name"] == expected["model_name"]
        if "phase_encoding_direction" in expected:
            assert row["phase_encoding_direction"] == expected["phase_encoding_direction"]
        crawl_step = json.loads(row["provenance"][0]["parameters"])
        if expected["converted_from_ms"]:
            converted += 1
            assert "RepetitionTime" in crawl_step["converted_from_ms"]
        else:
            assert crawl_step["converted_from_ms"] == []
    assert converted >= 5


def test_participants_are_normalised(collection: Collection, crawled: CrawlResult) -> None:
    candidates = _rows(crawled.candidates, "source_path")
    for record in collection.files("image"):
        truth, row = record["participant"], candidates[record["path"]]
        assert row["sex"] == truth["sex"], record["path"]
        assert row["handedness"] == truth["handedness"], record["path"]
        assert row["health_status"] == truth["health_status"], record["path"]
        if truth["age"] is None:
            assert row["age"] is None, record["path"]
        else:
            assert row["age"] == pytest.approx(truth["age"], abs=1e-3), record["path"]
    messy = [r for r in crawled.candidates.to_pylist() if r["dataset_id"] == "ds000002"]
    extras = {k: v for r in messy for k, v in key_values(r["extra_metadata"]).items()}
    assert extras["participants.site"] == "B" and "participants.iq" in extras
    assert {"20-25", "89+"} <= {
        key_values(r["extra_metadata"]).get("participants.age") for r in messy
    }


def test_sources_carry_licence_and_attribution(
    collection: Collection, crawled: CrawlResult
) -> None:
    sources = {r["dataset_id"]: r for r in crawled.sources.to_pylist()}
    for truth in collection.truth["datasets"]:
        row = sources[truth["dataset_id"]]
        assert row["license"] == truth["license"]
        assert row["license_raw"] == truth["license_raw"]
        assert row["doi"] == truth["doi"]
        assert row["dataset_version"] == truth["dataset_version"]
        assert row["name"] == truth["name"]
        assert row["authors"] == ["Ada Synthetic", "Grace Phantom", "Alan Voxel"]
    by_dataset = {r["dataset_id"]: r["license"] for r in crawled.candidates.to_pylist()}
    assert by_dataset == {t["dataset_id"]: t["license"] for t in collection.truth["datasets"]}


def test_identifying_fields_never_reach_the_tables(
    collection: Collection, crawled: CrawlResult, tmp_path: Path
) -> None:
    assert set(WRITTEN_BY_SYNTH) <= IDENTIFYING_FIELDS
    paths = crawled.write(tmp_path / "index.parquet")
    needles = [
        "Synthetic University Hospital",
        "Hospital Street",
        "166038",
        "AWP166038",
        "DOE^JANE",
        "2019-03-14",
        *IDENTIFYING_FIELDS,
    ]
    for path in paths.values():
        text = json.dumps(pq.read_table(path).to_pylist(), default=str)
        for needle in needles:
            assert needle not in text, (path.name, needle)
    flagged = [f for f in collection.files("image") if f["identifying_fields"]]
    assert flagged  # the collection did carry them


def test_crawl_is_deterministic_read_only_and_parallel(
    collection: Collection, crawled: CrawlResult, tmp_path: Path
) -> None:
    before = file_digests(collection.root)
    again = crawl(collection.root, workers=2)
    assert file_digests(collection.root) == before
    for name in ("candidates", "excluded", "ignored", "sources"):
        assert getattr(again, name).equals(getattr(crawled, name)), name
    one = crawled.write(tmp_path / "a" / "index.parquet")
    two = again.write(tmp_path / "b" / "index.parquet")
    for key in one:
        assert one[key].read_bytes() == two[key].read_bytes(), key
    back = read_index(one["candidates"])
    assert back.candidates.equals(crawled.candidates)


def test_licence_policy_excludes_with_a_reason(collection: Collection) -> None:
    result = crawl(collection.root, licenses=["CC0-1.0"])
    licences = set(result.candidates.column("license").to_pylist())
    assert licences == {"CC0-1.0"}
    refused = [r for r in result.excluded.to_pylist() if r["reason"] == "license_not_allowed"]
    assert {r["dataset_id"] for r in refused} == {"ds000002", "ds000003", "ds000004"}

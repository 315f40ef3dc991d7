"""The build's split and duplicate detection, on the crawl's real rows and on made-up tables."""

from __future__ import annotations

import hashlib
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest

from openmind_data.crawl import CrawlResult
from openmind_data.curate import assign_splits, drop_duplicates, file_sha256, split_of
from openmind_data.errors import ConfigError
from openmind_data.ids import image_id
from openmind_data.schema import IMAGE_SCHEMA, table_from_records


def _rows(n_datasets: int, subjects: int, images_per_subject: int) -> list[dict[str, Any]]:
    rows = []
    for d in range(n_datasets):
        for s in range(subjects):
            for k in range(images_per_subject):
                path = f"sub-{s:03d}/anat/sub-{s:03d}_run-{k}_T1w.nii.gz"
                dataset = f"ds{d:06d}"
                rows.append(
                    {
                        "image_id": image_id(dataset, path),
                        "dataset_id": dataset,
                        "subject": f"{s:03d}",
                        "source_path": path,
                        "modality": "T1w",
                    }
                )
    return rows


def test_the_split_is_subject_disjoint_on_the_crawled_collection(crawled: CrawlResult) -> None:
    table = assign_splits(crawled.candidates, validation=0.5, seed=3)
    by_subject: dict[tuple[str, str], set[str]] = defaultdict(set)
    for row in table.select(["dataset_id", "subject", "split"]).to_pylist():
        by_subject[(row["dataset_id"], row["subject"])].add(row["split"])
    assert all(len(splits) == 1 for splits in by_subject.values())
    assert {s for splits in by_subject.values() for s in splits} == {"train", "validation"}
    assert table.schema.field("split").type == IMAGE_SCHEMA.field("split").type
    assert table.drop_columns(["split"]).equals(crawled.candidates.drop_columns(["split"]))


def test_the_split_is_deterministic_stable_and_close_to_its_share() -> None:
    table = table_from_records(_rows(4, 500, 2), IMAGE_SCHEMA)
    first = assign_splits(table, validation=0.1, seed=0)
    assert first.equals(assign_splits(table, validation=0.1, seed=0))
    share = first.column("split").to_pylist().count("validation") / first.num_rows
    assert share == pytest.approx(0.1, abs=0.02)  # 2000 subjects: sd of the share ~0.007
    other_seed = assign_splits(table, validation=0.1, seed=1).column("split").to_pylist()
    assert other_seed != first.column("split").to_pylist()
    # A later build with one more dataset: nobody already drawn moves.
    bigger = assign_splits(
        table_from_records(_rows(5, 500, 2), IMAGE_SCHEMA), validation=0.1, seed=0
    )
    assert bigger.slice(0, first.num_rows).column("split").equals(first.column("split"))
    assert split_of("ds000001", "01", validation=0.0, seed=0) == "train"
    with pytest.raises(ConfigError, match="validation share"):
        assign_splits(table, validation=1.0)


def test_duplicates_are_kept_once_and_the_others_say_which_one_they_repeat() -> None:
    rows = _rows(3, 2, 1)
    same = "ab" * 32
    for row in rows:  # sub-000 of every dataset is the same file
        row["source_sha256"] = (
            same
            if row["subject"] == "000"
            else hashlib.sha256(row["image_id"].encode()).hexdigest()
        )
    # The FA and MD of one series share its checksum and are not duplicates of each other.
    series = "sub-000/dwi/sub-000_dwi.nii.gz"
    for derivation in ("fa", "md"):
        rows.append(
            {
                "image_id": image_id("ds000009", series, derivation),
                "dataset_id": "ds000009",
                "subject": "000",
                "source_path": series,
                "source_sha256": "cd" * 32,
                "derivation": derivation,
                "modality": derivation.upper(),
            }
        )
    rows.append({**rows[0], "image_id": "om-nochecksum", "source_sha256": None})
    kept, excluded = drop_duplicates(table_from_records(rows, IMAGE_SCHEMA))
    assert kept.num_rows == len(rows) - 2
    assert excluded.column("reason").to_pylist() == ["duplicate", "duplicate"]
    assert excluded.column("dataset_id").to_pylist() == ["ds000001", "ds000002"]
    assert set(excluded.column("stage").to_pylist()) == {"build"}
    assert all("ds000000/sub-000/anat/" in d for d in excluded.column("detail").to_pylist())
    ids = set(kept.column("image_id").to_pylist())
    assert {image_id("ds000009", series, "fa"), image_id("ds000009", series, "md")} <= ids
    assert "om-nochecksum" in ids
    # Every row is kept or excluded, once.
    assert ids | set(excluded.column("image_id").to_pylist()) == {r["image_id"] for r in rows}


def test_file_sha256_streams_the_bytes(tmp_path: Path) -> None:
    payload = bytes(range(256)) * 9000  # over two chunks
    (tmp_path / "f").write_bytes(payload)
    assert file_sha256(tmp_path / "f") == hashlib.sha256(payload).hexdigest()

"""Data shards of the default collection's images, read back with ``datasets`` and pyarrow."""

from __future__ import annotations

import gzip
from functools import partial
from pathlib import Path
from typing import Any

import datasets
import nibabel as nib
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from openmind_data.curate import ShardOptions, ShardRow, write_shard_rows, write_shards
from openmind_data.curate.shards import shard_schema, write_parquet
from openmind_data.dataset_folder import shard_name
from openmind_data.errors import ConfigError
from openmind_data.nifti import encode_nifti
from openmind_data.quality import run_quality
from openmind_data.schema import PAYLOAD_COLUMNS, SHARD_SCHEMA, table_from_records
from openmind_data.stages import StageResult

KIB = 1 << 10


@pytest.fixture(scope="module")
def rows(masked: tuple[Path, StageResult]) -> list[dict[str, Any]]:
    """The T1w images with their voxels and masks as the shards hold them."""
    out, result = masked
    modality = pc.cast(result.images.column("modality"), pa.string())
    t1w = result.images.filter(pc.equal(modality, "T1w"))
    scored = run_quality(t1w, result.voxels, out, workers=2).images
    rows = []
    for row in scored.to_pylist():
        image = nib.load(result.voxels[row["image_id"]])
        voxels = {"image": encode_nifti(np.asanyarray(image.dataobj.get_unscaled()), image)}
        for column in ("anat_mask", "anon_mask", "brain_mask"):
            if row[f"{column}_path"]:
                voxels[column] = (out / row[f"{column}_path"]).read_bytes()
        paths = {"image": row["image_path"]} | {c: row[f"{c}_path"] for c in voxels if c != "image"}
        rows.append(row | {c: {"bytes": b, "path": paths[c]} for c, b in voxels.items()})
    return rows


def test_shards_are_sized_sorted_by_score_and_named_for_the_hub(
    tmp_path: Path, rows: list[dict[str, Any]]
) -> None:
    options = ShardOptions(row_group_bytes=1024 * KIB, shard_bytes=4096 * KIB)
    paths = write_shards(rows, tmp_path / "data" / "T1w", options)
    assert len(paths) >= 3
    assert [p.name for p in paths] == [shard_name(i, len(paths)) for i in range(len(paths))]
    assert not list((tmp_path / "data" / "T1w").glob(".*"))  # no temporary file left
    scores: list[float] = []
    ids: list[str] = []
    for path in paths:
        metadata = pq.ParquetFile(path).metadata
        assert metadata.num_row_groups >= 2 or metadata.num_rows == 1
        for g in range(metadata.num_row_groups):
            group = pq.ParquetFile(path).read_row_group(g, columns=["image", "anat_mask"])
            payload = sum(len(v["bytes"] or b"") for c in group.columns for v in c.to_pylist())
            assert payload <= 1024 * KIB or group.num_rows == 1
        table = pq.read_table(path, columns=["image_id", "image_quality_score"])
        scores += table.column("image_quality_score").to_pylist()
        ids += table.column("image_id").to_pylist()
    assert scores == sorted(scores)  # best first, across shards too
    assert sorted(ids) == sorted(r["image_id"] for r in rows)  # every row once


def test_load_dataset_decodes_the_volumes_and_masks_as_written(
    tmp_path: Path, rows: list[dict[str, Any]]
) -> None:
    paths = write_shards(rows, tmp_path / "data" / "T1w")
    assert len(paths) == 1
    loaded = datasets.load_dataset(
        "parquet", data_files=[str(p) for p in paths], split="train", cache_dir=str(tmp_path / "c")
    )
    assert isinstance(loaded.features["image"], datasets.Nifti)
    by_id = {r["image_id"]: r for r in rows}
    assert {r["dtype"] for r in rows} >= {"int16", "uint16"}  # integer sources
    for example in loaded:
        source = by_id[example["image_id"]]
        image = example["image"]
        expected = nib.Nifti1Image.from_bytes(gzip.decompress(source["image"]["bytes"]))
        assert image.get_data_dtype() == expected.get_data_dtype() == np.dtype(source["dtype"])
        np.testing.assert_array_equal(np.asanyarray(image.dataobj), np.asanyarray(expected.dataobj))
        np.testing.assert_allclose(image.affine, expected.affine)
        assert set(np.unique(np.asanyarray(example["anat_mask"].dataobj))) <= {0, 1}
        assert example["image_quality_score"] == pytest.approx(source["image_quality_score"])


def test_the_same_rows_give_the_same_bytes_and_a_rewrite_leaves_one_set(
    tmp_path: Path, rows: list[dict[str, Any]]
) -> None:
    small = ShardOptions(row_group_bytes=1024 * KIB, shard_bytes=2048 * KIB)
    first = [p.read_bytes() for p in write_shards(rows, tmp_path / "a", small)]
    again = [p.read_bytes() for p in write_shards(rows[::-1], tmp_path / "b", small)]
    assert first == again
    fewer = write_shards(rows, tmp_path / "a")  # one big shard replaces the many
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == [p.name for p in fewer]
    with pytest.raises(ConfigError, match="row_group_bytes"):
        ShardOptions(row_group_bytes=10, shard_bytes=5)


def test_payloads_given_as_arrow_make_the_bytes_of_the_rows_written_as_one_table(
    tmp_path: Path, rows: list[dict[str, Any]]
) -> None:
    # The build hands a shard the journal's payload columns as one-row Arrow tables (no copy
    # of the NIfTI bytes into Python objects); the shard's bytes must be those of its rows
    # made into one table and written, however the payloads came (Parquet's pages follow the
    # chunks of a table, so one chunk per row would write other bytes).
    payload = pa.schema([SHARD_SCHEMA.field(c) for c in PAYLOAD_COLUMNS])

    def as_arrow(row: dict[str, Any]) -> pa.Table:
        return pa.Table.from_pylist([{c: row.get(c) for c in PAYLOAD_COLUMNS}], schema=payload)

    entries = [
        ShardRow(
            {k: v for k, v in row.items() if k not in PAYLOAD_COLUMNS},
            sum(len((row.get(c) or {}).get("bytes") or b"") for c in PAYLOAD_COLUMNS),
            partial(as_arrow, row),
        )
        for row in rows
    ]
    (shard,) = write_shard_rows(entries, tmp_path / "arrow")  # one row group: all fit
    best_first = sorted(rows, key=lambda r: (r["image_quality_score"], r["image_id"]))
    whole = table_from_records(best_first, shard_schema())
    write_parquet(tmp_path / "reference.parquet", [whole], shard_schema())
    assert pq.ParquetFile(shard).metadata.num_row_groups == 1
    assert shard.read_bytes() == (tmp_path / "reference.parquet").read_bytes()

"""The build end to end: accounting, the folder's contents, privacy, loading with ``datasets``."""

from __future__ import annotations

import getpass
import gzip
import json
import re
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import datasets
import nibabel as nib
import pyarrow.parquet as pq
import pytest

from openmind_data.crawl import CrawlResult
from openmind_data.curate import BuildResult, build
from openmind_data.errors import ConfigError
from openmind_data.release import tree_file
from openmind_data.schema import EXCLUDED_SCHEMA, IMAGE_SCHEMA, VOXEL_COLUMNS, read_table
from openmind_data.synth import Collection
from openmind_data.synth.recipes import _IDENTIFYING


def test_every_candidate_is_published_or_excluded_with_a_reason(
    built: tuple[BuildResult, Path], crawled: CrawlResult
) -> None:
    result, _ = built
    out = result.out
    images = read_table(out / "metadata" / "images.parquet", IMAGE_SCHEMA)
    excluded = read_table(out / "metadata" / "excluded.parquet", EXCLUDED_SCHEMA)
    published = {(r["dataset_id"], r["source_path"]) for r in images.to_pylist()}
    left_out = {(r["dataset_id"], r["source_path"]) for r in excluded.to_pylist()}
    for row in crawled.candidates.to_pylist():
        where = (row["dataset_id"], row["source_path"])
        # A DWI series may be the source of published maps and of an excluded one.
        assert where in published or where in left_out, where
        if row["modality"] != "DWI":
            assert not (where in published and where in left_out), where
    assert all(r["reason"] and r["detail"] for r in excluded.to_pylist())
    assert len(set(images.column("image_id").to_pylist())) == images.num_rows
    assert result.run == crawled.candidates.num_rows and result.resumed == 0


def test_broken_inputs_end_as_the_truth_says(
    built: tuple[BuildResult, Path], collection: Collection
) -> None:
    result, _ = built
    reasons: dict[str, set[str]] = {}
    for row in result.excluded.to_pylist():
        reasons.setdefault(f"{row['dataset_id']}/{row['source_path']}", set()).add(row["reason"])
    published = {f"{r['dataset_id']}/{r['source_path']}" for r in result.images.to_pylist()}
    for record in collection.files("excluded"):
        assert record["reason"] in reasons.get(record["path"], set()), record["path"]
        assert record["path"] not in published, record["path"]
    for record in collection.files("image"):
        assert record["path"] in published, record["path"]
    (duplicate,) = [r for r in result.excluded.to_pylist() if r["reason"] == "duplicate"]
    assert duplicate["stage"] == "build"
    assert "ds000001/sub-01/ses-1/anat/sub-01_ses-1_acq-MPRAGE_T1w.nii.gz" in duplicate["detail"]
    summary = result.summary()
    assert summary["published"] == result.images.num_rows
    assert sum(summary["excluded_by_reason"].values()) == result.excluded.num_rows


def test_the_folder_loads_by_config_with_filters_and_streaming(
    built: tuple[BuildResult, Path],
) -> None:
    result, _ = built
    out = str(result.out)
    t1w = datasets.load_dataset(out, "T1w", split="train")
    assert set(t1w["modality"]) == {"T1w"}
    good = datasets.load_dataset(
        out, "T1w", split="train", filters=[("image_quality_score", "<=", 2.0)]
    )
    assert 0 < good.num_rows < t1w.num_rows
    assert all(score <= 2.0 for score in good["image_quality_score"])
    volume = good[0]["image"]
    assert volume.shape == tuple(good[0]["shape"])
    everything = datasets.load_dataset(out, split="train")  # the default config: all
    validation = datasets.load_dataset(out, split="validation")
    assert everything.num_rows + validation.num_rows == result.images.num_rows
    assert set(validation["split"]) == {"validation"}
    streamed = datasets.load_dataset(out, "T1w", split="train", streaming=True)
    first = next(iter(streamed))
    assert first["image_id"] == t1w[0]["image_id"]
    metadata = datasets.load_dataset(out, "metadata", split="train")
    assert metadata.num_rows == result.images.num_rows


def test_shards_hold_sorted_scores_and_the_stored_types(
    built: tuple[BuildResult, Path], collection: Collection
) -> None:
    result, _ = built
    shards = sorted((result.out / "data").glob("*/*.parquet"))
    assert shards
    checked = 0
    for path in shards:
        table = pq.read_table(path)
        modality, split = path.parent.name, path.name.split("-")[0]
        assert set(table.column("modality").to_pylist()) == {modality}
        assert set(table.column("split").to_pylist()) == {split}
        scores = table.column("image_quality_score").to_pylist()
        assert scores == sorted(scores)
        for row in table.select(["image", "source_path", "dataset_id", "derivation"]).to_pylist():
            if row["derivation"] is not None:
                continue
            image = nib.Nifti1Image.from_bytes(gzip.decompress(row["image"]["bytes"]))
            source = nib.load(collection.root / row["dataset_id"] / row["source_path"])
            assert image.get_data_dtype() == source.get_data_dtype(), row["source_path"]
            checked += 1
    assert checked > 10


def _strings(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for key, item in value.items():
            yield str(key)
            yield from _strings(item)
    elif isinstance(value, list | tuple):
        for item in value:
            yield from _strings(item)


def test_a_privacy_scan_of_the_output_finds_nothing(
    built: tuple[BuildResult, Path], collection: Collection
) -> None:
    result, tree = built
    forbidden = [
        *(re.escape(str(v)) for v in _IDENTIFYING.values()),
        r"\b(19|20)\d\d-[01]\d-[0-3]\d",  # a date
        r"\b[0-2]\d:[0-5]\d:[0-5]\d\b",  # a time of day
        re.escape(str(collection.root)),
        re.escape(str(result.out.parent)),
        re.escape(socket.gethostname()),
        rf"/(home|Users)/{re.escape(getpass.getuser())}\b",
    ]
    pattern = re.compile("|".join(forbidden))
    files = [p for p in [*result.out.rglob("*"), *tree.rglob("*")] if p.is_file()]
    texts = 0
    for path in files:
        if path.suffix == ".parquet":
            table = pq.read_table(path)
            voxels = [c for c in table.column_names if c in VOXEL_COLUMNS]
            strings = _strings(table.drop_columns(voxels).to_pylist())
            payloads = [
                cell["bytes"]
                for column in voxels
                for cell in table.column(column).to_pylist()
                if cell is not None
            ]
        elif path.name.endswith(".nii.gz"):
            strings, payloads = iter(()), [path.read_bytes()]
        elif path.suffix == ".png":  # the card's figures: their text chunks
            strings, payloads = iter(_png_texts(path.read_bytes())), []
        else:
            strings, payloads = iter([path.read_text()]), []
        for text in strings:
            texts += 1
            assert not pattern.search(text), (path, pattern.search(text))
        for payload in payloads:
            assert payload[3] == 0 and payload[4:8] == b"\0\0\0\0"  # no gzip name, no time
            image = nib.Nifti1Image.from_bytes(gzip.decompress(payload))
            for field in ("descrip", "aux_file", "db_name", "intent_name"):
                assert not image.header[field].item().strip(b"\0"), (path, field)
            assert not image.header.extensions, path
    assert texts > 1000


def _png_texts(data: bytes) -> list[str]:
    """The text chunks of a PNG (tEXt, zTXt, iTXt: where a writer puts software, author,
    time), plus one empty string so every figure counts as scanned."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    texts, at = [""], 8
    while at < len(data):
        length = int.from_bytes(data[at : at + 4], "big")
        kind, body = data[at + 4 : at + 8], data[at + 8 : at + 8 + length]
        if kind in (b"tEXt", b"zTXt", b"iTXt"):
            texts.append(body.decode("latin-1"))
        at += 12 + length
    return texts


def test_the_released_layout_holds_the_shards_bytes(built: tuple[BuildResult, Path]) -> None:
    result, tree = built
    images = result.images.to_pylist()
    table = pq.read_table(next((result.out / "data" / "T1w").glob("train-*.parquet")))
    for row in table.select(["image", "anat_mask", "anon_mask"]).to_pylist():
        for cell in row.values():
            assert tree_file(tree, cell["path"]).read_bytes() == cell["bytes"]
    released = (tree / "openneuro_metadata.csv").read_text()
    assert released == (result.out / "metadata" / "openneuro_metadata.csv").read_text()
    assert len(released.splitlines()) == len(images) + 1
    for row in images:
        assert tree_file(tree, row["image_path"]).is_file()
        assert tree_file(tree, row["anat_mask_path"]).is_file()


def test_the_readme_names_every_config(built: tuple[BuildResult, Path]) -> None:
    result, _ = built
    text = (result.out / "README.md").read_text()
    header = text.split("---")[1]
    for modality in set(result.images.column("modality").to_pylist()):
        assert f"config_name: {modality}\n" in header
    assert "config_name: all\n  default: true" in header
    assert "config_name: metadata" in header


def test_the_build_never_writes_into_its_sources(collection: Collection) -> None:
    with pytest.raises(ConfigError, match="outside the datasets"):
        build(collection.root, collection.root / "ds000001" / "derivatives" / "openmind")
    with pytest.raises(ConfigError, match="outside the datasets"):
        build(collection.root, collection.root.parent, nifti_tree=collection.root / "tree")


def test_journal_records_no_time_and_refuses_other_settings(
    built: tuple[BuildResult, Path], collection: Collection
) -> None:
    from openmind_data.curate import BuildOptions, UnitOptions
    from openmind_data.masks import MaskOptions

    result, _ = built
    header = json.loads((result.out / ".build" / "journal.json").read_text())
    assert header["fingerprint"]["masks"]["deface"] == "deface"
    other = BuildOptions(unit=UnitOptions(masks=MaskOptions(deface="exclude")))
    with pytest.raises(ConfigError, match=r"differ: masks.*--fresh"):
        build(collection.root, result.out, other)

"""The quality stage over the default collection (files on disk, the masks stage's output), and
the ``openmind quality`` commands."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
from typer.testing import CliRunner

from openmind_data.cli import app
from openmind_data.quality import load_model, run_quality
from openmind_data.schema import IMAGE_SCHEMA, IQM_COLUMNS, read_table, write_table
from openmind_data.stages import StageResult
from openmind_data.synth import Collection

runner = CliRunner()


@pytest.fixture(scope="module")
def scored(masked: tuple[Path, StageResult]) -> StageResult:
    out, result = masked
    return run_quality(result.images, result.voxels, out, workers=2)


def test_every_masked_image_is_measured_and_scored(
    masked: tuple[Path, StageResult], scored: StageResult
) -> None:
    _, result = masked
    assert scored.excluded.num_rows == 0
    assert sorted(scored.images.column("image_id").to_pylist()) == sorted(
        result.images.column("image_id").to_pylist()
    )
    label = load_model().label
    for row in scored.images.to_pylist():
        assert 1.0 <= row["image_quality_score"] < 5.0, row["source_path"]
        assert row["iqs_model"] == label
        assert row["iqm_efc"] is not None
        steps = [p for p in row["provenance"] if p["step"] == "quality"]
        assert len(steps) == 1
        explained = json.loads(steps[0]["parameters"])
        assert set(explained["contributions"]) <= set(IQM_COLUMNS)
        assert set(explained["not_applicable"]) == {c for c in IQM_COLUMNS if row[c] is None}


def test_brain_extracts_have_no_air_metrics_but_a_score(scored: StageResult) -> None:
    stripped = [r for r in scored.images.to_pylist() if r["is_brain_extract"]]
    assert stripped
    for row in stripped:
        # No air left around a brain extract; MRIQC's SNR is the tissues' own, so it stays.
        assert row["iqm_fber"] is None and row["iqm_qi1"] is None
        assert row["iqm_snr"] is not None
        assert row["image_quality_score"] is not None


def test_the_collection_ladder_is_ranked_by_severity(
    collection: Collection, scored: StageResult
) -> None:
    truth = {f["path"]: f for f in collection.files("image")}
    ladder: dict[str | None, dict[int, float]] = {}
    for row in scored.images.to_pylist():
        if row["dataset_id"] == "ds000005":
            record = truth[f"{row['dataset_id']}/{row['source_path']}"]
            kind = record.get("degradation")
            ladder.setdefault(kind, {})[record["severity"]] = row["image_quality_score"]
    clean = max(ladder.pop(None).values())
    assert len(ladder) == 5
    for kind, by_severity in ladder.items():
        values = [by_severity[s] for s in sorted(by_severity)]
        assert values == sorted(values), (kind, values)
        # Half a point: the model is anchored to human ratings, which the generator's
        # severity-3 bias field (synthetic T1w against ABIDE's real scans) moves less.
        assert values[-1] > clean + 0.5, (kind, values, clean)


def test_an_unreadable_image_is_a_row_in_the_exclusion_table(
    tmp_path: Path, masked: tuple[Path, StageResult]
) -> None:
    out, result = masked
    first = result.images.slice(0, 1)
    image_id = first.column("image_id")[0].as_py()
    payload = Path(result.voxels[image_id]).read_bytes()
    for cut in (200, len(payload) // 2):  # inside the header; inside the voxels
        broken = tmp_path / f"cut{cut}.nii.gz"
        broken.write_bytes(payload[:cut])
        done = run_quality(first, {image_id: broken}, out)
        assert done.images.num_rows == 0
        (row,) = done.excluded.to_pylist()
        assert (row["stage"], row["reason"], row["image_id"]) == ("quality", "truncated", image_id)


def _write_ratings(path: Path, rows: list[dict[str, Any]]) -> Path:
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return path


def test_the_quality_commands_score_calibrate_rescore_and_draw(
    tmp_path: Path, collection: Collection, masked: tuple[Path, StageResult]
) -> None:
    out, result = masked
    write_table(result.images, tmp_path / "masks.parquet")
    released = _write_ratings(
        tmp_path / "openneuro_metadata.csv",
        [
            {"image_path": f"OpenMind/{r['image_path']}", "image_quality_score": 2.0}
            for r in result.images.to_pylist()
            if r["dataset_id"] == "ds000001"
        ],
    )
    common = ["--root", str(collection.root), "--masks", str(out)]
    scored = runner.invoke(
        app,
        [
            "--no-progress",
            "quality",
            "score",
            str(tmp_path / "masks.parquet"),
            *common,
            "--out",
            str(tmp_path / "quality"),
            "--released",
            str(released),
        ],
    )
    assert scored.exit_code == 0, scored.output
    assert "median IQS" in scored.output
    table = read_table(tmp_path / "quality" / "quality.parquet", IMAGE_SCHEMA)
    for row in table.to_pylist():
        expected = 2.0 if row["dataset_id"] == "ds000001" else None
        assert row["released_quality_score"] == expected

    ratings = _write_ratings(tmp_path / "ratings.csv", collection.quality_ratings())
    calibrated = runner.invoke(
        app,
        [
            "quality",
            "calibrate",
            str(tmp_path / "quality" / "quality.parquet"),
            "--ratings",
            str(ratings),
            "--out",
            str(tmp_path / "mine.json"),
            "--name",
            "my-rater",
            "--version",
            "2",
        ],
    )
    assert calibrated.exit_code == 0, calibrated.output
    assert "spearman rho" in calibrated.output
    assert load_model(tmp_path / "mine.json").label == "my-rater/2"

    rescored = runner.invoke(
        app,
        [
            "quality",
            "rescore",
            str(tmp_path / "quality" / "quality.parquet"),
            "--model",
            str(tmp_path / "mine.json"),
            "--out",
            str(tmp_path / "rescored.parquet"),
        ],
    )
    assert rescored.exit_code == 0, rescored.output
    again = read_table(tmp_path / "rescored.parquet", IMAGE_SCHEMA)
    assert set(again.column("iqs_model").to_pylist()) == {"my-rater/2"}
    assert again.column("iqm_snr").equals(table.column("iqm_snr"))
    steps = [
        [p["method"] for p in r["provenance"] if p["step"] == "quality"] for r in again.to_pylist()
    ]
    assert all(s == ["iqs my-rater/2"] for s in steps)

    sheet = runner.invoke(
        app,
        [
            "quality",
            "sheet",
            str(tmp_path / "quality" / "quality.parquet"),
            *common,
            "--out",
            str(tmp_path / "sheet.html"),
            "--per-modality",
            "2",
        ],
    )
    assert sheet.exit_code == 0, sheet.output
    assert (tmp_path / "sheet.html").read_text().count("<img") >= 4


def test_the_same_table_whatever_the_workers(masked: tuple[Path, StageResult]) -> None:
    out, result = masked
    subset = result.images.slice(0, 6)
    one = run_quality(subset, result.voxels, out, workers=1).images
    two = run_quality(subset, result.voxels, out, workers=2).images
    assert one.equals(two)
    assert isinstance(one, pa.Table)

"""The quality contact sheet: best and worst images per modality, as PNG and as HTML."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

from openmind_data.errors import ConfigError
from openmind_data.quality.sheet import write_quality_sheet
from openmind_data.synth import Collection

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
TILE = '<img src="data:image/png;base64,'
# How many images of each modality the test table takes, and how many of those have no score.
PLAN = {"T1w": (6, 1), "T2w": (3, 0), "DWI": (1, 0), "PDw": (1, 1)}


def pick(collection: Collection) -> list[dict[str, Any]]:
    """Rows for the test table: PLAN's images, made-up scores (the last ``unscored`` of each
    modality null, their dataset renamed so their caption cannot appear) and metrics."""
    rows: list[dict[str, Any]] = []
    scored = 0
    for modality, (count, unscored) in PLAN.items():
        records = [r for r in collection.files("image") if r["modality"] == modality][:count]
        assert len(records) == count, modality
        for n, record in enumerate(records):
            has_score = n < count - unscored
            rows.append(
                {
                    "image_id": record["path"],
                    "dataset_id": record["dataset_id"] if has_score else f"unscored-{n}",
                    "modality": modality,
                    "image_quality_score": 1.0 + 0.4 * scored if has_score else None,
                    "iqm_snr": None if len(rows) % 3 == 0 else 10.0 + 1.2345 * len(rows),
                    "iqm_efc": 0.512345,
                }
            )
            scored += has_score
    return rows


def table(rows: list[dict[str, Any]]) -> pa.Table:
    schema = pa.schema(
        [
            ("image_id", pa.string()),
            ("dataset_id", pa.string()),
            ("modality", pa.string()),
            ("image_quality_score", pa.float64()),
            ("iqm_snr", pa.float64()),
            ("iqm_efc", pa.float64()),
        ]
    )
    return pa.Table.from_pylist(rows, schema=schema)


@pytest.fixture(scope="module")
def rows(collection: Collection) -> list[dict[str, Any]]:
    return pick(collection)


@pytest.fixture(scope="module")
def voxels(collection: Collection, rows: list[dict[str, Any]]) -> dict[str, Path]:
    return {r["image_id"]: collection.root / r["image_id"] for r in rows}


@pytest.fixture(scope="module")
def page(
    tmp_path_factory: pytest.TempPathFactory, rows: list[dict[str, Any]], voxels: dict[str, Path]
) -> str:
    out = tmp_path_factory.mktemp("sheet") / "sheet.html"
    assert write_quality_sheet(table(rows), voxels, out, per_modality=2) == out
    return out.read_text(encoding="utf-8")


def sections(page: str) -> dict[str, str]:
    """Modality heading -> the page's text up to the next heading."""
    parts = page.split("<h2>")[1:]
    return {part.split("</h2>")[0]: part for part in parts}


def test_png_is_written(
    tmp_path: Path, rows: list[dict[str, Any]], voxels: dict[str, Path]
) -> None:
    out = write_quality_sheet(table(rows), voxels, tmp_path / "sub" / "sheet.png", per_modality=2)
    assert out == tmp_path / "sub" / "sheet.png"
    assert out.read_bytes().startswith(PNG_SIGNATURE)


def test_html_has_a_section_per_scored_modality(page: str) -> None:
    assert list(sections(page)) == ["DWI", "T1w", "T2w"]  # sorted; PDw has no score
    assert page.count(TILE) == 4 + 3 + 1
    counts = {modality: text.count(TILE) for modality, text in sections(page).items()}
    assert counts == {"T1w": 4, "T2w": 3, "DWI": 1}
    assert "http" not in page.replace("http-equiv", "")  # nothing outside the page


def test_best_come_first_then_worst(page: str, rows: list[dict[str, Any]]) -> None:
    t1w = sections(page)["T1w"]
    assert "<h3>best</h3>" in t1w
    assert "<h3>worst</h3>" in t1w
    scores = sorted(
        r["image_quality_score"]
        for r in rows
        if r["modality"] == "T1w" and r["image_quality_score"] is not None
    )
    assert len(scores) == 5
    places = [t1w.index(f"IQS {s:.2f}") for s in (scores[0], scores[1], scores[4], scores[3])]
    assert places == sorted(places)  # best ascending, then worst descending
    assert f"IQS {scores[2]:.2f}" not in page  # the middle one is neither
    assert t1w.index("best 1") < t1w.index("best 2") < t1w.index("worst 1") < t1w.index("worst 2")
    # T2w: two best, and its one remaining image as worst; nothing shown twice
    t2w = sections(page)["T2w"]
    assert t2w.count("<figcaption>best ") == 2
    assert t2w.count("<figcaption>worst ") == 1
    # DWI: its only image, as best
    assert "best 1" in sections(page)["DWI"]
    assert "worst" not in sections(page)["DWI"]


def test_captions(page: str, rows: list[dict[str, Any]]) -> None:
    first = next(r for r in rows if r["image_quality_score"] == 1.0)
    assert f"{first['dataset_id']} T1w" in page
    assert "IQS 1.00" in page
    assert "efc 0.512" in page
    shown = [r for r in rows if f"IQS {r['image_quality_score'] or 0:.2f}" in page]
    for row in shown:
        if row["iqm_snr"] is not None:
            assert f"snr {row['iqm_snr']:.3g}" in page
    assert "snr None" not in page
    assert "snr nan" not in page


def test_unscored_rows_are_left_out(page: str, rows: list[dict[str, Any]]) -> None:
    unscored = [r for r in rows if r["image_quality_score"] is None]
    assert len(unscored) == 2
    for row in unscored:
        assert row["dataset_id"] not in page
    assert "<h2>PDw" not in page  # a modality without scores gets no section


def test_same_input_same_output(
    tmp_path: Path, page: str, rows: list[dict[str, Any]], voxels: dict[str, Path]
) -> None:
    out = write_quality_sheet(table(rows), voxels, tmp_path / "again.html", per_modality=2)
    assert out.read_text(encoding="utf-8") == page


def test_bad_suffix(tmp_path: Path, rows: list[dict[str, Any]], voxels: dict[str, Path]) -> None:
    with pytest.raises(ConfigError, match=r"\.png or \.html"):
        write_quality_sheet(table(rows), voxels, tmp_path / "sheet.jpg")
    assert not (tmp_path / "sheet.jpg").exists()


def test_no_scores(tmp_path: Path, rows: list[dict[str, Any]], voxels: dict[str, Path]) -> None:
    unscored = [{**r, "image_quality_score": None} for r in rows]
    with pytest.raises(ConfigError, match="no image has an image_quality_score"):
        write_quality_sheet(table(unscored), voxels, tmp_path / "sheet.html")
    assert not (tmp_path / "sheet.html").exists()

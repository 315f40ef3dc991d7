"""MRIQC group tables: read, calibrate on, rescore; and the shipped model against ABIDE and
DS030's human ratings (MRIQC's metrics and raters, from mriqc-learn's wheel)."""

from __future__ import annotations

import csv
from importlib.metadata import PackageNotFoundError, distribution
from pathlib import Path

import numpy as np
import pyarrow.csv as pacsv
import pytest
from typer.testing import CliRunner

from openmind_data.cli import app
from openmind_data.errors import ConfigError
from openmind_data.quality import (
    auc,
    calibrate_mriqc,
    is_mriqc_table,
    load_model,
    read_mriqc_table,
    score_mriqc,
)
from openmind_data.quality.fit import FitSettings, references_of
from openmind_data.quality.metrics import MRIQC_NAMES

runner = CliRunner()


def _table(path: Path, rows: int = 60, seed: int = 0) -> Path:
    """An MRIQC-shaped group table: three sites (one with brighter SNR: its scanner), two
    raters, MRIQC's metric columns and others, 'n/a' cells and an FBER of -1 (no air)."""
    rng = np.random.default_rng(seed)
    columns = ["subject_id", "site", "bids_name", "rater_1", "rater_2", *MRIQC_NAMES.values()]
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle, delimiter="\t")
        writer.writerow([*columns, "size_x"])
        for i in range(rows):
            site = ("A", "B", "C")[i % 3]
            bad = float(rng.random() < 0.25)
            metrics = {
                "snr_total": (12.0 if site == "C" else 8.0) * np.exp(-0.6 * bad),
                "cnr": 3.5 * np.exp(-0.5 * bad),
                "cjv": 0.35 + 0.15 * bad,
                "efc": 0.6 + 0.05 * bad,
                "fber": 200.0,
                "qi_1": 0.0,
                "inu_range": 0.4,
                "fwhm_avg": 3.6,
                "wm2max": 0.55,
                "icvs_wm": 0.35,
            }
            cells = {k: f"{v * np.exp(rng.normal(0, 0.02)):.5f}" for k, v in metrics.items()}
            if i == 5:
                cells["fber"] = "-1.0"
            if i == 6:
                cells["cnr"] = "n/a"
            verdict = "-1" if bad else ("0" if rng.random() < 0.2 else "1")
            second = "n/a" if i % 2 else verdict
            writer.writerow(
                [f"{i:05d}", site, f"sub-{i:03d}_T1w", verdict, second, *cells.values(), "176"]
            )
    return path


def test_a_table_reads_as_the_toolkits_columns_with_its_raters(tmp_path: Path) -> None:
    path = _table(tmp_path / "group_T1w.tsv")
    assert is_mriqc_table(path) and not is_mriqc_table(Path(__file__))
    table = read_mriqc_table(path)
    assert table.raters == ("rater_1", "rater_2")
    assert table.rows[0]["dataset_id"] == "A" and table.rows[0]["modality"] == "T1w"
    assert table.rows[5]["iqm_fber"] is None  # MRIQC's -1: no air to measure
    assert table.rows[6]["iqm_cnr"] is None  # n/a
    assert table.rows[0]["iqm_snr"] == pytest.approx(float(table.table["snr_total"][0]))
    targets = {i: p for i, p, _ in table.targets()}
    excluded = table.excluded()
    for i, votes in enumerate(table.verdicts()):
        assert targets[i] == pytest.approx(sum((1 - v) / 2 for v in votes) / len(votes))
        assert excluded[i] == (sum(votes) / len(votes) < 0)


def test_calibrate_and_rescore_an_mriqc_table_from_the_command_line(tmp_path: Path) -> None:
    path = _table(tmp_path / "group_T1w.tsv", rows=90)
    model = tmp_path / "mine.json"
    result = runner.invoke(app, ["quality", "calibrate", str(path), "--out", str(model)])
    assert result.exit_code == 0, result.output
    assert "AUC for excluded" in result.output
    out = tmp_path / "scored.tsv"
    result = runner.invoke(
        app, ["quality", "rescore", str(path), "--model", str(model), "--out", str(out)]
    )
    assert result.exit_code == 0, result.output
    scored = pacsv.read_csv(out, parse_options=pacsv.ParseOptions(delimiter="\t"))
    original = pacsv.read_csv(path, parse_options=pacsv.ParseOptions(delimiter="\t"))
    assert scored.column_names == [*original.column_names, "image_quality_score"]
    assert scored["subject_id"].to_pylist() == original["subject_id"].to_pylist()
    table = read_mriqc_table(path)
    labels = [bool(e) for e in table.excluded()]
    scores = scored["image_quality_score"].to_pylist()
    assert auc(labels, scores) > 0.9
    # Site C's brighter SNR is its scanner's: against its site it is no better than A's.
    by_site = {
        s: np.mean([x for x, r in zip(scores, table.rows, strict=True) if r["dataset_id"] == s])
        for s in "AC"
    }
    assert abs(by_site["A"] - by_site["C"]) < 0.5


def test_bad_tables_name_their_file(tmp_path: Path) -> None:
    few = tmp_path / "few.tsv"
    few.write_text("subject_id\tcnr\n1\t3.0\n")
    with pytest.raises(ConfigError, match=r"few\.tsv.*too few MRIQC metric columns"):
        read_mriqc_table(few)
    path = _table(tmp_path / "t.tsv", rows=6)
    text = path.read_text().splitlines()
    cells = text[2].split("\t")
    cells[5] = "bright"
    (tmp_path / "word.tsv").write_text("\n".join([text[0], text[1], "\t".join(cells)]) + "\n")
    with pytest.raises(ConfigError, match=r"word\.tsv"):
        read_mriqc_table(tmp_path / "word.tsv")
    unrated = tmp_path / "unrated.tsv"
    unrated.write_text(path.read_text().replace("rater_", "note_"))
    with pytest.raises(ConfigError, match="no rated row"):
        calibrate_mriqc(read_mriqc_table(unrated))


def _mriqc_learn(name: str) -> Path:
    try:
        return Path(str(distribution("mriqc-learn").locate_file(f"mriqc_learn/datasets/{name}")))
    except PackageNotFoundError:
        pytest.skip("mriqc-learn is not installed (make install installs it)")


def test_the_shipped_model_measures_t1w_against_abide() -> None:
    """Its T1w references are ABIDE's (its weights need the synthetic anchors too, which
    scripts/fit_default_iqs.py measures; that script rewrites the file exactly)."""
    abide = read_mriqc_table(_mriqc_learn("abide.tsv"))
    shipped = load_model()
    expected = references_of(abide.rows, FitSettings().min_images)["T1w"]
    for column, reference in expected.items():
        mine = shipped.references["T1w"][column]
        assert (mine.median, mine.scale) == pytest.approx(
            (reference.median, reference.scale), rel=1e-5
        )
        assert mine.images == len(abide.rows) or column in ("iqm_fber", "iqm_qi1")
    assert shipped.fitted_on["rated_images"] == len(abide.targets()) == 1101


def test_the_shipped_model_on_ds030_held_out() -> None:
    """DS030 was never fitted or tuned on; the figures are the README's (AUC 0.730, accuracy
    0.747 for openmind-iqs/2.1.0), held to within a point of them."""
    ds030 = read_mriqc_table(_mriqc_learn("ds030.tsv"))
    scores = score_mriqc(ds030, load_model()).column("image_quality_score").to_pylist()
    labels = [bool(e) for e in ds030.excluded()]
    assert auc(labels, scores) >= 0.72
    accuracy = np.mean([(s >= 3.0) == label for s, label in zip(scores, labels, strict=True)])
    assert accuracy >= 0.737

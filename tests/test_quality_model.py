"""The IQS model, its parameter file, ratings and calibration (no voxels: metrics as numbers)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from scipy.stats import spearmanr

from openmind_data.errors import ConfigError
from openmind_data.quality import calibrate, fit_model, load_model, read_ratings
from openmind_data.quality.model import METRICS, IqsModel, Reference, rating_to_badness
from openmind_data.schema import IQM_COLUMNS

TYPICAL = {
    "iqm_snr": 20.0,
    "iqm_cnr": 2.2,
    "iqm_fber": 200.0,
    "iqm_cjv": 0.6,
    "iqm_efc": 0.6,
    "iqm_qi1": 0.0,
    "iqm_inu": 0.2,
    "iqm_ghost": 0.0,
    "iqm_fwhm": 6.0,
}


def test_the_shipped_model_loads_covers_every_metric_and_names_its_version() -> None:
    model = load_model()
    assert set(model.weights) == set(METRICS) == set(IQM_COLUMNS)
    assert model.label.startswith("openmind-iqs/")
    assert {"*", "T1w", "T2w", "FLAIR"} <= set(model.references)
    assert sum(model.weights.values()) > 0
    assert "synthetic" in model.description


@pytest.mark.parametrize("column", list(METRICS))
def test_the_score_is_monotone_in_every_metric_and_stays_in_range(column: str) -> None:
    model = load_model()
    if METRICS[column] == "neglog":  # a ratio: smaller is worse
        values = np.geomspace(500.0, 0.05, 40)
    else:
        values = np.geomspace(0.01, 20.0, 40)
    scores = [model.score({**TYPICAL, column: float(v)}, "T1w") for v in values]
    assert all(s is not None and 1.0 <= s <= 5.0 for s in scores)
    assert np.all(np.diff(np.asarray(scores, dtype=float)) >= 0), (column, scores)


def test_a_null_metric_adds_nothing_and_no_metric_gives_no_score() -> None:
    model = load_model()
    fa_like = {**TYPICAL, "iqm_cnr": None, "iqm_cjv": None}
    assert "iqm_cnr" not in model.contributions(fa_like, "FA")
    assert model.score(dict.fromkeys(IQM_COLUMNS), "T1w") is None


def test_an_unknown_modality_uses_the_pooled_reference() -> None:
    model = load_model()
    assert model.score(TYPICAL, "no-such-modality") == model.score(TYPICAL, "*")


def test_the_parameter_file_round_trips_and_bad_files_name_themselves(tmp_path: Path) -> None:
    model = load_model()
    again = load_model(model.save(tmp_path / "m.json"))
    assert again.to_dict() == model.to_dict()
    assert again.score(TYPICAL, "T2w") == pytest.approx(model.score(TYPICAL, "T2w"), rel=1e-5)

    broken = tmp_path / "broken.json"
    broken.write_text("{not json")
    with pytest.raises(ConfigError, match=r"broken\.json"):
        load_model(broken)
    values = model.to_dict()
    values["weights"]["iqm_snr"] = -1.0
    (tmp_path / "negative.json").write_text(json.dumps(values))
    with pytest.raises(ConfigError, match=">= 0"):
        load_model(tmp_path / "negative.json")
    values = model.to_dict()
    values["transforms"]["iqm_snr"] = "identity"
    (tmp_path / "transform.json").write_text(json.dumps(values))
    with pytest.raises(ConfigError, match="transform"):
        load_model(tmp_path / "transform.json")
    with pytest.raises(ConfigError, match=r"missing\.json"):
        load_model(tmp_path / "missing.json")


def _population(n: int, seed: int) -> list[dict[str, Any]]:
    """Rows with metrics spread around TYPICAL, half T1w, half FLAIR (FLAIR brighter)."""
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        modality = "T1w" if i % 2 else "FLAIR"
        bad = rng.exponential(1.0, size=len(METRICS)) * (rng.random(len(METRICS)) < 0.3)
        row: dict[str, Any] = {"image_id": f"img{i:03d}", "modality": modality}
        for (column, transform), b in zip(METRICS.items(), bad, strict=True):
            if transform in ("neglog", "log"):
                sign = -1.0 if transform == "neglog" else 1.0
                base = TYPICAL[column] * (1.3 if modality == "FLAIR" else 1.0)
                row[column] = base * float(np.exp(sign * 0.3 * b + rng.normal(0, 0.02)))
            else:
                row[column] = TYPICAL[column] + 0.1 * b + abs(rng.normal(0, 0.005))
        row["dataset_id"] = f"ds{i % 5:06d}"
        rows.append(row)
    return rows


def test_calibration_recovers_the_ranking_of_a_known_model() -> None:
    rows = _population(400, seed=1)
    truth = fit_model(rows, [(i, 1.0, 1.0) for i in range(3)], name="t", version="0")
    weights = dict(zip(METRICS, [0.3, 0.0, 0.1, 0.5, 0.0, 0.2, 0.4, 0.1, 0.3], strict=True))
    weights = {k: 0.1 * w for k, w in weights.items()}  # scores below the clipping at 4.95
    truth = IqsModel("t", "0", weights, 0.05, truth.references)
    scores = [truth.score(r, r["modality"]) for r in rows]
    assert max(s for s in scores if s is not None) < 4.95
    targets = [(i, float(s), 1.0) for i, s in enumerate(scores) if s is not None]
    fitted = fit_model(rows, targets, name="fit", version="1")
    again = [fitted.score(r, r["modality"]) for r in rows]
    assert spearmanr(scores, again).statistic > 0.99
    for column, weight in weights.items():
        assert fitted.weights[column] == pytest.approx(weight, abs=0.005), column
    # Per-modality references: FLAIR's brighter SNR is its normal, not a better image.
    assert fitted.references["FLAIR"]["iqm_snr"].median < fitted.references["T1w"]["iqm_snr"].median


def test_a_rating_maps_back_to_itself() -> None:
    model = IqsModel("m", "1", {"iqm_snr": 1.0}, 0.0, {"*": {"iqm_snr": Reference(0.0, 1.0)}})
    for rating in (1.0, 2.0, 3.5, 4.9):
        s = rating_to_badness(rating)
        assert 1.0 + 4.0 * (1.0 - np.exp(-s)) == pytest.approx(rating)
    assert model.score({"iqm_snr": 1.0}, "T1w") == 1.0  # -log(1) = 0: the reference itself


# -- ratings ------------------------------------------------------------------------------------


def _csv(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_ratings_by_released_path_ignore_the_prefix_and_count_what_matches_nothing(
    tmp_path: Path,
) -> None:
    ratings = read_ratings(
        _csv(
            tmp_path / "released.csv",
            "image_path,image_quality_score\n"
            "OpenMind/ds000001/sub-01/anat/sub-01_T1w.nii.gz,2.0\n"
            "ds000001/sub-02/anat/sub-02_T1w.nii.gz,\n"
            "ds000009/sub-01/anat/sub-01_T1w.nii.gz,4.0\n",
        )
    )
    rows = [
        {"image_id": "a", "image_path": "ds000001/sub-01/anat/sub-01_T1w.nii.gz"},
        {"image_id": "b", "image_path": "ds000001/sub-02/anat/sub-02_T1w.nii.gz"},
    ]
    targets, unmatched = ratings.match(rows)
    assert targets == [(0, 2.0, 1.0)] and unmatched == 1
    assert ratings.score_of(rows[1]) is None  # an empty cell is no rating


def test_group_ratings_weigh_each_group_once(tmp_path: Path) -> None:
    ratings = read_ratings(
        _csv(tmp_path / "g.tsv", "dataset\tmodality\tscore\nds1\tT1w\t2.5\nds1\tT2w\t4\n")
    )
    rows = [{"dataset_id": "ds1", "modality": "T1w"}] * 4 + [
        {"dataset_id": "ds1", "modality": "T2w"}
    ]
    targets, unmatched = ratings.match(rows)
    assert unmatched == 0
    assert sum(w for i, _, w in targets if i < 4) == pytest.approx(1.0)
    assert [w for i, _, w in targets if i == 4] == [1.0]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("image_id,rating\na,7\n", "outside"),
        ("image_id,rating\na,2\na,3\n", "rated twice"),
        ("image_id,stars\na,2\n", "no score column"),
        ("subject,rating\n01,2\n", "image_id, image_path"),
    ],
)
def test_bad_ratings_are_refused_naming_the_file(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message) as error:
        read_ratings(_csv(tmp_path / "bad.csv", text))
    assert "bad.csv" in str(error.value)


def test_calibrate_reports_its_fit_and_refuses_ratings_that_match_nothing(tmp_path: Path) -> None:
    rows = _population(60, seed=3)
    references = fit_model(rows, [(i, 1.0, 1.0) for i in range(3)], name="r", version="0")
    rater = IqsModel("rater", "0", {"iqm_cjv": 0.05, "iqm_inu": 0.03}, 0.0, references.references)
    ratings = pa.table(
        {
            "image_id": [r["image_id"] for r in rows],
            "rating": [rater.score(r, r["modality"]) for r in rows],
        }
    )
    pq.write_table(ratings, tmp_path / "r.parquet")
    fit = calibrate(pa.Table.from_pylist(rows), read_ratings(tmp_path / "r.parquet"))
    assert fit.rated_images == 60 and fit.unmatched_ratings == 0
    assert fit.spearman["all"] > 0.95
    assert fit.model.weights["iqm_cjv"] > 0 and fit.model.weights["iqm_inu"] > 0
    other = _csv(tmp_path / "other.csv", "image_id,rating\nnobody,2\n")
    with pytest.raises(ConfigError, match="none matches"):
        calibrate(pa.Table.from_pylist(rows), read_ratings(other))

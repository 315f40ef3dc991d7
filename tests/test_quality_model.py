"""The IQS model, its parameter file, ratings and calibration (no voxels: metrics as numbers)."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from scipy.stats import spearmanr

from openmind_data.errors import ConfigError
from openmind_data.quality import (
    FitSettings,
    calibrate,
    fit_model,
    load_model,
    peer_references,
    read_ratings,
)
from openmind_data.quality.fit import probability_of_rating
from openmind_data.quality.model import (
    DATASET_METRICS,
    METRICS,
    IqsModel,
    Reference,
    iqs_of_log_odds,
)
from openmind_data.schema import IQM_COLUMNS

TYPICAL = {
    "iqm_snr": 10.0,
    "iqm_cnr": 3.5,
    "iqm_fber": 200.0,
    "iqm_cjv": 0.35,
    "iqm_efc": 0.6,
    "iqm_qi1": 0.0,
    "iqm_inu": 0.3,
    "iqm_ghost": 0.0,
    "iqm_fwhm": 3.5,
    "iqm_wm2max": 0.55,
    "iqm_icvs_wm": 0.35,
}


def test_the_shipped_model_loads_covers_every_metric_and_says_what_it_was_fitted_on() -> None:
    model = load_model()
    assert set(model.weights) == set(METRICS) == set(IQM_COLUMNS)
    assert model.label.startswith("openmind-iqs/")
    assert {"*", "T1w", "T2w", "FLAIR"} <= set(model.references)
    assert sum(map(sum, model.weights.values())) > 0
    assert not any(model.weights["iqm_icvs_wm"])  # measured, not scored (see fit.py)
    assert "ABIDE" in model.description and model.fitted_on["rated_images"] == 1101
    assert model.references["T1w"]["iqm_snr"].images == 1101


@pytest.mark.parametrize("column", list(METRICS))
def test_the_score_is_monotone_in_every_metric_and_stays_in_range(column: str) -> None:
    model = load_model()
    if METRICS[column] == "neglog":  # a ratio: smaller is worse
        values = np.geomspace(500.0, 0.01, 40)
    else:
        values = np.geomspace(0.001, 20.0, 40)
    scores = [model.score({**TYPICAL, column: float(v)}, "T1w") for v in values]
    assert all(s is not None and 1.0 <= s <= 5.0 for s in scores)
    assert np.all(np.diff(np.asarray(scores, dtype=float)) >= 0), (column, scores)


@pytest.mark.parametrize("column", list(METRICS))
def test_no_metric_moves_the_score_by_more_than_its_bound(column: str) -> None:
    model = load_model()
    worst = 1e-9 if METRICS[column] == "neglog" else 1e9
    parts = model.contributions({**TYPICAL, column: worst}, "T1w")
    assert parts.get(column, 0.0) == pytest.approx(model.bound(column))
    assert model.bound(column) < 10.0  # log-odds: no metric alone is a verdict unless fitted so


def test_the_score_is_one_plus_four_times_the_probability_of_exclusion() -> None:
    reference = {"*": {"iqm_snr": Reference(0.0, 1.0)}}
    model = IqsModel("m", "1", (0.0,), 6.0, {"iqm_snr": (1.0,)}, -1.0, reference)
    for z in (0.0, 1.0, 3.0, 10.0):
        s = -1.0 + min(z, 6.0)
        expected = 1.0 + 4.0 / (1.0 + np.exp(-s))
        assert model.score({"iqm_snr": float(np.exp(-z))}, "T1w") == pytest.approx(expected)
    assert iqs_of_log_odds(0.0) == 3.0 and iqs_of_log_odds(-1e6) == 1.0
    assert probability_of_rating(1) == 0.0 and probability_of_rating(3) == 0.5


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
    cases = {
        "negative": (lambda v: v["weights"].update(iqm_snr=[-1.0, 0, 0, 0]), ">= 0"),
        "transform": (lambda v: v["transforms"].update(iqm_snr="identity"), "transform"),
        "knots": (lambda v: v.update(knots=[2.0, 1.0]), "knots must increase"),
        "old": (lambda v: v.update(format="openmind-iqs/1"), "quality calibrate"),
    }
    for name, (change, message) in cases.items():
        values = model.to_dict()
        change(values)
        (tmp_path / f"{name}.json").write_text(json.dumps(values))
        with pytest.raises(ConfigError, match=message):
            load_model(tmp_path / f"{name}.json")
    with pytest.raises(ConfigError, match=r"missing\.json"):
        load_model(tmp_path / "missing.json")


def _population(n: int, seed: int, datasets: int = 4) -> list[dict[str, Any]]:
    """Rows with metrics spread around TYPICAL, half T1w, half FLAIR (FLAIR brighter), in
    ``datasets`` datasets, each its own scanner (an offset of every metric)."""
    rng = np.random.default_rng(seed)
    offsets = rng.normal(0.0, 0.1, size=(datasets, len(METRICS)))
    rows = []
    for i in range(n):
        modality = "T1w" if i % 2 else "FLAIR"
        dataset = i % datasets
        bad = rng.exponential(1.0, size=len(METRICS)) * (rng.random(len(METRICS)) < 0.3)
        row: dict[str, Any] = {"image_id": f"img{i:03d}", "modality": modality}
        for (column, transform), b, o in zip(METRICS.items(), bad, offsets[dataset], strict=True):
            if transform in ("neglog", "log"):
                sign = -1.0 if transform == "neglog" else 1.0
                base = TYPICAL[column] * (1.3 if modality == "FLAIR" else 1.0)
                row[column] = base * float(np.exp(sign * 0.3 * b + o + rng.normal(0, 0.02)))
            else:
                row[column] = TYPICAL[column] + 0.1 * b + abs(o) * 0.1 + abs(rng.normal(0, 0.005))
        row["dataset_id"] = f"ds{dataset:06d}"
        rows.append(row)
    return rows


def test_calibration_recovers_the_ranking_of_a_known_model() -> None:
    rows = _population(800, seed=1)
    settings = FitSettings(ridge=0.0, metrics=tuple(METRICS))
    shape = fit_model(rows, [(i, 0.5, 1.0) for i in range(3)], name="t", version="0")
    rng = np.random.default_rng(2)
    weights = {k: tuple(float(w) for w in rng.uniform(0, 0.4, 4)) for k in METRICS}
    truth = replace(shape, weights=weights, intercept=-3.0)
    peers = peer_references(rows, truth)
    scores = [truth.score(r, r["modality"], peers.references[i]) for i, r in enumerate(rows)]
    targets = [(i, (float(s) - 1.0) / 4.0, 1.0) for i, s in enumerate(scores) if s is not None]
    fitted = fit_model(rows, targets, name="fit", version="1", settings=settings)
    peers = peer_references(rows, fitted)
    again = [fitted.score(r, r["modality"], peers.references[i]) for i, r in enumerate(rows)]
    assert spearmanr(scores, again).statistic > 0.99
    assert fitted.intercept == pytest.approx(-3.0, abs=0.3)
    # Per-modality references: FLAIR's brighter SNR is its normal, not a better image.
    assert fitted.references["FLAIR"]["iqm_snr"].median < fitted.references["T1w"]["iqm_snr"].median


def test_peers_take_a_scanners_offset_out_and_small_datasets_lean_on_the_prior() -> None:
    model = load_model()
    k = model.prior_images
    rows: list[dict[str, Any]] = []
    for dataset, snr, count in (("ds-dim", 5.0, 150), ("ds-bright", 12.0, 150), ("ds-few", 5.0, 3)):
        rows += [{**TYPICAL, "modality": "T1w", "dataset_id": dataset, "iqm_snr": snr}] * count
    peers = peer_references(rows, model)
    # Each level is drawn towards the one above it as if that one were k more images.
    prior = model.references["T1w"]["iqm_snr"].median
    level = peers.references
    values = [-np.log(r["iqm_snr"]) for r in rows]
    modality = (len(rows) * np.median(values) + k * prior) / (len(rows) + k)
    dim = (150 * -np.log(5.0) + k * modality) / (150 + k)
    assert level[0]["iqm_snr"].median == pytest.approx(dim)
    assert level[0]["iqm_snr"].images == 150
    # Three images are too few for their own references: the collection's T1w level serves.
    assert level[300]["iqm_snr"].median == pytest.approx(modality)
    assert peers.peers[300] == {"dataset": 3, "modality": 303}
    # Against the prior alone, the dim scanner's images look much worse than the bright one's;
    # against their peers less so.
    alone = [model.score(r, "T1w") for r in rows]
    scored = [model.score(r, "T1w", level[i]) for i, r in enumerate(rows)]
    assert scored[0] - scored[150] < 0.75 * (alone[0] - alone[150])


def test_a_dataset_full_of_artefacts_is_measured_against_the_collection_not_itself() -> None:
    """Only the acquisition's metrics (DATASET_METRICS) are referenced against the dataset: a
    dataset whose every image is ghosted keeps looking ghosted; its dim scanner does not."""
    model = load_model()
    assert set(model.dataset_metrics) == set(DATASET_METRICS)
    rng = np.random.default_rng(0)
    clean = [{**TYPICAL, "modality": "T1w", "dataset_id": f"ds-{i % 4}"} for i in range(400)]
    bad = [
        {
            **TYPICAL,
            "modality": "T1w",
            "dataset_id": "ds-ghosts",
            "iqm_ghost": 0.2 + 0.05 * float(rng.standard_normal()),
            "iqm_snr": 5.0,
        }
        for _ in range(300)
    ]
    rows = clean + bad
    found = peer_references(rows, model).references
    modality = peer_references(rows, replace(model, dataset_metrics=())).references
    ghosted = found[len(clean)]
    # ghosting: the collection's level, the same for every dataset
    assert ghosted["iqm_ghost"] == found[0]["iqm_ghost"] == modality[len(clean)]["iqm_ghost"]
    # SNR: the dim scanner's own level, drawn towards the collection's
    assert ghosted["iqm_snr"].median > found[0]["iqm_snr"].median
    assert ghosted["iqm_snr"].images == 300
    assert model.standardized(bad[0], "T1w", ghosted)["iqm_ghost"] > 5
    # With every metric against the dataset, as model files before the split did, the
    # ghosted dataset is its own normal.
    everything = replace(model, dataset_metrics=tuple(METRICS))
    own = peer_references(rows, everything).references[len(clean)]
    assert everything.standardized(bad[0], "T1w", own)["iqm_ghost"] < 1


def test_a_model_file_without_dataset_metrics_references_every_metric_against_the_dataset(
    tmp_path: Path,
) -> None:
    values = load_model().to_dict()
    assert values["peers"]["dataset_metrics"] == list(DATASET_METRICS)
    del values["peers"]["dataset_metrics"]
    path = tmp_path / "older.json"
    path.write_text(json.dumps(values))
    assert set(load_model(path).dataset_metrics) == set(METRICS)
    values["peers"]["dataset_metrics"] = ["iqm_snr", "iqm_noise"]
    path.write_text(json.dumps(values))
    with pytest.raises(ConfigError, match="iqm_noise"):
        load_model(path)


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
    rows = _population(120, seed=3)
    shape = fit_model(rows, [(i, 0.5, 1.0) for i in range(3)], name="r", version="0")
    weights = dict.fromkeys(METRICS, (0.0, 0.0, 0.0, 0.0))
    weights |= {"iqm_cjv": (0.0, 0.5, 0.5, 0.0), "iqm_inu": (0.0, 0.3, 0.3, 0.0)}
    rater = replace(shape, weights=weights, intercept=-2.0)
    ratings = pa.table(
        {
            "image_id": [r["image_id"] for r in rows],
            "rating": [rater.score(r, r["modality"]) for r in rows],
        }
    )
    pq.write_table(ratings, tmp_path / "r.parquet")
    fit = calibrate(pa.Table.from_pylist(rows), read_ratings(tmp_path / "r.parquet"))
    assert fit.rated_images == 120 and fit.unmatched_ratings == 0
    assert fit.spearman["all"] > 0.9
    assert sum(fit.model.weights["iqm_cjv"]) > 0 and sum(fit.model.weights["iqm_inu"]) > 0
    other = _csv(tmp_path / "other.csv", "image_id,rating\nnobody,2\n")
    with pytest.raises(ConfigError, match="none matches"):
        calibrate(pa.Table.from_pylist(rows), read_ratings(other))

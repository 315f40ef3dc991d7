"""openmind_ssl.finetune.report: the benchmark table from result rows, its means, and its CSV,
Markdown and PNG renderings."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from openmind_ssl.finetune.report import Table, build_table, write_table


def _result(
    checkpoint: str, dataset: str, value: float, *, domain: str = "ID", metric: str = "dice"
) -> dict[str, Any]:
    return {
        "checkpoint": checkpoint,
        "schedule": "default",
        "dataset": dataset,
        "domain": domain,
        "metric": metric,
        "value": value,
    }


# Three checkpoints over two ID datasets (one classification) and two OOD ones; "mae" has no
# result on "tumors". The OOD "spine" comes first and "age" (ID) last, to test the column order.
RESULTS = [
    _result("scratch", "spine", 0.60, domain="OOD"),
    _result("scratch", "lesions", 0.50),
    _result("scratch", "tumors", 0.70, domain="OOD"),
    _result("scratch", "age", 0.80, metric="balanced_accuracy"),
    _result("mae", "lesions", 0.62),
    _result("mae", "spine", 0.58, domain="OOD"),
    _result("mae", "age", 0.90, metric="balanced_accuracy"),
    _result("simclr", "lesions", 0.55),
    _result("simclr", "spine", 0.59, domain="OOD"),
    _result("simclr", "tumors", 0.75, domain="OOD"),
    _result("simclr", "age", 0.85, metric="balanced_accuracy"),
]


@pytest.fixture
def table() -> Table:
    return build_table(RESULTS)


def test_orders_columns_by_domain_and_rows_by_first_sight(table: Table) -> None:
    assert table.datasets == ("lesions", "age", "spine", "tumors")
    assert table.rows == (("scratch", "default"), ("mae", "default"), ("simclr", "default"))
    assert table.domains == {"spine": "OOD", "lesions": "ID", "tumors": "OOD", "age": "ID"}
    assert table.metrics["age"] == "balanced_accuracy"
    assert table.values[("mae", "default")] == {"lesions": 0.62, "spine": 0.58, "age": 0.90}


def test_means_count_only_the_datasets_present(table: Table) -> None:
    assert table.means(("scratch", "default")) == pytest.approx(
        {"All": (0.6 + 0.5 + 0.7 + 0.8) / 4, "ID": (0.5 + 0.8) / 2, "OOD": (0.6 + 0.7) / 2}
    )
    # "mae" has no "tumors": its OOD mean is "spine" alone, and All is over three datasets.
    assert table.means(("mae", "default")) == pytest.approx(
        {"All": (0.62 + 0.58 + 0.90) / 3, "ID": (0.62 + 0.90) / 2, "OOD": 0.58}
    )


def test_a_row_without_ood_results_has_a_nan_ood_mean() -> None:
    table = build_table([*RESULTS, _result("voco", "lesions", 0.4)])
    means = table.means(("voco", "default"))
    assert means["All"] == pytest.approx(0.4)
    assert means["ID"] == pytest.approx(0.4)
    assert math.isnan(means["OOD"])
    with pytest.raises(KeyError, match="nothing"):
        table.means(("nothing", "default"))


def test_csv_has_the_columns_and_percent_values(table: Table, tmp_path: Path) -> None:
    paths = write_table(table, tmp_path)
    assert paths["csv"] == tmp_path / "benchmark.csv"
    frame = pd.read_csv(paths["csv"])
    assert list(frame.columns) == [
        "checkpoint",
        "schedule",
        "lesions",
        "age",
        "spine",
        "tumors",
        "All",
        "ID",
        "OOD",
    ]
    assert list(frame["checkpoint"]) == ["scratch", "mae", "simclr"]
    mae = frame.set_index("checkpoint").loc["mae"]
    assert mae["lesions"] == 62.0
    assert math.isnan(mae["tumors"])
    assert mae["All"] == round(100 * (0.62 + 0.58 + 0.90) / 3, 2) == 70.0
    assert mae["OOD"] == 58.0
    text = paths["csv"].read_text().splitlines()
    assert text[1] == "scratch,default,50.00,80.00,60.00,70.00,65.00,65.00,65.00"


def test_markdown_names_metric_and_domain_and_bolds_the_best(table: Table, tmp_path: Path) -> None:
    markdown = write_table(table, tmp_path)["md"].read_text()
    lines = markdown.splitlines()
    assert lines[0].startswith("Values in %: mean Dice over foreground classes for segmentation,")
    assert "balanced accuracy for classification" in lines[0]
    header = [cell.strip() for cell in lines[2].strip("|").split("|")]
    assert header == [
        "Checkpoint",
        "Schedule",
        "lesions (Dice, ID)",
        "age (Bal. acc., ID)",
        "spine (Dice, OOD)",
        "tumors (Dice, OOD)",
        "All",
        "ID",
        "OOD",
    ]
    cells = {
        line.split("|")[1].strip(): [cell.strip() for cell in line.strip("|").split("|")[2:]]
        for line in lines[4:]
    }
    assert list(cells) == ["scratch", "mae", "simclr"]
    # lesions, age, spine, tumors, All, ID, OOD
    assert cells["scratch"] == ["50.00", "80.00", "**60.00**", "70.00", "65.00", "65.00", "65.00"]
    assert cells["mae"] == [
        "**62.00**",
        "**90.00**",
        "58.00",
        "\N{EM DASH}",
        "**70.00**",
        "**76.00**",
        "58.00",
    ]
    assert cells["simclr"] == [
        "55.00",
        "85.00",
        "59.00",
        "**75.00**",
        "68.50",
        "70.00",
        "**67.00**",
    ]


def test_markdown_bolds_every_row_that_reads_the_best(tmp_path: Path) -> None:
    table = build_table(
        [_result("a", "x", 0.50001), _result("b", "x", 0.5), _result("c", "x", 0.4)]
    )
    lines = write_table(table, tmp_path)["md"].read_text().splitlines()[4:]
    assert [line.split("|")[3].strip() for line in lines] == ["**50.00**", "**50.00**", "40.00"]


def test_png_is_a_readable_image(table: Table, tmp_path: Path) -> None:
    import matplotlib.image

    path = write_table(table, tmp_path)["png"]
    assert path == tmp_path / "benchmark.png"
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    pixels = matplotlib.image.imread(path)
    assert pixels.ndim == 3
    assert pixels.shape[0] > 100
    assert pixels.shape[1] > 100
    assert pixels.std() > 0  # something was drawn
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "benchmark.csv",
        "benchmark.md",
        "benchmark.png",
    ]


def test_a_dataset_with_two_domains_is_an_error() -> None:
    with pytest.raises(ValueError, match=r"result 1 \(dataset 'lesions'\).*OOD here but ID"):
        build_table([_result("a", "lesions", 0.5), _result("b", "lesions", 0.5, domain="OOD")])


def test_a_dataset_with_two_metrics_is_an_error() -> None:
    with pytest.raises(ValueError, match="'age' is scored by 'auroc' here but by 'dice'"):
        build_table([_result("a", "age", 0.5), _result("b", "age", 0.5, metric="auroc")])


def test_a_second_result_for_one_cell_is_an_error() -> None:
    with pytest.raises(ValueError, match=r"second result for checkpoint 'a'.*'lesions'"):
        build_table([_result("a", "lesions", 0.5), _result("a", "lesions", 0.6)])


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"value": 62.0}, "value must be a number in"),
        ({"value": math.nan}, "value must be a number in"),
        ({"value": "0.5"}, "value must be a number in"),
        ({"domain": "id"}, "domain must be one of"),
        ({"dataset": "All"}, "'All' is a column of the table"),
        ({"checkpoint": ""}, "checkpoint must be a non-empty string"),
    ],
)
def test_bad_result_rows_are_errors(change: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        build_table([_result("a", "lesions", 0.5), {**_result("b", "lesions", 0.5), **change}])


def test_a_missing_key_is_an_error() -> None:
    row = _result("a", "lesions", 0.5)
    del row["metric"]
    with pytest.raises(ValueError, match="result 0: missing key"):
        build_table([row])

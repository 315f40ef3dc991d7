"""The benchmark table: one row per pretrained checkpoint and fine-tuning schedule, one column
per downstream dataset, then the row's mean over All datasets, the in-distribution (ID: brain
MRI, like the pretraining data) and the out-of-distribution (OOD) ones, as in the OpenMind
paper's tables.

``build_table`` turns the runner's result rows into a ``Table``; ``write_table`` renders it as
``benchmark.csv`` (for analysis), ``benchmark.md`` (for reading: the best value per column in
bold) and ``benchmark.png`` (grouped bars). Values are fractions in [0, 1] in the table and
percent with two decimals in the files, as the paper prints them. Each dataset keeps one metric
(Dice for segmentation, balanced accuracy for classification); the means average whatever
metrics the row's datasets use, as the paper's summary columns do.
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from openmind_data.durable import write_atomic, write_with
from openmind_data.errors import SchemaError
from openmind_data.slices import save_figure

__all__ = ["DOMAINS", "MEANS", "RESULT_KEYS", "Table", "build_table", "write_table"]

Domain = Literal["ID", "OOD"]
Row = tuple[str, str]

#: The keys of one result row.
RESULT_KEYS = ("checkpoint", "schedule", "dataset", "domain", "metric", "value")
DOMAINS: tuple[Domain, ...] = ("ID", "OOD")
#: The summary columns after the datasets, in this order.
MEANS = ("All", "ID", "OOD")

_METRIC_NAMES = {
    "dice": "Dice",
    "balanced_accuracy": "Bal. acc.",
    "accuracy": "Accuracy",
    "auroc": "AUROC",
}
_METRIC_CAPTIONS = {
    "dice": "mean Dice over foreground classes for segmentation",
    "balanced_accuracy": "balanced accuracy for classification",
    "accuracy": "accuracy for classification",
    "auroc": "AUROC (one-vs-rest macro average) for classification",
}
_RESERVED = ("checkpoint", "schedule", *MEANS)  # column names a dataset cannot take
_MISSING = "\N{EM DASH}"  # a cell not run
_PNG = {"Software": None}  # no version string: the same table draws the same bytes


@dataclass(frozen=True)
class Table:
    """The benchmark's results, keyed by row (checkpoint, schedule) and dataset."""

    datasets: tuple[str, ...]  # column order: ID datasets first, then OOD, each first-seen
    domains: dict[str, str]  # dataset -> "ID" | "OOD"
    metrics: dict[str, str]  # dataset -> metric, e.g. "dice"
    rows: tuple[Row, ...]  # (checkpoint, schedule) in first-seen order
    values: dict[Row, dict[str, float]]  # row -> dataset -> value in [0, 1]; not run: absent

    def __post_init__(self) -> None:
        for dataset in self.datasets:
            if dataset in _RESERVED:
                raise SchemaError(f"dataset {dataset!r} is a column of the table; rename it")
            if self.domains.get(dataset) not in DOMAINS:
                raise SchemaError(f"dataset {dataset!r}: domain must be one of {DOMAINS}")
            if dataset not in self.metrics:
                raise SchemaError(f"dataset {dataset!r} has no metric")
        for row, cells in self.values.items():
            unknown = sorted(set(cells) - set(self.datasets))
            if row not in self.rows or unknown:
                raise SchemaError(f"values of row {row}: unknown row or dataset {unknown}")

    def means(self, row: Row) -> dict[str, float]:
        """The row's mean over "All" its datasets, and over its "ID" and "OOD" ones, counting
        only the datasets it has a value for; NaN where it has none."""
        if row not in self.rows:
            raise KeyError(f"no row {row} in the table (rows: {list(self.rows)})")
        cells = self.values.get(row, {})
        groups: dict[str, list[float]] = {name: [] for name in MEANS}
        for dataset in self.datasets:
            if dataset in cells:
                groups["All"].append(cells[dataset])
                groups[self.domains[dataset]].append(cells[dataset])
        return {
            name: math.fsum(values) / len(values) if values else math.nan
            for name, values in groups.items()
        }

    def column(self, name: str) -> dict[Row, float]:
        """A dataset's or a mean's value per row (rows without one left out)."""
        if name in MEANS:
            return {row: mean for row in self.rows if not math.isnan(mean := self.means(row)[name])}
        return {
            row: cells[name] for row in self.rows if name in (cells := self.values.get(row, {}))
        }

    def heading(self, dataset: str, separator: str = " ") -> str:
        """A dataset's column title with its metric and domain, e.g. "lesions (Dice, ID)"."""
        metric = self.metrics[dataset]
        shown = _METRIC_NAMES.get(metric, metric.replace("_", " "))
        return f"{dataset}{separator}({shown}, {self.domains[dataset]})"


def build_table(results: Iterable[Mapping[str, Any]]) -> Table:
    """The table of ``results``, mappings with the keys ``RESULT_KEYS``: one value per
    (checkpoint, schedule, dataset), each dataset with one domain and one metric. Anything else
    is a ``SchemaError`` (a ``ValueError``) naming the result and the dataset."""
    domains: dict[str, str] = {}
    metrics: dict[str, str] = {}
    seen_at: dict[str, int] = {}
    rows: dict[Row, None] = {}  # an ordered set
    values: dict[Row, dict[str, float]] = {}
    for index, result in enumerate(results):
        checkpoint, schedule, dataset, domain, metric, value = _checked(index, result)
        where = f"result {index} (dataset {dataset!r})"
        if dataset in domains:
            first = f"result {seen_at[dataset]}"
            if domains[dataset] != domain:
                raise SchemaError(
                    f"{where}: dataset {dataset!r} is {domain} here but {domains[dataset]} in"
                    f" {first}; a dataset has one domain"
                )
            if metrics[dataset] != metric:
                raise SchemaError(
                    f"{where}: dataset {dataset!r} is scored by {metric!r} here but by"
                    f" {metrics[dataset]!r} in {first}; a dataset has one metric"
                )
        else:
            domains[dataset], metrics[dataset], seen_at[dataset] = domain, metric, index
        row = (checkpoint, schedule)
        rows.setdefault(row)
        cells = values.setdefault(row, {})
        if dataset in cells:
            raise SchemaError(
                f"{where}: a second result for checkpoint {checkpoint!r}, schedule"
                f" {schedule!r} on dataset {dataset!r}"
            )
        cells[dataset] = value
    ordered = tuple(d for kind in DOMAINS for d in domains if domains[d] == kind)
    return Table(
        datasets=ordered,
        domains=domains,
        metrics=metrics,
        rows=tuple(rows),
        values=values,
    )


def write_table(table: Table, out: Path, *, dpi: int = 110) -> dict[str, Path]:
    """Write ``out/benchmark.csv``, ``out/benchmark.md`` and ``out/benchmark.png`` (each whole,
    or not at all); returns {"csv": ..., "md": ..., "png": ...}."""
    out = Path(out)
    return {
        "csv": write_atomic(out / "benchmark.csv", _csv(table).encode()),
        "md": write_atomic(out / "benchmark.md", _markdown(table).encode()),
        "png": _plot(table, out / "benchmark.png", dpi),
    }


def _checked(index: int, result: Mapping[str, Any]) -> tuple[str, str, str, str, str, float]:
    missing = [key for key in RESULT_KEYS if key not in result]
    if missing:
        raise SchemaError(f"result {index}: missing key(s) {', '.join(missing)}")
    names = []
    for key in ("checkpoint", "schedule", "dataset", "metric"):
        name = result[key]
        if not isinstance(name, str) or not name:
            raise SchemaError(f"result {index}: {key} must be a non-empty string, not {name!r}")
        names.append(name)
    checkpoint, schedule, dataset, metric = names
    where = f"result {index} (dataset {dataset!r})"
    if dataset in _RESERVED:
        raise SchemaError(f"{where}: {dataset!r} is a column of the table; rename the dataset")
    domain = result["domain"]
    if domain not in DOMAINS:
        raise SchemaError(f"{where}: domain must be one of {DOMAINS}, not {domain!r}")
    value = result["value"]
    try:  # str and bool convert too, but are not what a runner should hand over
        number = math.nan if isinstance(value, str | bytes | bool) else float(value)
    except (TypeError, ValueError):
        number = math.nan
    if not 0 <= number <= 1:
        raise SchemaError(f"{where}: value must be a number in [0, 1] (not percent), not {value!r}")
    return checkpoint, schedule, dataset, str(domain), metric, number


def _percent(value: float) -> str:
    return "" if math.isnan(value) else f"{100 * value:.2f}"


def _csv(table: Table) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["checkpoint", "schedule", *table.datasets, *MEANS])
    for row in table.rows:
        cells = table.values.get(row, {})
        means = table.means(row)
        writer.writerow(
            [
                *row,
                *(_percent(cells.get(d, math.nan)) for d in table.datasets),
                *(_percent(means[name]) for name in MEANS),
            ]
        )
    return buffer.getvalue()


def _markdown(table: Table) -> str:
    columns = [*table.datasets, *MEANS]
    # Best is decided on the printed values, so that two rows that read the same are both bold.
    best = {}
    for name in columns:
        printed = [_percent(v) for v in table.column(name).values()]
        if len(printed) > 1:  # a lone value is not "best" of anything
            best[name] = max(printed, key=float)
    used = dict.fromkeys(table.metrics[d] for d in table.datasets)
    described = ", ".join(_METRIC_CAPTIONS.get(m, m.replace("_", " ")) for m in used) or "none"
    lines = [
        (
            f"Values in %: {described}. All / ID / OOD: the row's mean over all, in-distribution"
            " (brain MRI) and out-of-distribution datasets. Best per column in **bold**;"
            f" {_MISSING} not run."
        ),
        "",
        "| "
        + " | ".join(
            ["Checkpoint", "Schedule", *(_escape(table.heading(d)) for d in table.datasets), *MEANS]
        )
        + " |",
        "| " + " | ".join([":--", ":--"] + ["--:"] * len(columns)) + " |",
    ]
    for row in table.rows:
        cells = {**table.values.get(row, {}), **table.means(row)}
        shown = []
        for name in columns:
            text = _percent(cells.get(name, math.nan))
            shown.append(f"**{text}**" if text and text == best.get(name) else text or _MISSING)
        lines.append("| " + " | ".join([*map(_escape, row), *shown]) + " |")
    return "\n".join(lines) + "\n"


def _escape(text: str) -> str:
    return text.replace("|", "\\|")


def _plot(table: Table, out: Path, dpi: int) -> Path:
    import matplotlib  # noqa: PLC0415 (keep matplotlib off the import path of the package)

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    groups = [*table.datasets, "All"]
    bars = max(1, len(table.rows))
    width = 0.8 / bars
    figure, ax = plt.subplots(figsize=(min(18.0, 2.5 + len(groups) * (0.6 + 0.18 * bars)), 4.2))
    colours = plt.get_cmap("tab10" if bars <= 10 else "tab20")
    for number, row in enumerate(table.rows):
        column = {name: table.column(name).get(row) for name in groups}
        positions = [
            g + (number - (bars - 1) / 2) * width
            for g, name in enumerate(groups)
            if column[name] is not None
        ]
        heights = [100 * v for v in column.values() if v is not None]
        drawn = ax.bar(
            positions, heights, width, label=" / ".join(row), color=colours(number % colours.N)
        )
        ax.bar_label(drawn, fmt="%.1f", fontsize=6, padding=1, rotation=90 if bars > 3 else 0)
    ax.set_xticks(range(len(groups)), [_short(table, name) for name in groups], fontsize=8)
    ax.axvline(len(groups) - 1.5, color="grey", linewidth=0.6, linestyle=":")
    ax.set_ylim(0, 110)
    ax.set_ylabel("%")
    ax.set_title("Fine-tuning results per downstream dataset")
    if table.rows:  # an empty benchmark still draws its (empty) axes, without a legend
        ax.legend(
            title="checkpoint / schedule",
            fontsize=7,
            title_fontsize=7,
            loc="upper left",
            bbox_to_anchor=(1.0, 1.0),
            frameon=False,
        )
    ax.spines[["top", "right"]].set_visible(False)
    return write_with(
        out, lambda partial: save_figure(figure, partial, dpi=dpi, metadata=_PNG, format="png")
    )


def _short(table: Table, name: str) -> str:
    """A bar group's label: the dataset, its metric and domain on a second line."""
    return f"{name}\n(mean)" if name in MEANS else table.heading(name, "\n")

"""MRIQC group tables (``group_T1w.tsv``-shaped): their metrics as the toolkit's columns, their
raters' verdicts as calibration targets.

A table has one row per scan, MRIQC's metric columns (``snr_total``, ``cnr``, ``cjv``, ``efc``,
``fber``, ``qi_1``, ``inu_range``, ``fwhm_avg``, ...: :data:`~openmind_data.quality.metrics.
MRIQC_NAMES` maps them onto ``iqm_*``), any identifier columns (``subject_id``, ``site``,
``bids_name``, ...), and optionally ratings: ``rater_*`` columns holding -1 (exclude),
0 (doubtful) or 1 (accept), as in the tables ``mriqc-learn`` ships (ABIDE, DS030).

- The peer group of a row is its ``site`` (else the whole table is one group).
- A scan's target is the share of its raters who excluded it, a "doubtful" counting half; it
  is "excluded" when its mean rating is below 0 (the label the AUCs are reported for).
- MRIQC writes -1 for FBER and QI1 where it found no air; those are nulls here.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from openmind_data.errors import ConfigError
from openmind_data.quality.metrics import MRIQC_NAMES
from openmind_data.quality.model import IqsModel
from openmind_data.quality.peers import peer_scores

__all__ = ["MriqcTable", "is_mriqc_table", "read_mriqc_table", "score_mriqc", "write_rows"]

NULLS = ["n/a", "NA", "N/A", "NaN", "nan", ""]
SENTINELS = {"fber", "qi_1"}  # MRIQC's -1: not measured


@dataclass(frozen=True)
class MriqcTable:
    table: pa.Table  # as read, every column
    rows: list[dict[str, Any]]  # iqm_*, modality and dataset_id (the site) per row
    raters: tuple[str, ...]
    source: str

    def take(self, indices: Sequence[int]) -> MriqcTable:
        """The rows ``indices``, in that order."""
        return MriqcTable(
            self.table.take(pa.array(indices, pa.int64())),
            [self.rows[i] for i in indices],
            self.raters,
            self.source,
        )

    def verdicts(self) -> list[list[float]]:
        """Each row's ratings (-1, 0, 1), unrated cells left out."""
        columns = [self.table.column(r).to_pylist() for r in self.raters]
        return (
            [
                [float(v) for v in cells if v is not None and not math.isnan(float(v))]
                for cells in zip(*columns, strict=True)
            ]
            if columns
            else [[] for _ in self.rows]
        )

    def targets(self) -> list[tuple[int, float, float]]:
        """(row, share of raters excluding with doubtful as half, weight 1) of rated rows."""
        return [
            (i, sum((1.0 - v) / 2.0 for v in votes) / len(votes), 1.0)
            for i, votes in enumerate(self.verdicts())
            if votes
        ]

    def excluded(self) -> list[bool | None]:
        """Mean rating below 0, per row; None where unrated."""
        return [sum(v) / len(v) < 0 if v else None for v in self.verdicts()]


def _read(path: Path) -> pa.Table:
    try:
        if path.suffix == ".parquet":
            return pq.read_table(path)
        delimiter = "," if path.suffix == ".csv" else "\t"
        return pacsv.read_csv(
            path,
            parse_options=pacsv.ParseOptions(delimiter=delimiter),
            convert_options=pacsv.ConvertOptions(null_values=NULLS, strings_can_be_null=True),
        )
    except (OSError, pa.ArrowInvalid) as error:
        raise ConfigError(f"MRIQC table {path}: cannot be read ({error})") from error


def is_mriqc_table(path: str | Path) -> bool:
    """Whether ``path`` holds MRIQC's metric columns (most of those the toolkit maps)."""
    path = Path(path)
    if path.suffix == ".parquet":
        names = set(pq.read_schema(path).names)
    else:
        try:
            with path.open(encoding="utf-8") as handle:
                header = handle.readline()
        except (OSError, UnicodeDecodeError):
            return False
        names = set(header.strip().split("," if path.suffix == ".csv" else "\t"))
    return len(names & set(MRIQC_NAMES.values())) >= len(MRIQC_NAMES) // 2


def read_mriqc_table(path: str | Path, modality: str = "T1w") -> MriqcTable:
    """Read an MRIQC group table; ``modality`` names its images where it has no ``modality``
    column (MRIQC writes one table per suffix: group_T1w.tsv, group_T2w.tsv)."""
    path = Path(path)
    table = _read(path)
    names = table.column_names
    present = {mriqc: iqm for iqm, mriqc in MRIQC_NAMES.items() if mriqc in names}
    if len(present) < len(MRIQC_NAMES) // 2:
        raise ConfigError(
            f"MRIQC table {path}: too few MRIQC metric columns ({sorted(present) or 'none'}); "
            f"expected {', '.join(MRIQC_NAMES.values())}"
        )
    raters = tuple(n for n in names if n.startswith("rater"))
    sites = table.column("site").to_pylist() if "site" in names else [path.stem] * len(table)
    modalities = (
        table.column("modality").to_pylist() if "modality" in names else [modality] * len(table)
    )
    values = {m: table.column(m).to_pylist() for m in present}
    rows: list[dict[str, Any]] = []
    for i in range(table.num_rows):
        row: dict[str, Any] = {"dataset_id": str(sites[i]), "modality": str(modalities[i])}
        for mriqc, column in present.items():
            row[column] = _value(values[mriqc][i], mriqc, path, i)
        rows.append(row)
    return MriqcTable(table, rows, raters, str(path))


def _value(cell: Any, mriqc: str, path: Path, line: int) -> float | None:
    if cell is None:
        return None
    try:
        x = float(cell)
    except (TypeError, ValueError) as error:
        raise ConfigError(f"MRIQC table {path}: row {line + 1}: {mriqc} {cell!r}") from error
    if not math.isfinite(x) or (mriqc in SENTINELS and x < 0):
        return None
    return x


def score_mriqc(table: MriqcTable, model: IqsModel) -> pa.Table:
    """The table's rows, every column kept, with ``image_quality_score`` (peers: the site)."""
    scores = peer_scores(table.rows, model)
    out = table.table
    if "image_quality_score" in out.column_names:
        out = out.drop_columns(["image_quality_score"])
    return out.append_column("image_quality_score", pa.array(scores, pa.float64()))


def write_rows(table: pa.Table, path: str | Path) -> Path:
    """Write ``table`` as Parquet, CSV or (any other suffix) TSV."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".parquet":
        pq.write_table(table, path)
    else:
        delimiter = "," if path.suffix == ".csv" else "\t"
        pacsv.write_csv(table, path, pacsv.WriteOptions(delimiter=delimiter))
    return path

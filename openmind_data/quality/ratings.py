"""Quality ratings from people or from a release, matched to the rows of an image table.

A ratings table (CSV, TSV or Parquet) has one score column, ``rating``, ``score``,
``image_quality_score`` or ``iqs`` (1 best ... 5 worst), and names what it rates by one of:

- ``image_id``: the toolkit's image ids;
- ``image_path``: the released layout's paths (``<dataset>/sub-*/[ses-*/]anat/<name>.nii.gz``,
  any prefix before the dataset folder is ignored), as in OpenMind's ``openneuro_metadata.csv``;
- ``dataset_id`` (or ``dataset``) and ``modality``: one score for a (dataset, modality) group,
  the grain of OpenMind's released scores.

Rows that match no image are counted and reported, never silently dropped.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from openmind_data.errors import ConfigError

__all__ = ["Ratings", "read_ratings"]

SCORE_COLUMNS = ("rating", "score", "image_quality_score", "iqs")
_DATASET = re.compile(r"^ds\d+$")


@dataclass(frozen=True)
class Ratings:
    """Scores keyed one way: ``key`` is 'image_id', 'image_path' or 'group'."""

    key: str
    scores: dict[Any, float]  # image id | normalised path | (dataset_id, modality) -> score
    source: str

    def match(
        self, rows: Sequence[Mapping[str, Any]]
    ) -> tuple[list[tuple[int, float, float]], int]:
        """(row index, score, weight) for every rated row, a group's rows sharing weight 1; and
        how many ratings matched no row."""
        keys = [self._key_of(row) for row in rows]
        members: dict[Any, list[int]] = {}
        for index, key in enumerate(keys):
            if key in self.scores:
                members.setdefault(key, []).append(index)
        targets = [
            (index, self.scores[key], 1.0 / len(indices))
            for key, indices in members.items()
            for index in indices
        ]
        return sorted(targets), len(self.scores) - len(members)

    def score_of(self, row: Mapping[str, Any]) -> float | None:
        return self.scores.get(self._key_of(row))

    def _key_of(self, row: Mapping[str, Any]) -> Any:
        if self.key == "image_id":
            return row["image_id"]
        if self.key == "image_path":
            return _normalise(str(row["image_path"])) if row.get("image_path") else None
        return (str(row["dataset_id"]), str(row["modality"]))


def _normalise(path: str) -> str:
    """A released-layout path from its dataset folder on (``.../ds000001/sub-01/...``)."""
    parts = [p for p in path.replace("\\", "/").split("/") if p]
    for i, part in enumerate(parts):
        if _DATASET.match(part):
            return "/".join(parts[i:])
    return "/".join(parts)


def _read(path: Path) -> pa.Table:
    try:
        if path.suffix == ".parquet":
            return pq.read_table(path)
        delimiter = "\t" if path.suffix == ".tsv" else ","
        return pacsv.read_csv(path, parse_options=pacsv.ParseOptions(delimiter=delimiter))
    except (OSError, pa.ArrowInvalid) as error:
        raise ConfigError(f"ratings {path}: cannot be read ({error})") from error


def read_ratings(path: str | Path) -> Ratings:
    """Read a ratings table (see the module's docstring); scores must lie in [1, 5]."""
    path = Path(path)
    table = _read(path)
    names = set(table.column_names)
    score_column = next((c for c in SCORE_COLUMNS if c in names), None)
    if score_column is None:
        raise ConfigError(
            f"ratings {path}: no score column; expected one of {', '.join(SCORE_COLUMNS)}"
        )
    dataset_column = "dataset_id" if "dataset_id" in names else "dataset"
    if "image_id" in names:
        key, columns = "image_id", ["image_id"]
    elif "image_path" in names:
        key, columns = "image_path", ["image_path"]
    elif dataset_column in names and "modality" in names:
        key, columns = "group", [dataset_column, "modality"]
    else:
        raise ConfigError(
            f"ratings {path}: need image_id, image_path, or dataset_id and modality columns"
        )
    scores: dict[Any, float] = {}
    rows = table.select([*columns, score_column]).to_pylist()
    for line, row in enumerate(rows, start=1):  # data rows, header not counted
        value = row[score_column]
        if value is None or (isinstance(value, float) and math.isnan(value)):
            continue  # unrated
        score = float(value)
        if not 1.0 <= score <= 5.0:
            raise ConfigError(f"ratings {path}: row {line}: score {score} is outside [1, 5]")
        if key == "group":
            ident: Any = (str(row[dataset_column]), str(row["modality"]))
        elif key == "image_path":
            ident = _normalise(str(row["image_path"]))
        else:
            ident = str(row["image_id"])
        if ident in scores and scores[ident] != score:
            raise ConfigError(f"ratings {path}: row {line}: {ident} is rated twice, differently")
        scores[ident] = score
    return Ratings(key=key, scores=scores, source=str(path))

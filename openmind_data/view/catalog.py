"""The QC browser's table of images: filters, sorting, the queue of images to rate, and what the
page shows of one image (its metadata, its metrics with their share of the IQS, its provenance
and source dataset), from the metadata tables alone."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from functools import cached_property
from typing import Any

import pyarrow as pa

from openmind_data.errors import ConfigError
from openmind_data.quality.model import IqsModel, Reference, iqs_of_log_odds
from openmind_data.quality.peers import peer_references
from openmind_data.schema import IQM_COLUMNS
from openmind_data.view.ratings import RatingsFile

__all__ = ["FILTERS", "LIST_COLUMNS", "Catalog"]

#: The columns of the list the page shows, and the ones it can sort by.
LIST_COLUMNS = (
    "image_id",
    "modality",
    "dataset_id",
    "split",
    "license",
    "defacing",
    "image_quality_score",
    "qc_flags",
)
#: query parameter -> the image-table column it filters on, by equality (``flag``: contained
#: in ``qc_flags``). ``min_iqs``, ``max_iqs`` and ``rated`` (yes/no) are filters too.
FILTERS = {
    "modality": "modality",
    "dataset": "dataset_id",
    "license": "license",
    "split": "split",
    "flag": "qc_flags",
}
#: Image-table columns the page shows in panels of their own, not among the fields.
_PANELS = {*IQM_COLUMNS, "provenance", "qc_flags", "affine"}


class Catalog:
    """The image table of a dataset (``images``), its sources, the IQS ``model`` that explains
    its scores (None: scores are shown unexplained) and the ratings made so far."""

    def __init__(
        self,
        images: pa.Table,
        sources: pa.Table,
        ratings: RatingsFile,
        model: IqsModel | None = None,
    ) -> None:
        self.rows: list[dict[str, Any]] = images.to_pylist()
        self.index = {str(row["image_id"]): i for i, row in enumerate(self.rows)}
        self.sources = {str(row["dataset_id"]): row for row in sources.to_pylist()}
        self.ratings = ratings
        self.model = model

    def row(self, image_id: str) -> dict[str, Any]:
        if image_id not in self.index:
            raise KeyError(image_id)
        return self.rows[self.index[image_id]]

    # -- the list -----------------------------------------------------------------------
    @cached_property
    def facets(self) -> dict[str, list[str]]:
        """Filter -> the values the table holds, sorted."""
        out: dict[str, list[str]] = {}
        for name, column in FILTERS.items():
            values: set[str] = set()
            for row in self.rows:
                cell = row.get(column)
                values.update(cell if isinstance(cell, list) else [cell] if cell else [])
            out[name] = sorted(str(v) for v in values)
        return out

    def select(self, query: Mapping[str, str]) -> list[dict[str, Any]]:
        """The rows ``query`` keeps (see :data:`FILTERS`), sorted by ``sort`` (a list column,
        ``rating``, default the IQS) in ``order`` (asc or desc); missing values last."""
        low = _number(query, "min_iqs")
        high = _number(query, "max_iqs")
        rated = query.get("rated", "")
        wanted = {FILTERS[k]: v for k, v in query.items() if k in FILTERS and v}
        kept = []
        for row in self.rows:
            if not all(_matches(row, column, value) for column, value in wanted.items()):
                continue
            score = row.get("image_quality_score")
            if low is not None and (score is None or score < low):
                continue
            if high is not None and (score is None or score > high):
                continue
            is_rated = str(row["image_id"]) in self.ratings.ratings
            if (rated == "yes" and not is_rated) or (rated == "no" and is_rated):
                continue
            kept.append(row)
        column = query.get("sort") or "image_quality_score"
        if column not in (*LIST_COLUMNS, "rating"):
            raise ConfigError(f"cannot sort by {column!r}: one of {', '.join(LIST_COLUMNS)}")
        descending = query.get("order") == "desc"

        def value(row: Mapping[str, Any]) -> Any:
            if column == "rating":
                found = self.ratings.ratings.get(str(row["image_id"]))
                return found.rating if found else None
            cell = row.get(column)
            return ",".join(cell) if isinstance(cell, list) else cell

        keyed = [(value(r), str(r["image_id"]), r) for r in kept]
        present = [k for k in keyed if k[0] is not None]
        present.sort(key=lambda k: (k[0], k[1]), reverse=descending)
        return [k[2] for k in present] + [k[2] for k in keyed if k[0] is None]

    def summary(self, row: Mapping[str, Any]) -> dict[str, Any]:
        """What the list shows of a row, with its rating."""
        out = {column: row.get(column) for column in LIST_COLUMNS}
        found = self.ratings.ratings.get(str(row["image_id"]))
        out["rating"] = found.to_dict() if found else None
        return out

    def next_unrated(self, query: Mapping[str, str], after: str | None = None) -> str | None:
        """The next image to rate among those ``query`` keeps: unrated, worst IQS first (the
        unscored last), skipping ``after``."""
        chosen = self.select(
            {**query, "rated": "no", "sort": "image_quality_score", "order": "desc"}
        )
        ids = [str(row["image_id"]) for row in chosen if str(row["image_id"]) != after]
        return ids[0] if ids else None

    # -- one image ------------------------------------------------------------------------
    def details(self, image_id: str) -> dict[str, Any]:
        """The page's account of one image: fields, metrics (value, standardized badness z,
        contribution to the log-odds), the score they give, provenance, source, rating."""
        row = self.row(image_id)
        source = self.sources.get(str(row["dataset_id"]), {})
        found = self.ratings.ratings.get(image_id)
        return {
            "image_id": image_id,
            "fields": {
                k: _plain(v) for k, v in row.items() if k not in _PANELS and v not in (None, [])
            },
            "qc_flags": list(row.get("qc_flags") or []),
            "quality": self._quality(row),
            "provenance": [
                {**step, "parameters": _parsed(step.get("parameters"))}
                for step in row.get("provenance") or []
            ],
            "source": {k: _plain(v) for k, v in source.items() if v not in (None, "", [])},
            "rating": found.to_dict() if found else None,
        }

    def _quality(self, row: Mapping[str, Any]) -> dict[str, Any]:
        metrics = {c: row.get(c) for c in IQM_COLUMNS}
        out: dict[str, Any] = {
            "score": row.get("image_quality_score"),
            "model": row.get("iqs_model"),
            "metrics": [{"metric": c, "value": _finite(v)} for c, v in metrics.items()],
            "explained_by": None,
        }
        model = self.model
        if model is None or row.get("iqs_model") != model.label:
            return out
        references = self._peer_references[self.index[str(row["image_id"])]]
        modality = str(row["modality"])
        z = model.standardized(row, modality, references)
        parts = model.contributions(row, modality, references)
        for entry in out["metrics"]:
            entry["z"] = _finite(z.get(entry["metric"]))
            entry["contribution"] = _finite(parts.get(entry["metric"]))
        out["explained_by"] = model.label
        out["intercept"] = model.intercept
        out["recomputed"] = (
            iqs_of_log_odds(model.intercept + sum(parts.values())) if parts else None
        )
        return out

    @cached_property
    def _peer_references(self) -> list[dict[str, Reference]]:
        """Each row's references as the build scored it: against its peers in this table."""
        assert self.model is not None
        return peer_references(self.rows, self.model).references


def _matches(row: Mapping[str, Any], column: str, wanted: str) -> bool:
    cell = row.get(column)
    if isinstance(cell, list):
        return wanted in cell
    return str(cell) == wanted


def _number(query: Mapping[str, str], name: str) -> float | None:
    text = query.get(name, "")
    if not text:
        return None
    try:
        return float(text)
    except ValueError as error:
        raise ConfigError(f"{name}={text!r} is not a number") from error


def _finite(value: Any) -> float | None:
    if value is None:
        return None
    number = float(value)
    return number if math.isfinite(number) else None


def _plain(value: Any) -> Any:
    """A cell as JSON can carry it: key/value lists as objects, non-finite floats as null."""
    if isinstance(value, float):
        return _finite(value)
    if isinstance(value, list) and value and isinstance(value[0], dict) and "key" in value[0]:
        return {item["key"]: item["value"] for item in value}
    return value


def _parsed(text: str | None) -> Any:
    if not text:
        return None
    try:
        return json.loads(text)
    except ValueError:
        return text

"""``run_quality``: the quality metrics and the IQS of every image of the masks stage's table.

Each image is read once with its anatomy, anonymization and brain masks (written by the masks
stage under its folder); the metrics and the score are pure functions of those voxels and the
model, so any executor gives the same rows. An image that cannot be read is a row in the
exclusion table (stage 'quality'), not a crash.
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from collections.abc import Mapping
from dataclasses import replace
from functools import lru_cache
from importlib.metadata import version
from pathlib import Path
from typing import Any, Unpack

import numpy as np
import pyarrow as pa

from openmind_data.quality.model import IqsModel, Reference, load_model
from openmind_data.quality.peers import peer_references
from openmind_data.quality.ratings import Ratings
from openmind_data.quality.stage import Quality
from openmind_data.schema import IMAGE_SCHEMA, IQM_COLUMNS, table_from_records
from openmind_data.stages import Item, Running, StageResult, run_pipeline

__all__ = ["measure_quality", "run_quality", "score_image", "score_table"]

log = logging.getLogger(__name__)


def score_image(
    row: Mapping[str, Any],
    model: IqsModel,
    references: Mapping[str, Reference] | None = None,
    peers: Mapping[str, int] | None = None,
) -> dict[str, Any]:
    """The score fields of one row with its ``iqm_*`` columns: IQS, model label, and a
    provenance step (replacing an earlier scoring) that says which metrics drove the score
    (each one's share of the log-odds) and what it was measured against: its peers'
    ``references`` (:func:`~openmind_data.quality.peers.peer_references`) or, without them,
    the model's prior."""
    modality = str(row["modality"])
    metrics = {column: row.get(column) for column in IQM_COLUMNS}
    parts = model.contributions(metrics, modality, references)
    step = {
        "step": "quality",
        "method": f"iqs {model.label}",
        "parameters": json.dumps(
            {
                "intercept": round(model.intercept, 4),
                "contributions": {k: round(v, 4) for k, v in sorted(parts.items()) if v > 0},
                "not_applicable": sorted(k for k, v in metrics.items() if v is None),
                "peers": dict(peers or {"dataset": 0, "modality": 0}),
            },
            sort_keys=True,
        ),
        "software": f"openmind_data {_version()}",
    }
    earlier = [p for p in row.get("provenance") or [] if p["step"] != "quality"]
    return {
        "image_quality_score": model.score(metrics, modality, references),
        "iqs_model": model.label,
        "provenance": [*earlier, step],
    }


def score_table(
    images: pa.Table,
    model: IqsModel | None = None,
    *,
    released: Ratings | None = None,
    peers: bool = True,
) -> pa.Table:
    """Score (or re-score) every row of a table with its ``iqm_*`` columns; no voxel is read.
    Each image is measured against its peers in the table (its dataset, its modality; see
    :mod:`~openmind_data.quality.peers`), or with ``peers=False`` against the model's prior
    alone. ``released`` scores, when given, fill ``released_quality_score``."""
    model = model or load_model()
    rows = images.to_pylist()
    found = peer_references(rows, model) if peers else None
    records = []
    for i, row in enumerate(rows):
        references = None if found is None else found.references[i]
        counts = None if found is None else found.peers[i]
        record = {**row, **score_image(row, model, references, counts)}
        if released is not None:
            record["released_quality_score"] = released.score_of(row)
        records.append(record)
    return table_from_records(records, IMAGE_SCHEMA)


def measure_quality(
    images: pa.Table,
    voxels: Mapping[str, str | Path],
    masks_root: str | Path,
    *,
    out: str | Path | None = None,
    **running: Unpack[Running],
) -> StageResult:
    """The ``iqm_*`` columns of every row of ``images`` (the masks stage's table): voxels from
    ``voxels[image_id]``, masks from their ``*_mask_path`` under ``masks_root``, run as
    ``running`` says (:class:`~openmind_data.stages.Running`; a journal goes in ``out``)."""
    items = [Item(row, Path(voxels[row["image_id"]])) for row in images.to_pylist()]
    return run_pipeline((Quality(Path(masks_root)),), items, name="quality", out=out, **running)


def run_quality(
    images: pa.Table,
    voxels: Mapping[str, str | Path],
    masks_root: str | Path,
    model: IqsModel | None = None,
    *,
    released: Ratings | None = None,
    out: str | Path | None = None,
    **running: Unpack[Running],
) -> StageResult:
    """:func:`measure_quality`, then :func:`score_table` with ``model`` (default: the shipped
    one)."""
    measured = measure_quality(images, voxels, masks_root, out=out, **running)
    scored = score_table(measured.images, model, released=released)
    return replace(measured, images=scored, summary=_scores(scored))


def _scores(images: pa.Table) -> dict[str, object]:
    """Scored images and their median IQS per modality, and those no metric applies to."""
    scores: dict[str, list[float]] = {}
    unscored: Counter[str] = Counter()
    for row in images.select(["modality", "image_quality_score"]).to_pylist():
        if row["image_quality_score"] is None:
            unscored[str(row["modality"])] += 1
        else:
            scores.setdefault(str(row["modality"]), []).append(row["image_quality_score"])
    return {
        "scored images": sum(len(v) for v in scores.values()),
        "median IQS": {m: round(float(np.median(v)), 2) for m, v in sorted(scores.items())},
        "unscored (no metric applies)": dict(sorted(unscored.items())),
    }


@lru_cache(maxsize=1)
def _version() -> str:
    return version("openmind-toolkit")

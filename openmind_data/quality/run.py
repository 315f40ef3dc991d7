"""``run_quality``: the quality metrics and the IQS of every image of the masks stage's table.

Each image is read once with its anatomy, anonymization and brain masks (written by the masks
stage under its folder); the metrics and the score are pure functions of those voxels and the
model, so any executor gives the same rows. An image that cannot be read is a row in the
exclusion table (stage 'quality'), not a crash.
"""

from __future__ import annotations

import json
import logging
import traceback
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from importlib.metadata import version
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from openmind_data.errors import InvalidInputError
from openmind_data.exclusions import ExclusionReason as R
from openmind_data.exclusions import exclusion_row
from openmind_data.nifti import read_stored, scaled
from openmind_data.parallel import run_jobs
from openmind_data.quality.metrics import image_quality_metrics
from openmind_data.quality.model import IqsModel, Reference, load_model
from openmind_data.quality.peers import peer_references
from openmind_data.quality.ratings import Ratings
from openmind_data.schema import (
    EXCLUDED_SCHEMA,
    IMAGE_SCHEMA,
    IQM_COLUMNS,
    table_from_records,
    write_table,
)

__all__ = ["QualityResult", "measure_quality", "run_quality", "score_image", "score_table"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class QualityResult:
    images: pa.Table
    excluded: pa.Table

    def counts(self) -> dict[str, object]:
        scores: dict[str, list[float]] = {}
        unscored: Counter[str] = Counter()
        for row in self.images.select(["modality", "image_quality_score"]).to_pylist():
            if row["image_quality_score"] is None:
                unscored[str(row["modality"])] += 1
            else:
                scores.setdefault(str(row["modality"]), []).append(row["image_quality_score"])
        return {
            "scored images": sum(len(v) for v in scores.values()),
            "median IQS": {m: round(float(np.median(v)), 2) for m, v in sorted(scores.items())},
            "unscored (no metric applies)": dict(sorted(unscored.items())),
            "quality excluded": self.excluded.num_rows,
        }

    def write(self, out: str | Path) -> dict[str, Path]:
        paths = {
            "images": Path(out) / "quality.parquet",
            "excluded": Path(out) / "quality.excluded.parquet",
        }
        write_table(self.images, paths["images"])
        write_table(self.excluded, paths["excluded"])
        return paths


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
    workers: int = 1,
    progress: bool = False,
) -> QualityResult:
    """The ``iqm_*`` columns of every row of ``images`` (the masks stage's table): voxels from
    ``voxels[image_id]``, masks from their ``*_mask_path`` under ``masks_root``."""
    jobs = [(row, str(voxels[row["image_id"]]), str(masks_root)) for row in images.to_pylist()]
    results = run_jobs(_one, jobs, workers=workers, desc="quality", unit="image", progress=progress)
    return QualityResult(
        images=table_from_records([r for done in results for r in done[0]], IMAGE_SCHEMA),
        excluded=table_from_records([r for done in results for r in done[1]], EXCLUDED_SCHEMA),
    )


def run_quality(
    images: pa.Table,
    voxels: Mapping[str, str | Path],
    masks_root: str | Path,
    model: IqsModel | None = None,
    *,
    released: Ratings | None = None,
    workers: int = 1,
    progress: bool = False,
) -> QualityResult:
    """:func:`measure_quality`, then :func:`score_table` with ``model`` (default: the shipped
    one)."""
    measured = measure_quality(images, voxels, masks_root, workers=workers, progress=progress)
    return QualityResult(
        images=score_table(measured.images, model, released=released),
        excluded=measured.excluded,
    )


@lru_cache(maxsize=1)
def _version() -> str:
    return version("openmind-toolkit")


def _one(
    job: tuple[Mapping[str, Any], str, str],
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    row, source, masks_root = job
    try:
        return [{**row, **_metrics(row, source, Path(masks_root))}], []
    except InvalidInputError as error:
        return [], [exclusion_row(row, error.reason, error.detail, stage="quality")]
    except Exception as error:  # noqa: BLE001 - one image must not stop the others; recorded
        log.debug("quality: %s failed:\n%s", source, traceback.format_exc())
        detail = f"{type(error).__name__}: {error}"
        return [], [exclusion_row(row, R.PROCESSING_ERROR, detail, stage="quality")]


def _metrics(row: Mapping[str, Any], source: str, masks_root: Path) -> dict[str, float | None]:
    image, raw, scaling, _ = read_stored(source)
    data = scaled(raw, scaling)
    masks: dict[str, Any] = {}
    for column in ("anat_mask_path", "anon_mask_path", "brain_mask_path"):
        if row.get(column):
            mask = read_stored(masks_root / row[column]).raw
            if mask.shape != data.shape[:3]:
                raise InvalidInputError(
                    masks_root / row[column],
                    R.PROCESSING_ERROR,
                    f"mask shape {mask.shape} is not the image's {data.shape}",
                )
            masks[column] = mask > 0
    if "anat_mask_path" not in masks:
        raise InvalidInputError(source, R.PROCESSING_ERROR, "no anatomy mask: run the masks stage")
    anatomy = masks["anat_mask_path"]
    return image_quality_metrics(
        data,
        anatomy,
        masks.get("anon_mask_path", np.zeros_like(anatomy)),
        masks.get("brain_mask_path"),
        modality=str(row["modality"]),
        spacing=tuple(float(z) for z in image.header.get_zooms()[:3]),
    )

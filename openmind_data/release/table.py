"""``openneuro_metadata.csv``: the release's one table, read into image-table rows and written.

Reading maps each CSV row onto the image schema before anything is downloaded, so filters on
modality, dataset and IQS choose which files are fetched at all:

- ``image_path`` is the only cell a row cannot do without; it must be a relative
  ``<dataset>/.../<name>.nii[.gz]`` path inside the release. The dataset id is its first folder
  (``unique_id`` starts with the same id; a row where they disagree is excluded). The image's
  ``source_path`` is the rest of the path, as released; ``image_path`` is the same path ending in
  ``.nii.gz``, because the toolkit publishes every image gzipped.
- ``anat_mask_path`` and ``anon_mask_path`` are followed as given (``.nii`` made ``.nii.gz`` for
  the same reason); an empty cell is a missing mask, which the import makes itself.
- Modalities take the toolkit's vocabulary: ``UNIT1_denoised`` is published as ``UNIT1``
  (:data:`RELEASE_MODALITIES`, recorded in ``extra_metadata``); a modality outside it
  (``sbref``, ``PET``, a 3D ``DWI``) is an ``unmapped_modality`` exclusion.
- Empty, ``nan`` and ``n/a`` cells are nulls. A cell that does not parse (an age of "adult") is a
  null too, and its text is kept in ``extra_metadata`` as ``release.<column>``, as is every
  column the schema has no place for: nothing in the table is dropped silently.
- The released score is per (dataset, modality, derivation) group; it is kept per row as
  ``released_quality_score`` and, until the quality stage is recomputed, as the IQS itself.
"""

from __future__ import annotations

import csv
import io
import json
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa

from openmind_data.crawl.bidsname import ENTITY_NAMES, parse_bids_name
from openmind_data.crawl.normalize import (
    normalize_handedness,
    normalize_manufacturer,
    normalize_sex,
    normalize_tesla,
)
from openmind_data.errors import ConfigError
from openmind_data.exclusions import ExclusionReason as R
from openmind_data.exclusions import exclusion_row
from openmind_data.ids import image_id
from openmind_data.modalities import modality_names
from openmind_data.schema import RELEASED_COLUMNS

__all__ = [
    "RELEASED_IQS_MODEL",
    "RELEASE_MODALITIES",
    "ReleaseRows",
    "read_release_csv",
    "write_release_csv",
]

#: The ``iqs_model`` of a row whose IQS is the release's own score.
RELEASED_IQS_MODEL = "openmind-release"
#: Release modality -> the vocabulary's name for it.
RELEASE_MODALITIES: dict[str, str] = {"UNIT1_denoised": "UNIT1"}
#: Which image of a DWI series a derived map is, by its released modality.
_DERIVATIONS = {"MD": "md", "FA": "fa", "T2w": "mean_b0"}
_MISSING = {"", "nan", "none", "null", "n/a", "na"}
_DATASET = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")
_FLOATS = (
    "age", "weight", "bmi", "repetition_time", "echo_time", "image_quality_score",
)  # fmt: skip
_TEXT = ("model_name", "race", "health_status", "phase_encoding_direction")


@dataclass
class ReleaseRows:
    """The CSV's rows as candidates of the image schema, and the rows it could not take."""

    candidates: list[dict[str, Any]] = field(default_factory=list)
    excluded: list[dict[str, Any]] = field(default_factory=list)
    #: Per candidate (same order): voxel column -> path in the release's image folder.
    files: list[dict[str, str]] = field(default_factory=list)

    def select(
        self,
        modalities: Sequence[str] | None = None,
        max_iqs: float | None = None,
        datasets: Sequence[str] | None = None,
    ) -> ReleaseRows:
        """The rows of ``modalities`` and ``datasets`` whose released score is at most
        ``max_iqs`` (a row without a score does not pass a score filter), and the exclusions
        of those datasets (with a modality filter, not the rows of modalities outside the
        vocabulary: they were not asked for)."""
        keep = ReleaseRows(
            excluded=[
                row
                for row in self.excluded
                if (not datasets or row["dataset_id"] in datasets)
                and not (modalities and row["reason"] == R.UNMAPPED_MODALITY)
            ]
        )
        for row, files in zip(self.candidates, self.files, strict=True):
            if modalities and row["modality"] not in modalities:
                continue
            if datasets and row["dataset_id"] not in datasets:
                continue
            score = row["released_quality_score"]
            if max_iqs is not None and (score is None or score > max_iqs):
                continue
            keep.candidates.append(row)
            keep.files.append(files)
        return keep


def read_release_csv(data: bytes, where: str, *, license: str | None = None) -> ReleaseRows:
    """Rows of an ``openneuro_metadata.csv`` (bytes of the file at ``where``, for messages);
    ``license`` is the release's licence, given to every row."""
    text = data.decode("utf-8-sig")
    reader = csv.DictReader(io.StringIO(text))
    if reader.fieldnames is None or "image_path" not in reader.fieldnames:
        raise ConfigError(f"{where}: not OpenMind's metadata table (no image_path column)")
    out = ReleaseRows()
    vocabulary = set(modality_names(published_only=True))
    seen: set[str] = set()
    for line, cells in enumerate(reader, start=2):
        row, files, problem = _row(cells, line, vocabulary, license)
        if problem is not None:
            out.excluded.append(problem)
        elif row["image_path"] in seen:
            out.excluded.append(
                exclusion_row(row, R.INVALID_METADATA, f"line {line}: listed twice", stage="import")
            )
        else:
            seen.add(row["image_path"])
            out.candidates.append(row)
            out.files.append(files)
    return out


def _row(
    cells: Mapping[str, str | None], line: int, vocabulary: set[str], license: str | None
) -> tuple[dict[str, Any], dict[str, str], dict[str, Any] | None]:
    value = {k: _clean(v) for k, v in cells.items() if k is not None}
    path = value.get("image_path")
    dataset = path.split("/", 1)[0] if path else (value.get("unique_id") or "")[:8]
    inside = path.split("/", 1)[1] if path and "/" in path else path
    stub = {"dataset_id": dataset or "unknown", "source_path": inside or f"<line {line}>"}

    def excluded(reason: str, detail: str) -> tuple[dict[str, Any], dict[str, str], Any]:
        return stub, {}, exclusion_row(stub, reason, f"line {line}: {detail}", stage="import")

    if path is None or not _is_release_path(path):
        return excluded(R.INVALID_METADATA, f"image_path {path!r} is not a relative NIfTI path")
    unique = value.get("unique_id")
    if unique is not None and not unique.startswith(dataset):
        return excluded(R.INVALID_METADATA, f"unique_id {unique!r} is not of dataset {dataset}")
    released = value.get("modality")
    modality = RELEASE_MODALITIES.get(released or "", released)
    if modality not in vocabulary:
        return excluded(R.UNMAPPED_MODALITY, f"modality {released!r} is not in the vocabulary")
    masks = {}
    for column in ("anat_mask", "anon_mask"):
        mask = value.get(f"{column}_path")
        if mask is None:
            continue
        if not _is_release_path(mask):
            return excluded(R.INVALID_METADATA, f"{column}_path {mask!r} is not a NIfTI path")
        masks[column] = mask
    extra: dict[str, str] = {}
    if modality != released:
        extra["release.modality"] = json.dumps(released)
    source = path.split("/", 1)[1]
    name = parse_bids_name(source)
    entities = name.entities if name is not None else {}
    derived_from = value.get("derived_from")
    row: dict[str, Any] = {
        "image_id": image_id(dataset, source),
        "dataset_id": dataset,
        "subject": entities.get("sub"),
        "session": entities.get("ses"),
        "run": _run(entities.get("run")),
        "entities": {
            k: entities[k] for k in ENTITY_NAMES if k in entities and k not in ("sub", "ses", "run")
        },
        "source_path": source,
        "unique_id": unique,
        "image_path": _gzipped(path),
        "derived_from": derived_from,
        "derivation": _DERIVATIONS.get(modality) if derived_from else None,
        "modality": modality,
        "is_brain_extract": _bool(value.get("is_brain_extract"), "is_brain_extract", extra),
        "manufacturer": normalize_manufacturer(value.get("manufacturer")),
        "magnetic_field_strength": _parsed(
            value, "magnetic_field_strength", normalize_tesla, extra
        ),
        "sex": _parsed(value, "sex", normalize_sex, extra),
        "handedness": _parsed(value, "handedness", normalize_handedness, extra),
        "license": license,
        "iqs_model": RELEASED_IQS_MODEL,
    }
    for column in _FLOATS:
        row[column] = _parsed(value, column, _number, extra)
    score = row["image_quality_score"]
    if score is not None and not 1.0 <= score <= 5.0:
        extra["release.image_quality_score"] = json.dumps(value["image_quality_score"])
        row["image_quality_score"] = score = None
    row["released_quality_score"] = score
    for column in _TEXT:
        row[column] = value.get(column)
    for column, cell in value.items():
        if column not in RELEASED_COLUMNS and cell is not None:
            extra[f"release.{column}"] = json.dumps(cell)
    row["extra_metadata"] = dict(sorted(extra.items()))
    files = {"image": path} | masks
    row["anat_mask_path"] = _gzipped(masks["anat_mask"]) if "anat_mask" in masks else None
    row["anon_mask_path"] = _gzipped(masks["anon_mask"]) if "anon_mask" in masks else None
    return row, files, None


def _clean(cell: str | None) -> str | None:
    if cell is None:
        return None
    text = cell.strip()
    return None if text.lower() in _MISSING else text


def _is_release_path(path: str) -> bool:
    parts = path.split("/")
    return (
        len(parts) >= 2
        and not path.startswith("/")
        and all(part not in ("", ".", "..") for part in parts)
        and _DATASET.fullmatch(parts[0]) is not None
        and path.endswith((".nii", ".nii.gz"))
    )


def _gzipped(path: str) -> str:
    return path if path.endswith(".gz") else f"{path}.gz"


def _run(label: str | None) -> int | None:
    return int(label) if label is not None and label.isdigit() else None


def _number(text: str) -> float | None:
    try:
        number = float(text)
    except ValueError:
        return None
    return number if math.isfinite(number) else None


def _parsed(value: Mapping[str, str | None], column: str, parse: Any, extra: dict[str, str]) -> Any:
    """``parse`` of a cell; a cell that does not parse is null, its text kept in ``extra``."""
    cell = value.get(column)
    if cell is None:
        return None
    parsed = parse(cell)
    if parsed is None:
        extra[f"release.{column}"] = json.dumps(cell)
    return parsed


def _bool(cell: str | None, column: str, extra: dict[str, str]) -> bool | None:
    if cell is None:
        return None
    lowered = cell.lower()
    if lowered in ("true", "1", "1.0", "yes"):
        return True
    if lowered in ("false", "0", "0.0", "no"):
        return False
    extra[f"release.{column}"] = json.dumps(cell)
    return None


def write_release_csv(images: pa.Table | Iterable[Mapping[str, Any]]) -> str:
    """``openneuro_metadata.csv`` of image rows: the released columns, one row per image by path;
    floats to float32 precision, empty cells for nulls. A row the toolkit built has no
    ``unique_id`` of the release's; it gets ``<dataset_id>__<image_id>``, which starts with the
    dataset id as the release's do (nnssl's converter reads the dataset id from it)."""
    rows = images.to_pylist() if isinstance(images, pa.Table) else [dict(r) for r in images]
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(RELEASED_COLUMNS)
    for row in sorted(rows, key=lambda r: str(r["image_path"])):
        unique = row.get("unique_id") or f"{row['dataset_id']}__{row['image_id']}"
        cells = {**row, "unique_id": unique}
        writer.writerow([_cell(cells.get(column)) for column in RELEASED_COLUMNS])
    return buffer.getvalue()


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.7g}"
    return str(value)

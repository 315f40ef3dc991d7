"""What a dataset folder holds, from its metadata tables alone: the figures the card quotes and
``openmind info`` prints. No voxel is read, so a summary of a Hub repo costs three small files."""

from __future__ import annotations

import json
import math
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

__all__ = [
    "IQS_BINS",
    "ModalityRow",
    "SourceRow",
    "Summary",
    "listing",
    "summarize",
    "summary_table",
]

#: Edges of the IQS histogram: half-point bins over the released 1 (best) .. 5 (worst) scale.
IQS_BINS = (1.0, 1.5, 2.0, 2.5, 3.0, 3.5, 4.0, 4.5, 5.0)


@dataclass(frozen=True)
class ModalityRow:
    modality: str
    images: int
    subjects: int
    datasets: int
    train: int
    validation: int
    iqs_median: float | None
    gigabytes: float  # of compressed NIfTI image bytes (masks not counted), from shape and dtype


@dataclass(frozen=True)
class SourceRow:
    dataset_id: str
    name: str
    version: str
    license: str
    authors: str
    doi: str
    images: int


@dataclass(frozen=True)
class Summary:
    images: int
    subjects: int
    datasets: int
    excluded: int
    modalities: list[ModalityRow]
    sources: list[SourceRow]
    splits: dict[str, int]
    iqs_histogram: dict[str, list[int]]  # modality -> counts per IQS_BINS interval
    iqs_models: list[str]
    licences: dict[str, int]  # licence (or "none given") -> images
    exclusions: dict[str, int]  # reason -> candidates
    ages: tuple[int, float, float, float] | None  # known, min, median, max
    sexes: dict[str, int]
    field_strengths: dict[str, int]  # "3 T" -> images; "unknown" for none
    # (step, method, software, images) over every image's provenance
    methods: list[tuple[str, str, str, int]] = field(default_factory=list)
    #: OpenMind releases the images were imported from (``openmind import-release``).
    releases: list[str] = field(default_factory=list)
    #: Images with a brain mask.
    brain_masks: int = 0


def summarize(images: pa.Table, sources: pa.Table, excluded: pa.Table) -> Summary:
    """The summary of an image table with its sources and exclusions."""
    frame = images.select(
        [
            "dataset_id",
            "subject",
            "modality",
            "split",
            "image_quality_score",
            "iqs_model",
            "license",
            "age",
            "sex",
            "magnetic_field_strength",
        ]
    ).to_pandas()
    for column in frame.columns:  # dictionary columns arrive as categoricals
        if isinstance(frame[column].dtype, pd.CategoricalDtype):
            frame[column] = frame[column].astype(object)
    frame["who"] = frame["dataset_id"].astype(str) + "/" + frame["subject"].astype(str)
    sizes = _image_gigabytes(images)
    groups = frame.groupby("modality", sort=True)
    rows = [_modality_row(str(name), group, sizes) for name, group in groups]
    counts = Counter(frame["dataset_id"].astype(str))
    return Summary(
        images=len(frame),
        subjects=frame["who"].nunique(),
        datasets=len(counts),
        excluded=excluded.num_rows,
        modalities=rows,
        sources=[_source_row(s, counts) for s in sources.sort_by("dataset_id").to_pylist()],
        splits=dict(sorted(Counter(frame["split"].astype(str)).items())),
        iqs_histogram={
            str(name): _histogram(group["image_quality_score"])
            for name, group in frame.groupby("modality", sort=True)
        },
        iqs_models=sorted({str(m) for m in frame["iqs_model"].dropna()}),
        licences=_counts(frame["license"].fillna("none given")),
        exclusions=_counts(pd.Series(excluded.column("reason").to_pylist(), dtype=object)),
        ages=_ages(frame["age"]),
        sexes=_counts(frame["sex"].fillna("unknown")),
        field_strengths=_counts(frame["magnetic_field_strength"].map(_tesla)),
        methods=_methods(images),
        releases=_releases(images),
        brain_masks=images.num_rows - images.column("brain_mask_backend").null_count,
    )


def listing(counted: Mapping[str, object]) -> str:
    """``{"a": 3, "b": 1}`` as "a 3, b 1": how the card and the command line list counts."""
    return ", ".join(f"{key} {n}" for key, n in counted.items())


def summary_table(summary: Summary) -> str:
    """The per-modality table as Markdown, with a total line."""
    lines = [
        "| modality | images | subjects | datasets | train | validation | median IQS | GB |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in summary.modalities:
        iqs = "" if row.iqs_median is None else f"{row.iqs_median:.2f}"
        lines.append(
            f"| {row.modality} | {row.images} | {row.subjects} | {row.datasets} | {row.train} "
            f"| {row.validation} | {iqs} | {row.gigabytes:.2f} |"
        )
    total = sum(row.gigabytes for row in summary.modalities)
    lines.append(
        f"| **all** | **{summary.images}** | **{summary.subjects}** | **{summary.datasets}** "
        f"| **{summary.splits.get('train', 0)}** | **{summary.splits.get('validation', 0)}** "
        f"| | **{total:.2f}** |"
    )
    return "\n".join(lines)


def _modality_row(modality: str, group: pd.DataFrame, sizes: pd.Series) -> ModalityRow:
    scores = group["image_quality_score"].dropna()
    splits = Counter(group["split"].astype(str))
    return ModalityRow(
        modality=modality,
        images=len(group),
        subjects=group["who"].nunique(),
        datasets=group["dataset_id"].nunique(),
        train=splits.get("train", 0),
        validation=splits.get("validation", 0),
        iqs_median=float(scores.median()) if len(scores) else None,
        gigabytes=float(sizes[group.index].sum()),
    )


def _image_gigabytes(images: pa.Table) -> pd.Series:
    """Uncompressed bytes of each image (shape x dtype size), in GB. The shards hold gzip'd
    NIfTI, so this is the in-memory size a loader decodes, which is what a user plans for."""
    shapes = images.column("shape").to_pylist()
    dtypes = images.column("dtype").to_pylist()
    sizes = [
        math.prod(shape or [0]) * _itemsize(dtype) / 1e9
        for shape, dtype in zip(shapes, dtypes, strict=True)
    ]
    return pd.Series(sizes, dtype=float)


def _itemsize(dtype: Any) -> int:
    try:
        return int(np.dtype(str(dtype)).itemsize)
    except TypeError:
        return 4


def _source_row(source: dict[str, Any], counts: Counter[str]) -> SourceRow:
    return SourceRow(
        dataset_id=source["dataset_id"],
        name=source.get("name") or "",
        version=source.get("dataset_version") or "",
        license=source.get("license") or "none given",
        authors=", ".join(source.get("authors") or []),
        doi=source.get("doi") or "",
        images=counts.get(source["dataset_id"], 0),
    )


def _histogram(scores: pd.Series) -> list[int]:
    """Counts per IQS_BINS interval; the last one closed (a 5 counts in 4.5-5)."""
    counts = [0] * (len(IQS_BINS) - 1)
    for score in scores.dropna():
        index = sum(score >= edge for edge in IQS_BINS[1:-1])
        counts[index] += 1
    return counts


def _counts(values: pd.Series) -> dict[str, int]:
    counted = Counter(str(v) for v in values)
    return dict(sorted(counted.items(), key=lambda item: (-item[1], item[0])))


def _ages(ages: pd.Series) -> tuple[int, float, float, float] | None:
    known = ages.dropna()
    if known.empty:
        return None
    return len(known), float(known.min()), float(known.median()), float(known.max())


def _tesla(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "unknown"
    return f"{float(value):g} T"


def _releases(images: pa.Table) -> list[str]:
    """The releases named by the images' import steps."""
    found = set()
    for steps in images.column("provenance").to_pylist():
        for step in steps or []:
            if step["step"] == "import":
                found.add(json.loads(step["parameters"])["release"])
    return sorted(found)


def _methods(images: pa.Table) -> list[tuple[str, str, str, int]]:
    """(step, method, software, images) over every image's provenance, in step order."""
    counted: Counter[tuple[str, str, str]] = Counter()
    for steps in images.column("provenance").to_pylist():
        for step in steps or []:
            counted[(step["step"], step["method"], step.get("software") or "")] += 1
    return [(*key, n) for key, n in sorted(counted.items())]

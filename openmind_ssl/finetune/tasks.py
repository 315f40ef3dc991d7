"""Downstream datasets as lists of cases: a segmentation dataset in the Medical Segmentation
Decathlon layout or nnU-Net's raw layout, or a classification table.

- nnU-Net raw (v2): ``dataset.json`` with ``channel_names``, ``labels`` (name -> value) and
  ``file_ending``; ``imagesTr/{case}_{channel:04d}{ending}`` and ``labelsTr/{case}{ending}``.
- Medical Segmentation Decathlon: ``dataset.json`` with ``modality`` (index -> name), ``labels``
  (value -> name) and ``training`` (``{"image": "./imagesTr/x.nii.gz", "label": ...}``); an image
  with several modalities is one 4D file, its channels on the last axis.
- Classification: a CSV table with an image column (paths relative to the table's folder; several
  columns for several channels) and a label column.

Every problem found (a missing file, a channel count that does not match, an unknown label) is
an error naming the file.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from openmind_data.errors import ConfigError

__all__ = [
    "Case",
    "ClassificationTask",
    "SegmentationTask",
    "read_classification_task",
    "read_segmentation_task",
    "split_cases",
]


@dataclass(frozen=True)
class Case:
    """One training or evaluation case. ``images`` holds one path per channel, or a single 4D
    file whose last axis holds ``channels`` volumes (``channel_axis`` True)."""

    name: str
    images: tuple[Path, ...]
    target: Path | int  # a label map (segmentation) or a class index (classification)
    channel_axis: bool = False


@dataclass(frozen=True)
class SegmentationTask:
    root: Path
    channels: tuple[str, ...]
    labels: dict[int, str]  # value -> name, background (0) included
    cases: tuple[Case, ...]

    @property
    def foreground(self) -> tuple[int, ...]:
        return tuple(sorted(value for value in self.labels if value != 0))


@dataclass(frozen=True)
class ClassificationTask:
    table: Path
    channels: tuple[str, ...]  # the image columns
    classes: tuple[str, ...]  # index -> label as written in the table
    cases: tuple[Case, ...]


def read_segmentation_task(root: str | Path) -> SegmentationTask:
    """The labelled training cases of the dataset at ``root`` (either layout)."""
    root = Path(root)
    path = root / "dataset.json"
    try:
        meta: dict[str, Any] = json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise ConfigError(f"{path}: cannot read the dataset description: {error}") from error
    if "channel_names" in meta:
        task = _nnunet(root, meta, path)
    elif "modality" in meta and "training" in meta:
        task = _decathlon(root, meta, path)
    else:
        raise ConfigError(
            f"{path}: neither nnU-Net raw (channel_names, labels, file_ending) nor Medical"
            " Segmentation Decathlon (modality, labels, training)"
        )
    if not task.cases:
        raise ConfigError(f"{root}: no labelled training cases")
    if not task.foreground:
        raise ConfigError(f"{path}: labels name no foreground class")
    for case in task.cases:
        for file in (*case.images, case.target):
            if isinstance(file, Path) and not file.is_file():
                raise ConfigError(f"{path}: case {case.name}: {file} does not exist")
    return task


def _nnunet(root: Path, meta: dict[str, Any], path: Path) -> SegmentationTask:
    channels = tuple(str(meta["channel_names"][k]) for k in sorted(meta["channel_names"], key=int))
    labels = _label_values(meta.get("labels", {}), path, names_first=True)
    ending = str(meta.get("file_ending", ".nii.gz"))
    cases = []
    for label in sorted((root / "labelsTr").glob(f"*{ending}")):
        name = label.name[: -len(ending)]
        images = tuple(root / "imagesTr" / f"{name}_{k:04d}{ending}" for k in range(len(channels)))
        cases.append(Case(name, images, label))
    return SegmentationTask(root, channels, labels, tuple(cases))


def _decathlon(root: Path, meta: dict[str, Any], path: Path) -> SegmentationTask:
    channels = tuple(str(meta["modality"][k]) for k in sorted(meta["modality"], key=int))
    labels = _label_values(meta.get("labels", {}), path, names_first=False)
    cases = []
    for entry in meta["training"]:
        image, label = root / entry["image"], root / entry["label"]
        name = image.name.split(".")[0]
        cases.append(Case(name, (image,), label, channel_axis=len(channels) > 1))
    return SegmentationTask(root, channels, labels, tuple(cases))


def _label_values(labels: dict[str, Any], path: Path, *, names_first: bool) -> dict[int, str]:
    """``{value: name}`` from nnU-Net's ``{name: value}`` or the Decathlon's ``{"1": name}``.
    nnU-Net's region-based labels (a list of values per name) are not supported."""
    out: dict[int, str] = {}
    for key, value in labels.items():
        number, name = (value, key) if names_first else (key, value)
        if isinstance(number, list):
            raise ConfigError(f"{path}: label {name!r} is a region ({number}); not supported")
        try:
            out[int(number)] = str(name)
        except (TypeError, ValueError):
            raise ConfigError(f"{path}: label {name!r} has no integer value") from None
    out.setdefault(0, "background")
    return out


def read_classification_task(
    table: str | Path, *, image_columns: tuple[str, ...] = ("image",), label_column: str = "label"
) -> ClassificationTask:
    """The cases of a CSV ``table``: image paths (relative to its folder) and a label each;
    the classes are the distinct labels in sorted order."""
    table = Path(table)
    try:
        frame = pd.read_csv(table, dtype=str, keep_default_na=False)
    except (OSError, ValueError) as error:
        raise ConfigError(f"{table}: cannot read the table: {error}") from error
    missing = [c for c in (*image_columns, label_column) if c not in frame.columns]
    if missing:
        raise ConfigError(f"{table}: no column {missing[0]!r} (columns: {list(frame.columns)})")
    if frame.empty:
        raise ConfigError(f"{table}: no rows")
    classes = tuple(sorted(set(frame[label_column])))
    if len(classes) < 2 or "" in classes:
        raise ConfigError(f"{table}: {label_column} needs two or more non-empty classes")
    index = {name: i for i, name in enumerate(classes)}
    cases = []
    for row, record in enumerate(frame.to_dict("records")):
        images = tuple(table.parent / str(record[c]) for c in image_columns)
        for image in images:
            if not image.is_file():
                raise ConfigError(f"{table}: row {row + 2}: {image} does not exist")
        name = images[0].name.split(".")[0]
        cases.append(Case(name, images, index[str(record[label_column])]))
    return ClassificationTask(table, image_columns, classes, tuple(cases))


def split_cases(
    cases: tuple[Case, ...], fraction: float, seed: int
) -> tuple[tuple[Case, ...], tuple[Case, ...]]:
    """(train, held out): ``fraction`` of the cases, at least one, drawn by ``seed``. For a
    classification task each class is split on its own, so both parts hold every class."""
    if not 0 < fraction < 1:
        raise ConfigError(f"task.val_fraction must lie in (0, 1), not {fraction}")
    rng = np.random.default_rng(seed)
    groups: dict[Any, list[int]] = {}
    for i, case in enumerate(cases):
        key = case.target if isinstance(case.target, int) else None
        groups.setdefault(key, []).append(i)
    held: set[int] = set()
    for members in groups.values():
        if len(members) < 2:
            raise ConfigError(f"a class has {len(members)} case; two or more are needed to split")
        count = min(len(members) - 1, max(1, round(fraction * len(members))))
        held.update(int(i) for i in rng.choice(members, size=count, replace=False))
    train = tuple(c for i, c in enumerate(cases) if i not in held)
    return train, tuple(c for i, c in enumerate(cases) if i in held)

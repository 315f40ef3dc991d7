"""``export_nnssl(folder, out)``: a dataset folder as nnssl's raw dataset (``pretrain_data.json``).

nnssl, the paper's own trainer, reads a collection described in one JSON file
(``nnssl/data/raw_dataset.py``)::

    {"collection_index", "collection_name",
     "datasets": {<dataset id>: {"dataset_index", "name", "dataset_info",
        "subjects": {"sub-X": {"subject_id", "subject_info",
            "sessions": {"ses-Y" | "ses-DEFAULT": {"session_id", "session_info",
                "images": [{"name", "image_path", "modality", "image_info",
                            "associated_masks": {"anatomy_mask", "anonymization_mask"}}]}}}}}}}

What this writer guarantees, where nnssl's own OpenMind converter did not:

- ``anatomy_mask`` is the anatomy (foreground) mask and ``anonymization_mask`` the deface mask,
  by name, never by position. (nnssl's preprocessor reads an image's masks as the list of
  ``associated_masks`` values and takes the first for the anatomy: with both present it reads
  the anonymization mask as the anatomy. That is nnssl's to fix; the file here is right.)
- A mask an image does not have is ``null``, never a ``.../nan`` path; the key stays, because
  nnssl's reader indexes both keys.
- Image keys are exactly nnssl's ``Image`` fields (it constructs them with ``Image(**entry)``).
- nnssl's IQS filter looks a score up by (dataset, modality, ``derived_from``) in each dataset's
  ``dataset_info["image_quality_score"]``; every such group of the export has an entry, whose
  score is the group's worst (so a threshold passes a group only if every image in it passes;
  an image without a score counts as 5). Each image's own score is in its ``image_info``.
- Paths are absolute, or ``$nnssl_raw/...`` when ``OUT`` lies under the ``nnssl_raw``
  environment variable's folder, which nnssl resolves itself.
"""

from __future__ import annotations

import json
import os
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

from openmind_data.curate.tree import write_tree_cells
from openmind_data.dataset_folder import DatasetFolder
from openmind_data.durable import write_atomic
from openmind_data.errors import ConfigError
from openmind_data.release.layout import METADATA_CSV, tree_file
from openmind_data.release.table import write_release_csv
from openmind_data.schema import VOXEL_COLUMNS

__all__ = ["NnsslExport", "export_nnssl", "pretrain_data"]

PRETRAIN_JSON = "pretrain_data.json"
#: ``image_info`` keys nnssl's own converter carries, and the toolkit's additions.
IMAGE_INFO = (
    "derived_from", "is_brain_extract", "manufacturer", "model_name",
    "phase_encoding_direction", "magnetic_field_strength", "repetition_time", "echo_time",
    "image_quality_score", "image_id", "license", "split",
)  # fmt: skip
SUBJECT_INFO = ("age", "sex", "handedness", "race", "weight", "bmi", "health_status")
#: The score a group gets from an image without one: the worst.
UNSCORED = 5.0


@dataclass(frozen=True)
class NnsslExport:
    json: Path
    tree: Path
    images: int
    datasets: int


def export_nnssl(
    folder: str | Path,
    out: str | Path,
    *,
    tree: str | Path | None = None,
    collection_name: str = "Dataset745_OpenMind",
    collection_index: int | str = 745,
) -> NnsslExport:
    """Write ``out/pretrain_data.json`` for every image of the dataset folder ``folder``,
    pointing at the released-layout tree ``tree`` (one ``--nifti-tree`` wrote for this folder:
    its CSV must be the folder's); without one, the tree is written into ``out`` from the
    folder's shards."""
    dataset, out = DatasetFolder.here(folder), Path(out)
    images = dataset.table("images")
    rows = images.to_pylist()
    csv = write_release_csv(images)
    if tree is None:
        tree = out
        _write_tree(dataset, out, csv)
    tree = Path(tree)
    if not (tree / METADATA_CSV).is_file():
        raise ConfigError(f"{tree}: no {METADATA_CSV}; is it a released-layout tree?")
    if (tree / METADATA_CSV).read_text() != csv:
        raise ConfigError(
            f"{tree}: not the tree of {folder} (its {METADATA_CSV} lists other images or "
            "masks); write one with --nifti-tree, or leave --tree out to write it here"
        )
    has = _mask_files(tree, rows)
    document = pretrain_data(
        rows, tree, has, collection_name, collection_index, _variable_root(out)
    )
    target = write_atomic(
        out / PRETRAIN_JSON, (json.dumps(document, indent=2, sort_keys=True) + "\n").encode()
    )
    return NnsslExport(json=target, tree=tree, images=len(rows), datasets=len(document["datasets"]))


def _write_tree(dataset: DatasetFolder, tree: Path, csv: str) -> None:
    """The shards' voxel cells as files, one row group at a time, and the metadata CSV."""
    for shard in dataset.shards():
        file = pq.ParquetFile(shard)
        for group in range(file.num_row_groups):
            for cells in file.read_row_group(group, columns=list(VOXEL_COLUMNS)).to_pylist():
                write_tree_cells(tree, cells)
    write_atomic(tree / METADATA_CSV, csv.encode())


def _mask_files(tree: Path, rows: list[dict[str, Any]]) -> dict[str, dict[str, bool]]:
    """Image id -> which of its files the tree holds; the image itself must be there."""
    found: dict[str, dict[str, bool]] = {}
    for row in rows:
        image = tree_file(tree, row["image_path"])
        if not image.is_file():
            raise ConfigError(f"{tree}: {image} is missing; write the tree again (--nifti-tree)")
        found[row["image_id"]] = {
            column: bool(row.get(f"{column}_path"))
            and tree_file(tree, row[f"{column}_path"]).is_file()
            for column in ("anat_mask", "anon_mask")
        }
    return found


def _variable_root(out: Path) -> tuple[str, Path] | None:
    """``("$nnssl_raw", its folder)`` when ``out`` lies under ``$nnssl_raw``."""
    raw = os.environ.get("nnssl_raw")  # noqa: SIM112 - nnssl's own name, lower case
    if not raw:
        return None
    root = Path(raw).resolve()
    return ("$nnssl_raw", root) if out.resolve().is_relative_to(root) else None


def pretrain_data(
    rows: list[dict[str, Any]],
    tree: Path,
    has: Mapping[str, Mapping[str, bool]],
    collection_name: str,
    collection_index: int | str,
    variable: tuple[str, Path] | None = None,
) -> dict[str, Any]:
    """nnssl's collection for image-table ``rows`` whose files lie in ``tree`` (``has``: which
    masks each image has there)."""

    def where(relative: str) -> str:
        path = tree_file(tree, relative).resolve()
        if variable is not None and path.is_relative_to(variable[1]):
            return f"{variable[0]}/{path.relative_to(variable[1]).as_posix()}"
        return str(path)

    datasets: dict[str, Any] = {}
    groups: dict[str, dict[tuple[str, str | None], float]] = defaultdict(dict)
    for row in sorted(rows, key=lambda r: str(r["image_path"])):
        dataset = datasets.setdefault(
            row["dataset_id"],
            {"dataset_index": row["dataset_id"], "name": None, "dataset_info": {}, "subjects": {}},
        )
        subject_id = f"sub-{row['subject']}" if row.get("subject") else "sub-DEFAULT"
        subject = dataset["subjects"].setdefault(
            subject_id,
            {"subject_id": subject_id, "subject_info": _present(row, SUBJECT_INFO), "sessions": {}},
        )
        session_id = f"ses-{row['session']}" if row.get("session") else "ses-DEFAULT"
        session = subject["sessions"].setdefault(
            session_id, {"session_id": session_id, "session_info": None, "images": []}
        )
        masks = has[row["image_id"]]
        session["images"].append(
            {
                "name": row["image_path"].rsplit("/", 1)[-1],
                "image_path": where(row["image_path"]),
                "modality": row["modality"],
                "image_info": _present(row, IMAGE_INFO),
                "associated_masks": {
                    "anatomy_mask": where(row["anat_mask_path"]) if masks["anat_mask"] else None,
                    "anonymization_mask": (
                        where(row["anon_mask_path"]) if masks["anon_mask"] else None
                    ),
                },
            }
        )
        key = (str(row["modality"]), row.get("derived_from"))
        score = row.get("image_quality_score")
        worst = UNSCORED if score is None else float(score)
        found = groups[row["dataset_id"]]
        found[key] = round(max(found.get(key, worst), worst), 6)
    for dataset_id, dataset in datasets.items():
        dataset["dataset_info"]["image_quality_score"] = [
            {"modality": modality, "derived_from": derived_from, "image_quality_score": score}
            for (modality, derived_from), score in sorted(
                groups[dataset_id].items(), key=lambda item: (item[0][0], item[0][1] or "")
            )
        ]
    return {
        "collection_index": collection_index,
        "collection_name": collection_name,
        "datasets": datasets,
    }


def _present(row: Mapping[str, Any], keys: tuple[str, ...]) -> dict[str, Any]:
    """The non-null values of ``keys``, as JSON takes them."""
    out = {}
    for key in keys:
        value = row.get(key)
        if value is not None:
            out[key] = round(value, 6) if isinstance(value, float) else value
    return out

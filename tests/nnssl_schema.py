"""nnssl's raw dataset description, restated from its source to read ``pretrain_data.json``.

nnssl is not on PyPI (it installs from its git repository, with torch and a dozen more), so the
export is read back here with a schema derived from nnssl's ``src/nnssl/data/raw_dataset.py``
(commit 70448644, read through its public repository) and its IQS filter
(``src/nnssl/data/nnsslFilter/iqs_filter.py``). What nnssl's reader requires, and this one
checks the same way:

- a collection has ``collection_index``, ``collection_name`` and ``datasets`` (id -> dataset);
- a dataset has ``dataset_index``, ``subjects`` and optional ``name``, ``dataset_info``;
- a subject is keyed by its id and has ``sessions`` and optional ``subject_info``;
- a session has ``images`` and optional ``session_info``;
- an image is built with keyword arguments from its entry, so its keys must be among ``name``,
  ``image_path``, ``modality``, ``image_info``, ``associated_masks`` (the first three required);
- ``associated_masks`` is indexed by both ``anatomy_mask`` and ``anonymization_mask`` (a missing
  key is an error there), each a path or null;
- a path whose first component is ``$NAME`` is resolved against the environment variable NAME;
- the IQS filter keys each image by (dataset index, modality, ``image_info.get("derived_from")``)
  into the scores each dataset lists in ``dataset_info["image_quality_score"]``, and keeps an
  image when that score is at most the threshold (an image without an entry raises KeyError).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

IMAGE_FIELDS = {"name", "image_path", "modality", "image_info", "associated_masks"}
REQUIRED_IMAGE_FIELDS = {"name", "image_path", "modality"}


@dataclass(frozen=True)
class Image:
    dataset: str
    subject: str
    session: str
    name: str
    path: str
    modality: str
    info: dict[str, Any]
    anatomy_mask: str | None
    anonymization_mask: str | None


def resolve(path: str | None) -> str | None:
    if path is None:
        return None
    first = path.split("/")[0]
    if first.startswith("$"):
        return path.replace(first, os.environ[first[1:]].rstrip("/"), 1)
    return path


def read_collection(document: dict[str, Any]) -> list[Image]:
    """Every image of a ``pretrain_data.json``, as nnssl's reader would build it."""
    images = []
    assert {"collection_index", "collection_name", "datasets"} <= set(document)
    for dataset_id, dataset in document["datasets"].items():
        assert "dataset_index" in dataset and "subjects" in dataset
        for subject_id, subject in dataset["subjects"].items():
            for session_id, session in subject["sessions"].items():
                for entry in session["images"]:
                    keys = set(entry)
                    assert keys <= IMAGE_FIELDS, f"Image(**entry) fails on {keys - IMAGE_FIELDS}"
                    assert keys >= REQUIRED_IMAGE_FIELDS
                    masks = entry["associated_masks"]
                    images.append(
                        Image(
                            dataset=dataset_id,
                            subject=subject_id,
                            session=session_id,
                            name=entry["name"],
                            path=str(resolve(entry["image_path"])),
                            modality=entry["modality"],
                            info=entry.get("image_info") or {},
                            anatomy_mask=resolve(masks["anatomy_mask"]),
                            anonymization_mask=resolve(masks["anonymization_mask"]),
                        )
                    )
    return images


def iqs_filter(document: dict[str, Any], threshold: float) -> list[Image]:
    """The images nnssl's OpenMind IQS filter keeps at ``threshold``."""
    scores = {}
    for dataset_id, dataset in document["datasets"].items():
        for entry in dataset["dataset_info"]["image_quality_score"]:
            key = (dataset["dataset_index"], entry["modality"], entry["derived_from"])
            scores[key] = entry["image_quality_score"]
        assert dataset["dataset_index"] == dataset_id
    return [
        image
        for image in read_collection(document)
        if scores[(image.dataset, image.modality, image.info.get("derived_from"))] <= threshold
    ]

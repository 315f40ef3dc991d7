"""The card's YAML header: what the Hub indexes (licence, task, tags, size) and what makes every
config loadable (``configs``, ``dataset_info`` with the ``Nifti`` voxel columns)."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
from huggingface_hub import DatasetCardData

from openmind_data.card.summary import Summary
from openmind_data.dataset_folder import DATA, PREVIEWS, DatasetFolder, table_path
from openmind_data.schema import SPLITS

__all__ = [
    "HUB_LICENCES",
    "card_data",
    "file_features",
    "hub_licence",
    "size_category",
]

#: SPDX ids the crawl gives (``crawl.normalize``) -> the Hub's licence ids.
HUB_LICENCES = {
    "CC0-1.0": "cc0-1.0",
    "PDDL-1.0": "pddl",
    "CC-BY-4.0": "cc-by-4.0",
    "CC-BY-SA-4.0": "cc-by-sa-4.0",
    "CC-BY-NC-4.0": "cc-by-nc-4.0",
    "CC-BY-NC-SA-4.0": "cc-by-nc-sa-4.0",
}
TASKS = ["image-feature-extraction", "image-segmentation"]
TAGS = ["medical", "mri", "3d", "neuroimaging", "nifti", "bids", "self-supervised-learning"]
#: The Hub's size buckets: (upper bound on rows, label).
SIZES = (
    (1_000, "n<1K"),
    (10_000, "1K<n<10K"),
    (100_000, "10K<n<100K"),
    (1_000_000, "100K<n<1M"),
    (10_000_000, "1M<n<10M"),
)


def hub_licence(licences: Sequence[str]) -> dict[str, Any]:
    """The ``license`` fields for images under ``licences`` (SPDX ids; "none" for an image
    without one): the Hub's ids when it knows them all, else ``other`` pointing at the table
    that gives each source dataset's licence."""
    ids = sorted({HUB_LICENCES.get(licence, "") for licence in licences})
    if ids and "" not in ids:
        return {"license": ids[0] if len(ids) == 1 else ids}
    return {
        "license": "other",
        "license_name": "per-source-dataset",
        "license_link": table_path("sources"),
    }


def size_category(images: int) -> str:
    return next((label for bound, label in SIZES if images < bound), "n>1T")


def card_data(folder: Path, summary: Summary, *, pretty_name: str) -> DatasetCardData:
    """The header for ``folder``: one config per modality, ``all`` (the default: every
    modality's shards), ``previews`` (what the Hub's viewer can show) and ``metadata`` (the
    image table), each
    with its ``dataset_info``."""
    dataset = DatasetFolder.here(folder)
    shards = dataset.shard_files()
    splits = [s for s in SPLITS if any(s in by_split for by_split in shards.values())]
    configs = [_config("all", dict.fromkeys(splits, f"{DATA}/*/"), default=True)]
    configs += [
        _config(modality, dict.fromkeys(by_split, f"{DATA}/{modality}/"))
        for modality, by_split in sorted(shards.items())
    ]
    previews = dataset.preview_files()
    if previews:
        configs.append(_config(PREVIEWS, dict.fromkeys(previews, f"{PREVIEWS}/")))
    images = table_path("images")
    configs.append({"config_name": "metadata", "data_files": [{"split": "train", "path": images}]})
    infos = [_info("all", _merged(shards))]
    infos += [_info(modality, by_split) for modality, by_split in sorted(shards.items())]
    if previews:
        infos.append(_info(PREVIEWS, previews))
    infos.append(_info("metadata", {"train": [str(folder / images)]}))
    return DatasetCardData(
        pretty_name=pretty_name,
        **hub_licence(list(summary.licences)),
        task_categories=TASKS,
        tags=TAGS,
        size_categories=[size_category(summary.images)],
        configs=configs,
        dataset_info=infos,
    )


def _config(name: str, prefixes: Mapping[str, str], *, default: bool = False) -> dict[str, Any]:
    config: dict[str, Any] = {"config_name": name}
    if default:
        config["default"] = True
    config["data_files"] = [
        {"split": split, "path": f"{prefix}{split}-*.parquet"} for split, prefix in prefixes.items()
    ]
    return config


def _merged(shards: Mapping[str, Mapping[str, list[str]]]) -> dict[str, list[str]]:
    merged: dict[str, list[str]] = {}
    for by_split in shards.values():
        for split, paths in by_split.items():
            merged.setdefault(split, []).extend(paths)
    return {split: merged[split] for split in SPLITS if split in merged}


def _info(name: str, by_split: Mapping[str, list[str]]) -> dict[str, Any]:
    """``dataset_info`` of a config: the features its shards' metadata declare (``Nifti`` for
    the voxel columns) and its stored size. No per-split row counts: ``datasets`` checks a
    finished load against them, and every filtered load would fail that check."""
    paths = [Path(path) for paths in by_split.values() for path in paths]
    size = sum(path.stat().st_size for path in paths)
    return {
        "config_name": name,
        "features": _features(paths[0]),
        "download_size": size,
        "dataset_size": size,
    }


def _features(path: Path) -> list[dict[str, Any]]:
    """The features of a Parquet file in the card's YAML list form."""
    yaml_list: list[dict[str, Any]] = file_features(path)._to_yaml_list()
    return yaml_list


def file_features(path: Path) -> Any:
    """The ``datasets.Features`` of a Parquet file: the ones its ``huggingface`` metadata
    declares (``Nifti`` for voxels), else inferred from its schema."""
    import datasets  # noqa: PLC0415 (datasets takes a second to import)

    schema = pq.read_schema(path)
    declared = (schema.metadata or {}).get(b"huggingface")
    if declared:
        return datasets.Features.from_dict(json.loads(declared)["info"]["features"])
    return datasets.Features.from_arrow_schema(schema)

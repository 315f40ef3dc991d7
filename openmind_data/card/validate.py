"""Offline checks of a dataset card: the Hub's metadata rules that can be checked without the
Hub (licence ids, size buckets, task ids, the ``configs`` and ``dataset_info`` that ``datasets``
parses), and that everything the card points at exists in the folder and agrees with it."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from huggingface_hub import DatasetCard

from openmind_data.card.header import SIZES
from openmind_data.dataset_folder import CARD

__all__ = ["HUB_LICENSE_IDS", "HUB_TASK_IDS", "CardProblem", "validate_card"]

#: Licence ids the Hub accepts in ``license:`` (its list, as of 2026).
HUB_LICENSE_IDS = frozenset(
    [
        "apache-2.0",
        "mit",
        "openrail",
        "bigscience-openrail-m",
        "creativeml-openrail-m",
        "bigscience-bloom-rail-1.0",
        "bigcode-openrail-m",
        "afl-3.0",
        "artistic-2.0",
        "bsl-1.0",
        "bsd",
        "bsd-2-clause",
        "bsd-3-clause",
        "bsd-3-clause-clear",
        "c-uda",
        "cc",
        "cc0-1.0",
        "cc-by-2.0",
        "cc-by-2.5",
        "cc-by-3.0",
        "cc-by-4.0",
        "cc-by-sa-3.0",
        "cc-by-sa-4.0",
        "cc-by-nc-2.0",
        "cc-by-nc-3.0",
        "cc-by-nc-4.0",
        "cc-by-nd-4.0",
        "cc-by-nc-nd-3.0",
        "cc-by-nc-nd-4.0",
        "cc-by-nc-sa-2.0",
        "cc-by-nc-sa-3.0",
        "cc-by-nc-sa-4.0",
        "cdla-sharing-1.0",
        "cdla-permissive-1.0",
        "cdla-permissive-2.0",
        "wtfpl",
        "ecl-2.0",
        "epl-1.0",
        "epl-2.0",
        "etalab-2.0",
        "eupl-1.1",
        "eupl-1.2",
        "agpl-3.0",
        "gfdl",
        "gpl",
        "gpl-2.0",
        "gpl-3.0",
        "lgpl",
        "lgpl-2.1",
        "lgpl-3.0",
        "isc",
        "h-research",
        "intel-research",
        "lppl-1.3c",
        "ms-pl",
        "apple-ascl",
        "apple-amlr",
        "mpl-2.0",
        "odc-by",
        "odbl",
        "openrail++",
        "osl-3.0",
        "postgresql",
        "ofl-1.1",
        "ncsa",
        "unlicense",
        "zlib",
        "pddl",
        "lgpl-lr",
        "deepfloyd-if-license",
        "fair-noncommercial-research-license",
        "llama2",
        "llama3",
        "llama3.1",
        "llama3.2",
        "llama3.3",
        "llama4",
        "gemma",
        "unknown",
        "other",
    ]
)
#: Task categories of the Hub that a 3D imaging dataset may name.
HUB_TASK_IDS = frozenset(
    [
        "image-classification",
        "image-segmentation",
        "image-feature-extraction",
        "object-detection",
        "image-to-image",
        "depth-estimation",
        "mask-generation",
        "zero-shot-image-classification",
        "image-to-3d",
        "text-to-3d",
        "unconditional-image-generation",
        "image-to-text",
        "visual-question-answering",
        "feature-extraction",
        "other",
    ]
)
_LICENSE_NAME = re.compile(r"^[a-z0-9.-]+$")
_IMAGE_LINK = re.compile(r"!\[[^\]]*\]\(([^)\s]+)\)")


@dataclass(frozen=True)
class CardProblem:
    field: str
    message: str

    def __str__(self) -> str:
        return f"{self.field}: {self.message}"


def validate_card(folder: str | Path) -> list[CardProblem]:
    """Every problem found in the card of ``folder``; an empty list when the card is valid."""
    folder = Path(folder)
    path = folder / CARD
    if not path.is_file():
        return [CardProblem(CARD, f"{path} does not exist")]
    try:
        card = DatasetCard.load(path)
    except Exception as error:  # noqa: BLE001 (any parse failure is the finding)
        return [CardProblem(CARD, f"{type(error).__name__}: {error}")]
    data = card.data.to_dict()
    problems = [
        *_licence(data),
        *_listed(data, "size_categories", {label for _, label in SIZES} | {"n>1T"}),
        *_listed(data, "task_categories", HUB_TASK_IDS),
        *_strings(data, "tags"),
        *_configs(card, folder),
        *_infos(card, folder),
        *_links(card.text, folder),
    ]
    if not isinstance(data.get("pretty_name", ""), str):
        problems.append(CardProblem("pretty_name", "must be a string"))
    return problems


def _licence(data: dict[str, Any]) -> list[CardProblem]:
    licence = data.get("license")
    if licence is None:
        return [CardProblem("license", "missing: the Hub shows no licence without it")]
    ids = licence if isinstance(licence, list) else [licence]
    problems = [
        CardProblem("license", f"{value!r} is not one of the Hub's licence ids")
        for value in ids
        if value not in HUB_LICENSE_IDS
    ]
    if "other" in ids:
        name = data.get("license_name")
        if not isinstance(name, str) or not _LICENSE_NAME.match(name):
            problems.append(
                CardProblem("license_name", "with license 'other', a lowercase id is required")
            )
        if not data.get("license_link"):
            problems.append(CardProblem("license_link", "with license 'other', say where it is"))
    return problems


def _listed(
    data: dict[str, Any], field: str, allowed: set[str] | frozenset[str]
) -> list[CardProblem]:
    values = data.get(field) or []
    values = values if isinstance(values, list) else [values]
    return [
        CardProblem(field, f"{value!r} is not one of {sorted(allowed)}")
        for value in values
        if value not in allowed
    ]


def _strings(data: dict[str, Any], field: str) -> list[CardProblem]:
    values = data.get(field) or []
    if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
        return [CardProblem(field, "must be a list of strings")]
    return []


def _configs(card: DatasetCard, folder: Path) -> list[CardProblem]:
    """``configs`` as ``datasets`` reads them; one default; each pattern matches a file."""
    from datasets.utils.metadata import MetadataConfigs  # noqa: PLC0415

    try:
        configs = MetadataConfigs.from_dataset_card_data(card.data)
        configs.get_default_config_name()
    except ValueError as error:
        return [CardProblem("configs", str(error))]
    if not configs:
        return [CardProblem("configs", "none: load_dataset would guess the layout")]
    return [
        CardProblem(f"configs.{name}", f"{pattern!r} matches no file in {folder}")
        for name, config in configs.items()
        for entry in config.get("data_files", [])
        for pattern in (entry["path"] if isinstance(entry["path"], list) else [entry["path"]])
        if not any(folder.glob(pattern))
    ]


def _infos(card: DatasetCard, folder: Path) -> list[CardProblem]:
    """``dataset_info`` parses, names only configs that exist, declares the features the files
    hold, and carries no split row counts (a filtered load would fail ``datasets``' check of
    them)."""
    from datasets.info import DatasetInfosDict  # noqa: PLC0415
    from datasets.utils.metadata import MetadataConfigs  # noqa: PLC0415

    from openmind_data.card.header import file_features  # noqa: PLC0415

    try:
        infos = DatasetInfosDict.from_dataset_card_data(card.data)
    except (ValueError, TypeError, KeyError) as error:
        return [CardProblem("dataset_info", f"{type(error).__name__}: {error}")]
    configs = MetadataConfigs.from_dataset_card_data(card.data)
    problems = []
    for name, info in infos.items():
        where = f"dataset_info.{name}"
        if name not in configs:
            problems.append(CardProblem(where, "no config of that name"))
            continue
        if info.splits:
            problems.append(CardProblem(where, "split sizes make every filtered load_dataset fail"))
        files = [
            path
            for entry in configs[name].get("data_files", [])
            for path in sorted(folder.glob(entry["path"]))
        ]
        if files and info.features is not None and info.features != file_features(files[0]):
            problems.append(CardProblem(where, f"its features are not those of {files[0].name}"))
    return problems


def _links(text: str, folder: Path) -> list[CardProblem]:
    return [
        CardProblem("figures", f"{target} does not exist in {folder}")
        for target in _IMAGE_LINK.findall(text)
        if "://" not in target and not (folder / target).is_file()
    ]

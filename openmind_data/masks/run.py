"""``run_masks``: every image of a table through the masks stage, masks written beside it.

Images come from the crawl's candidates (found under the roots the crawl was given) and, when
given, from the DWI stage's table (found under its folder). Each gets three uint8 0/1 masks in
its own grid, written once to ``out`` where the released layout keeps an image's masks
(``<image stem>__Data/fb_mask``, ``deface_mask``, ``brain_mask`` ``.nii.gz``, see
:mod:`openmind_data.release.layout`); an image the toolkit defaced is written there too, since
its published voxels are no longer the source's.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Unpack

import pyarrow as pa
import pyarrow.compute as pc

from openmind_data.crawl.api import find_datasets
from openmind_data.errors import ConfigError
from openmind_data.masks.stage import MaskOptions, Masks
from openmind_data.nifti import encode_mask, encode_nifti
from openmind_data.release.layout import mask_paths, published_path
from openmind_data.stages import (
    MASK_COLUMNS,
    Item,
    Load,
    Outcome,
    Running,
    StageResult,
    run_pipeline,
)

__all__ = ["MaskFiles", "run_masks", "voxel_paths"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class MaskFiles:
    """The files of the masks command: each mask made, beside the image's place in the
    released layout, and the image itself where the toolkit defaced it (in its stored type and
    scaling: untouched voxels keep their bits); the row gets the masks' ``*_mask_path``."""

    name: str = "masks"

    def process(self, item: Item) -> Outcome:
        assert item.masked is not None, "mask files follow the masks stage"
        paths = mask_paths(item.row["image_path"])
        files: dict[str, bytes] = {}
        for column, name in MASK_COLUMNS.items():
            mask = getattr(item.masked, name)
            if mask is not None:
                files[paths[f"{column}_path"]] = encode_mask(mask, item.like)
                item.row[f"{column}_path"] = paths[f"{column}_path"]
        if item.masked.defaced_here:
            files[item.row["image_path"]] = encode_nifti(
                item.stored(), item.like, scaling=item.scaling
            )
        return Outcome([item], files=files)


def run_masks(
    candidates: pa.Table,
    roots: str | Path | Sequence[str | Path],
    out: str | Path,
    options: MaskOptions | None = None,
    *,
    derived: pa.Table | None = None,
    derived_root: str | Path | None = None,
    **running: Unpack[Running],
) -> StageResult:
    """Mask every anatomical candidate (DWI series are the DWI stage's) and every row of
    ``derived`` (the DWI stage's table, its files under ``derived_root``), run as ``running``
    says (:class:`~openmind_data.stages.Running`: the executor, the journal)."""
    options = options or MaskOptions()
    if isinstance(roots, str | Path):
        roots = [roots]
    datasets = {path.name: path for path in find_datasets(roots)}
    anatomical = candidates.filter(
        pc.not_equal(pc.cast(candidates["modality"], pa.string()), "DWI")
    ).to_pylist()
    items: list[Item] = []
    for row in anatomical:
        if row["dataset_id"] not in datasets:
            raise ConfigError(f"dataset {row['dataset_id']} of the index is not under the roots")
        source = datasets[row["dataset_id"]] / row["source_path"]
        image_path = published_path(row["dataset_id"], row["source_path"])
        items.append(Item({**row, "image_path": image_path}, source))
    if derived is not None:
        if derived_root is None:
            raise ConfigError("derived images need derived_root, the folder they were written to")
        items.extend(
            Item(row, Path(derived_root) / row["image_path"]) for row in derived.to_pylist()
        )
    result = run_pipeline(
        (Load(), Masks(options), MaskFiles()),
        items,
        name="masks",
        out=out,
        summary=_defacing,
        **running,
    )
    voxels = voxel_paths(result.images, roots, out, derived_root=derived_root)
    return StageResult(result.stage, result.images, result.excluded, voxels, result.summary)


def _defacing(images: pa.Table) -> dict[str, object]:
    return {
        "masks defacing": dict(
            sorted(Counter(map(str, images.column("defacing").to_pylist())).items())
        )
    }


def voxel_paths(
    images: pa.Table,
    roots: str | Path | Sequence[str | Path],
    out: str | Path,
    *,
    derived_root: str | Path | None = None,
) -> dict[str, Path]:
    """Image id -> the file holding the voxels to publish, for the rows of the masks stage's
    table: the toolkit's defaced copy under ``out``; a DWI map under ``derived_root``; else the
    source under the crawl's roots."""
    if isinstance(roots, str | Path):
        roots = [roots]
    datasets = {path.name: path for path in find_datasets(roots)}
    paths: dict[str, Path] = {}
    for row in images.select(
        ["image_id", "dataset_id", "source_path", "image_path", "derivation", "defacing"]
    ).to_pylist():
        if row["defacing"] == "toolkit":
            paths[row["image_id"]] = Path(out) / row["image_path"]
        elif row["derivation"] is not None:
            if derived_root is None:
                raise ConfigError(
                    "derived images need derived_root, the folder they were written to"
                )
            paths[row["image_id"]] = Path(derived_root) / row["image_path"]
        elif row["dataset_id"] in datasets:
            paths[row["image_id"]] = datasets[row["dataset_id"]] / row["source_path"]
        else:
            raise ConfigError(f"dataset {row['dataset_id']} of the table is not under the roots")
    return paths

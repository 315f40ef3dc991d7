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
import posixpath
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from numpy.typing import NDArray

from openmind_data.crawl.api import find_datasets
from openmind_data.durable import write_atomic
from openmind_data.errors import ConfigError
from openmind_data.exclusions import LOAD_REASONS, failure_row
from openmind_data.masks.brain import BrainMasker, brain_masker
from openmind_data.masks.stage import MaskOptions, mask_image
from openmind_data.nifti import as_3d, edit_stored, encode_nifti, read_stored, scaled
from openmind_data.parallel import run_jobs
from openmind_data.release.layout import mask_paths
from openmind_data.schema import EXCLUDED_SCHEMA, IMAGE_SCHEMA, table_from_records, write_table

__all__ = [
    "LOAD_REASONS",
    "MasksResult",
    "encode_mask",
    "mask_paths",
    "masker_for",
    "published_path",
    "run_masks",
    "voxel_paths",
]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class MasksResult:
    images: pa.Table
    excluded: pa.Table
    #: image id -> the file holding the voxels to publish: the toolkit's defaced copy under
    #: ``out``, else the source (or the DWI map) itself.
    voxels: dict[str, Path] = field(default_factory=dict)

    def counts(self) -> dict[str, object]:
        return {
            "masked images": self.images.num_rows,
            "masked defacing": dict(
                sorted(Counter(map(str, self.images.column("defacing").to_pylist())).items())
            ),
            "masked excluded": self.excluded.num_rows,
        }

    def write(self, out: str | Path) -> dict[str, Path]:
        paths = {
            "images": Path(out) / "masks.parquet",
            "excluded": Path(out) / "masks.excluded.parquet",
        }
        write_table(self.images, paths["images"])
        write_table(self.excluded, paths["excluded"])
        return paths


def encode_mask(mask: NDArray[np.bool_], like: Any) -> bytes:
    """A mask as uint8 0/1 NIfTI in ``like``'s grid. Only a boolean array is accepted: a label
    image, a float or a -1 can never be written as a mask."""
    if mask.dtype != np.bool_:
        raise TypeError(f"a mask must be a bool array, got {mask.dtype}")
    if mask.shape != like.shape[:3]:
        raise ValueError(f"mask shape {mask.shape} is not the image's {like.shape[:3]}")
    return encode_nifti(mask.astype(np.uint8), like)


def run_masks(
    candidates: pa.Table,
    roots: str | Path | Sequence[str | Path],
    out: str | Path,
    options: MaskOptions | None = None,
    *,
    derived: pa.Table | None = None,
    derived_root: str | Path | None = None,
    workers: int = 1,
    progress: bool = False,
) -> MasksResult:
    """Mask every anatomical candidate (DWI series are the DWI stage's) and every row of
    ``derived`` (the DWI stage's table, its files under ``derived_root``)."""
    options = options or MaskOptions()
    if isinstance(roots, str | Path):
        roots = [roots]
    datasets = {path.name: path for path in find_datasets(roots)}
    anatomical = candidates.filter(
        pc.not_equal(pc.cast(candidates["modality"], pa.string()), "DWI")
    ).to_pylist()
    jobs: list[tuple[dict[str, Any], str, str, MaskOptions, bool]] = []
    for row in anatomical:
        if row["dataset_id"] not in datasets:
            raise ConfigError(f"dataset {row['dataset_id']} of the index is not under the roots")
        source = datasets[row["dataset_id"]] / row["source_path"]
        image_path = published_path(row["dataset_id"], row["source_path"])
        jobs.append(({**row, "image_path": image_path}, str(source), str(out), options, False))
    if derived is not None:
        if derived_root is None:
            raise ConfigError("derived images need derived_root, the folder they were written to")
        for row in derived.to_pylist():
            source = Path(derived_root) / row["image_path"]
            jobs.append((row, str(source), str(out), options, True))
    results = run_jobs(_one, jobs, workers=workers, desc="masks", unit="image", progress=progress)
    images = table_from_records([r for done in results for r in done[0]], IMAGE_SCHEMA)
    return MasksResult(
        images=images,
        excluded=table_from_records([r for done in results for r in done[1]], EXCLUDED_SCHEMA),
        voxels=voxel_paths(images, roots, out, derived_root=derived_root),
    )


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


def published_path(dataset_id: str, source_path: str) -> str:
    """Where an image acquired as ``source_path`` sits in the released layout, gzipped."""
    gz = source_path if source_path.endswith(".gz") else f"{source_path}.gz"
    return posixpath.join(dataset_id, gz)


@lru_cache(maxsize=4)
def masker_for(options: MaskOptions) -> BrainMasker | None:
    """The brain masker ``options`` ask for, made once per process; None for brain='none'."""
    if options.brain == "none":
        return None
    return brain_masker(options.brain, hdbet_params=options.hdbet_params, device=options.device)


def _one(
    job: tuple[Mapping[str, Any], str, str, MaskOptions, bool],
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    row, source, out, options, derived = job
    try:
        return [_mask_one(row, source, Path(out), options, derived)], []
    except Exception as error:  # noqa: BLE001 - one image must not stop the others; recorded
        return [], [failure_row(row, error, stage="masks")]


def _mask_one(
    row: Mapping[str, Any], source: str, out: Path, options: MaskOptions, derived: bool
) -> dict[str, Any]:
    image, stored_raw, scaling, _ = read_stored(source)
    raw, squeezed = as_3d(stored_raw, source)
    data = scaled(raw, scaling)
    spacing = tuple(float(z) for z in image.header.get_zooms()[:3])
    masked = mask_image(
        data,
        image.affine,
        spacing,
        options,
        masker_for(options),
        where=source,
        derived=derived,
        modality=str(row["modality"]),
    )
    paths = mask_paths(row["image_path"])
    volumes = {
        "anat_mask_path": masked.anatomy,
        "anon_mask_path": masked.anon,
        "brain_mask_path": masked.brain,
    }
    for column, mask in volumes.items():
        if mask is not None:
            write_atomic(out / paths[column], encode_mask(mask, image))
    if masked.defaced_here:  # in the stored type and scaling: untouched voxels keep their bits
        stored = edit_stored(raw, data, masked.data, scaling)
        write_atomic(out / row["image_path"], encode_nifti(stored, image, scaling=scaling))
    return {
        **row,
        **masked.fields,
        **{column: paths[column] for column, mask in volumes.items() if mask is not None},
        "provenance": [
            *(row.get("provenance") or []),
            *([squeezed] if squeezed else []),
            *masked.provenance,
        ],
    }

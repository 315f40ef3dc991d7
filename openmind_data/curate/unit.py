"""The build's unit of work: one candidate of the crawl in, its published images out.

Pure: the inputs are a candidate row, the folder of its dataset and the options; the outputs are
image-table rows with their voxel columns as NIfTI ``.nii.gz`` bytes, and exclusion rows.
Nothing is written, so any executor can run it and a retry is harmless. An anatomical image
is read once and goes through the masks (defaced where its defacing is not confirmed) and the
quality metrics and score; a DWI series goes through the diffusion stage, and each of its maps
through masks and quality. Voxels keep their stored type and scaling: an int16 image is
published as int16, with its slope, even when the toolkit defaced it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from openmind_data.curate.dedup import file_sha256
from openmind_data.dwi import DwiOptions
from openmind_data.dwi.stage import process_series
from openmind_data.errors import InvalidInputError
from openmind_data.exclusions import exclusion_row, failure_row
from openmind_data.masks import (
    MaskOptions,
    encode_mask,
    mask_image,
    mask_paths,
    masker_for,
    published_path,
)
from openmind_data.nifti import as_3d, edit_stored, encode_nifti, read_stored, scaled
from openmind_data.planes import Volume, preview_png
from openmind_data.quality import image_quality_metrics

__all__ = ["Published", "UnitOptions", "UnitResult", "process_candidate", "process_image"]


@dataclass(frozen=True)
class UnitOptions:
    """Options of every stage the unit runs."""

    masks: MaskOptions = field(default_factory=MaskOptions)
    dwi: DwiOptions = field(default_factory=DwiOptions)


@dataclass
class Published:
    """One image to publish: its image-table row, voxel columns (``image``, ``anat_mask``,
    ``anon_mask``, ``brain_mask`` where made) as NIfTI bytes, and its preview PNG."""

    row: dict[str, Any]
    voxels: dict[str, bytes]
    preview: bytes | None = None


@dataclass
class UnitResult:
    published: list[Published] = field(default_factory=list)
    excluded: list[dict[str, Any]] = field(default_factory=list)


def process_candidate(
    row: Mapping[str, Any], dataset_root: str | Path, options: UnitOptions | None = None
) -> UnitResult:
    """Everything the build does to one candidate row (see the module's docstring). Bad input
    and unexpected errors become exclusion rows; this never raises for one image's sake."""
    options = options or UnitOptions()
    root = Path(dataset_root)
    try:
        if row["modality"] == "DWI":
            return _diffusion(row, root, options)
        return UnitResult(published=[process_image(row, root / row["source_path"], options)])
    except Exception as error:  # noqa: BLE001 - one image must not stop a build; recorded
        return UnitResult(excluded=[failure_row(row, error, stage="masks", unexpected="build")])


def process_image(
    row: Mapping[str, Any], path: str | Path, options: UnitOptions, *, derived: bool = False
) -> Published:
    """One 3D image file through the masks (and defacing) and the quality metrics: its
    image-table row, from the candidate ``row``, and its voxel columns. ``derived`` for a map
    computed from a DWI series (its foreground is found as for one)."""
    path = Path(path)
    image, stored_raw, scaling, checksum = read_stored(path)
    raw, squeezed = as_3d(stored_raw, path)
    data = scaled(raw, scaling)
    spacing = tuple(float(z) for z in image.header.get_zooms()[:3])
    masked = mask_image(
        data,
        image.affine,
        spacing,
        options.masks,
        masker_for(options.masks),
        where=str(path),
        derived=derived,
        modality=str(row["modality"]),
    )
    # Where the toolkit defaced, the removed voxels go back in the stored type.
    stored = edit_stored(raw, data, masked.data, scaling) if masked.defaced_here else raw
    record = {
        **row,
        **masked.fields,
        "image_path": published_path(row["dataset_id"], row["source_path"]),
        "source_sha256": checksum,
        "provenance": [
            *(row.get("provenance") or []),
            *([squeezed] if squeezed else []),
            *masked.provenance,
        ],
    }
    return _finish(record, masked, image, stored, scaling, spacing, options)


def _diffusion(row: Mapping[str, Any], root: Path, options: UnitOptions) -> UnitResult:
    outcome = process_series(row, root, options.dwi)
    result = UnitResult(excluded=list(outcome.excluded))
    if not outcome.images:
        return result
    checksum = file_sha256(root / row["source_path"])
    like = outcome.like
    spacing = tuple(float(z) for z in like.header.get_zooms()[:3])
    for record in outcome.images:
        data = outcome.arrays[record["image_id"]]
        where = f"{root / row['source_path']} ({record['derivation']})"
        try:
            masked = mask_image(
                data,
                like.affine,
                spacing,
                options.masks,
                masker_for(options.masks),
                where=where,
                derived=True,
                modality=str(record["modality"]),
            )
        except InvalidInputError as error:
            result.excluded.append(exclusion_row(record, error.reason, error.detail, stage="masks"))
            continue
        merged = {
            **record,
            **masked.fields,
            "source_sha256": checksum,
            "provenance": [*(record.get("provenance") or []), *masked.provenance],
        }
        stored = masked.data.astype(np.float32)
        result.published.append(_finish(merged, masked, like, stored, (1.0, 0.0), spacing, options))
    return result


def _finish(
    record: dict[str, Any],
    masked: Any,
    like: Any,
    stored: NDArray[Any],
    scaling: tuple[float, float],
    spacing: tuple[float, ...],
    options: UnitOptions,
) -> Published:
    """Quality fields, mask paths, the voxel bytes and the preview of one masked image."""
    metrics = image_quality_metrics(
        masked.data,
        masked.anatomy,
        masked.anon,
        masked.brain,
        modality=str(record["modality"]),
        spacing=spacing,
    )
    record.update(metrics)
    paths = mask_paths(record["image_path"])
    voxels = {"image": encode_nifti(stored, like, scaling=scaling)}
    for column, mask in (
        ("anat_mask", masked.anatomy),
        ("anon_mask", masked.anon),
        ("brain_mask", masked.brain),
    ):
        if mask is not None:
            voxels[column] = encode_mask(mask, like)
            record[f"{column}_path"] = paths[f"{column}_path"]
    planes = Volume.from_arrays(
        masked.data,
        like.affine,
        {"anatomy": masked.anatomy, "anonymization": masked.anon, "brain": masked.brain},
    )
    return Published(row=record, voxels=voxels, preview=preview_png(planes))

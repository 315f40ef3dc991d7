"""One released image with its masks to a published row: the import's unit of work.

Pure, as the build's unit: a candidate row (from :mod:`~openmind_data.release.table`) and the
local files of its image and masks in; the image-table row with its voxel columns, or an
exclusion, out. The image is re-encoded with a fresh header (as every image the toolkit
publishes), gzipped; its voxels and their stored type are kept exactly.

The released masks are used as they are when the voxels agree with them, and the toolkit makes
its own (masks, defacing where a face shows, the brain check) when they do not, saying why in
the row's provenance. Privacy fails safe: an image whose anonymization mask is missing, empty
(unless the image is a brain extract) or covers voxels that still hold signal was not shown to
be defaced, and goes through the toolkit's masks stage, which defaces where a face is found.

- **Grids.** A mask on another grid than its image (other shape or affine) is resampled onto
  the image's grid, nearest neighbour, through both affines (recorded); a mask that is not 3D,
  cannot be read or does not overlap the image is replaced.
- **Swapped masks.** Where the ``anat_mask`` holds almost no signal and the ``anon_mask`` mostly
  signal, the two are swapped (recorded, and flagged ``release_masks_swapped``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
from nibabel.processing import resample_from_to
from numpy.typing import NDArray

from openmind_data.crawl.header import read_header
from openmind_data.curate.unit import Published, UnitOptions, UnitResult, process_image
from openmind_data.exclusions import failure_row
from openmind_data.masks import MaskOptions
from openmind_data.nifti import as_3d, check_voxels, encode_mask, encode_nifti, read_stored, scaled
from openmind_data.planes import Volume, preview_png
from openmind_data.quality import image_quality_metrics
from openmind_data.release.layout import mask_paths

__all__ = ["RECOMPUTABLE", "ImportJob", "ImportOptions", "import_image"]

#: What ``--recompute`` may name.
RECOMPUTABLE = ("masks", "quality")
#: A voxel holds signal above this share of the head's 99th percentile.
_SIGNAL = 0.1
#: An anonymization mask whose voxels hold more signal than this share was not applied.
_DEFACED_AT_MOST = 0.05
#: An anatomy mask whose voxels hold less signal than this share is not the anatomy.
_ANATOMY_AT_LEAST = 0.2


@dataclass(frozen=True)
class ImportOptions:
    """``recompute``: stages done again from the voxels (``masks``, ``quality``) rather than
    taken from the release; ``masks``: the masks stage's options where masks are made."""

    recompute: tuple[str, ...] = ()
    masks: MaskOptions = field(default_factory=MaskOptions)


@dataclass(frozen=True)
class ImportJob:
    """What the unit needs: the row, its local files (voxel column -> path), the image's
    SHA-256 where the release recorded it, the release's name (for provenance), the options,
    and the masks the release names but could not give."""

    row: dict[str, Any]
    files: dict[str, str]
    sha256: str | None
    release: str
    options: ImportOptions
    #: Mask column -> why the release's file could not be had (missing, corrupt).
    missing: dict[str, str] = field(default_factory=dict)


def import_image(job: ImportJob) -> UnitResult:
    """The unit (see the module's docstring); never raises for one image's sake."""
    row = job.row
    try:
        # The header read once: its geometry for the row, the crawl's exact reasons for a file
        # that cannot be read.
        job = replace(job, row={**row, **_geometry(job.files["image"])})
        if "masks" in job.options.recompute:
            return UnitResult([_recomputed(job, "--recompute masks")])
        return UnitResult([_released(job)])
    except Exception as error:  # noqa: BLE001 - one image must not stop an import; recorded
        return UnitResult(excluded=[failure_row(row, error, stage="masks", unexpected="import")])


class _DoubtError(Exception):
    """The released masks cannot be used as they are; the message says why."""


def _released(job: ImportJob) -> Published:
    row, path = job.row, Path(job.files["image"])
    image, stored_raw, scaling, checksum = read_stored(path)
    raw, squeezed = as_3d(stored_raw, path)
    data = np.asarray(scaled(raw, scaling), dtype=np.float32)
    check_voxels(data, str(path))
    steps: list[dict[str, Any]] = [*([squeezed] if squeezed else [])]
    try:
        anat, anon, mask_steps, flags = _masks(job, image, data)
    except _DoubtError as doubt:
        return _recomputed(job, str(doubt))
    steps.extend(mask_steps)
    spacing = tuple(float(z) for z in image.header.get_zooms()[:3])
    paths = mask_paths(row["image_path"])
    record = {
        **row,
        "anat_mask_path": row.get("anat_mask_path") or paths["anat_mask_path"],
        "anon_mask_path": row.get("anon_mask_path") or paths["anon_mask_path"],
        "defacing": "source" if anon.any() else "brain_extract",
        "qc_flags": flags,
        "source_sha256": job.sha256 or checksum,
        "provenance": [*steps, _step(job, {"masks": "released"})],
    }
    if "quality" in job.options.recompute:
        record.update(
            image_quality_metrics(
                data, anat, anon, None, modality=str(row["modality"]), spacing=spacing
            )
        )
    voxels = {
        "image": encode_nifti(raw, image, scaling=scaling),
        "anat_mask": encode_mask(anat, image),
        "anon_mask": encode_mask(anon, image),
    }
    planes = Volume.from_arrays(data, image.affine, {"anatomy": anat, "anonymization": anon})
    return Published(row=record, voxels=voxels, preview=preview_png(planes))


def _masks(
    job: ImportJob, image: Any, data: NDArray[np.float32]
) -> tuple[NDArray[np.bool_], NDArray[np.bool_], list[dict[str, Any]], list[str]]:
    """The released masks on the image's grid, checked against its voxels."""
    steps: list[dict[str, Any]] = []
    masks: dict[str, NDArray[np.bool_]] = {}
    for column in ("anat_mask", "anon_mask"):
        if column in job.missing:
            raise _DoubtError(f"the released {column}: {job.missing[column]}")
        file = job.files.get(column)
        if file is None:
            continue
        masks[column] = _on_grid(file, image, column, steps, job)
    if "anat_mask" not in masks:
        raise _DoubtError("the release gives no anatomy mask")
    brain_extract = job.row.get("is_brain_extract") is True
    if "anon_mask" not in masks and not brain_extract:
        raise _DoubtError("no anonymization mask is released and the image is no brain extract")
    anat = masks["anat_mask"]
    anon = masks.get("anon_mask", np.zeros(data.shape, dtype=bool))
    level = _SIGNAL * float(np.percentile(np.abs(data[anat | anon]), 99)) if anat.any() else 0.0
    flags = []
    if _signal(data, anat, level) < _ANATOMY_AT_LEAST and _signal(data, anon, level) > 0.5:
        anat, anon = anon, anat
        flags.append("release_masks_swapped")
        steps.append(_step(job, {"masks": "swapped: the anatomy mask held no signal"}))
    if _signal(data, anat, level) < _ANATOMY_AT_LEAST:
        raise _DoubtError("the released anatomy mask holds almost no signal")
    if not anon.any() and not brain_extract:
        raise _DoubtError("the released anonymization mask is empty; the image is no brain extract")
    if _signal(data, anon, level) > _DEFACED_AT_MOST:
        raise _DoubtError("voxels under the released anonymization mask still hold signal")
    return anat, anon, steps, flags


def _signal(data: NDArray[np.float32], mask: NDArray[np.bool_], level: float) -> float:
    return float(np.mean(np.abs(data[mask]) > level)) if mask.any() else 0.0


def _on_grid(
    file: str, image: Any, column: str, steps: list[dict[str, Any]], job: ImportJob
) -> NDArray[np.bool_]:
    """A released mask as a bool array on ``image``'s grid."""
    try:
        mask = nib.load(file)
        values = np.asanyarray(mask.dataobj)
    except Exception as error:  # any unreadable mask is replaced, saying why
        raise _DoubtError(f"the released {column} cannot be read ({error})") from error
    if values.ndim > 3 and all(n == 1 for n in values.shape[3:]):
        values = values.reshape(values.shape[:3])
    if values.ndim != 3:
        raise _DoubtError(f"the released {column} is not 3D ({values.shape})")
    shape = image.shape[:3]
    if values.shape == shape and np.allclose(mask.affine, image.affine, atol=1e-3):
        return np.asarray(values > 0)
    moved = resample_from_to(
        nib.Nifti1Image((values > 0).astype(np.uint8), mask.affine), (shape, image.affine), order=0
    )
    on_grid = np.asarray(moved.dataobj) > 0
    if not on_grid.any():
        raise _DoubtError(f"the released {column} does not overlap the image's grid")
    steps.append(
        _step(
            job,
            {"masks": f"{column} resampled onto the image's grid (nearest neighbour)"},
            {"mask_shape": [int(n) for n in values.shape]},
        )
    )
    return on_grid


def _recomputed(job: ImportJob, why: str) -> Published:
    """The toolkit's own masks (and defacing) for the image, as the build makes them."""
    row = job.row
    published = process_image(
        row,
        job.files["image"],
        UnitOptions(masks=job.options.masks),
    )
    record = published.row
    record["provenance"] = [*record["provenance"], _step(job, {"masks": f"recomputed: {why}"})]
    return published


def _geometry(path: str) -> dict[str, Any]:
    header = read_header(path)
    return {
        "shape": list(header.shape),
        "spacing": list(header.spacing),
        "affine": list(header.affine),
        "orientation": header.orientation,
        "dtype": header.dtype,
    }


def _step(
    job: ImportJob, what: dict[str, Any], more: dict[str, Any] | None = None
) -> dict[str, Any]:
    from openmind_data import __version__  # noqa: PLC0415 - a cycle at import time

    return {
        "step": "import",
        "method": "openmind release",
        "parameters": json.dumps({"release": job.release, **what, **(more or {})}, sort_keys=True),
        "software": f"openmind_data {__version__}",
    }

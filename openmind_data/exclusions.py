"""Why a file or an image is left out: the reason codes of ``metadata/excluded.parquet``.

A code is stable (tools filter on it); the description says what it means and what a curator can
do about it. Every row of the exclusion table carries one code plus a free-text detail.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from enum import StrEnum
from typing import Any

from openmind_data.errors import InvalidInputError

__all__ = ["LOAD_REASONS", "ExclusionReason", "exclusion_row", "failure_row"]

log = logging.getLogger(__name__)


class ExclusionReason(StrEnum):
    """Reason codes for the exclusion table. ``reason.description`` explains each."""

    description: str

    def __new__(cls, code: str, description: str) -> ExclusionReason:
        member = str.__new__(cls, code)
        member._value_ = code
        member.description = description
        return member

    # -- the file itself cannot be read --------------------------------------------------------
    ZERO_BYTE = (
        "zero_byte",
        "The file is empty: usually a git-annex object that was never fetched (datalad get).",
    )
    DANGLING_SYMLINK = (
        "dangling_symlink",
        "A symbolic link whose target does not exist: usually an unfetched git-annex object.",
    )
    APPLEDOUBLE = (
        "appledouble",
        "A macOS resource-fork file ('._name'), not an image, left by copying from a Mac.",
    )
    NOT_NIFTI = (
        "not_nifti",
        "The file has a NIfTI name but its content is not NIfTI (an HTML error page, text, ...).",
    )
    TRUNCATED = (
        "truncated",
        "The file ends early: a truncated gzip stream or fewer voxel bytes than the header says.",
    )
    UNREADABLE_HEADER = (
        "unreadable_header",
        "The NIfTI header cannot be parsed or holds impossible values (sizes, datatype).",
    )
    INVALID_AFFINE = (
        "invalid_affine",
        "The voxel-to-world transform is singular, non-finite, or has non-positive voxel sizes.",
    )
    # -- the image is not a 3D volume OpenMind can take -----------------------------------------
    TOO_FEW_DIMENSIONS = (
        "too_few_dimensions",
        "Fewer than three spatial dimensions of more than one voxel: a 2D image or a single slice.",
    )
    TOO_MANY_DIMENSIONS = (
        "too_many_dimensions",
        "More dimensions than the modality allows (5D, or 4D outside diffusion series).",
    )
    NON_FINITE = (
        "non_finite",
        "The voxel data contain NaN or infinite values.",
    )
    EMPTY_IMAGE = (
        "empty_image",
        "Every voxel holds the same value: there is no image to learn from.",
    )
    # -- metadata files -----------------------------------------------------------------------
    INVALID_JSON = (
        "invalid_json",
        "A JSON sidecar or description that is not valid JSON; its metadata is not used.",
    )
    INVALID_TSV = (
        "invalid_tsv",
        "A TSV table (participants, sessions) whose rows do not match its header; not used.",
    )
    NOT_UTF8 = (
        "not_utf8",
        "A text file (JSON, TSV, bval, bvec) that is not valid UTF-8; its content is not used.",
    )
    # -- a released dataset's table and files (openmind import-release) ------------------------
    INVALID_METADATA = (
        "invalid_metadata",
        (
            "A row of a release's metadata table without a usable image path (empty, absolute, "
            "outside the release, not NIfTI), or listed twice."
        ),
    )
    MISSING_FILE = (
        "missing_file",
        "A file the release's metadata table names is not in the release.",
    )
    CHECKSUM_MISMATCH = (
        "checksum_mismatch",
        "A downloaded file's SHA-256 is not the one the release's LFS pointer records, twice.",
    )
    # -- selection ----------------------------------------------------------------------------
    UNMAPPED_MODALITY = (
        "unmapped_modality",
        (
            "An image whose suffix and labels (or, in a release, whose modality) map to no "
            "modality of the vocabulary."
        ),
    )
    LICENSE_NOT_ALLOWED = (
        "license_not_allowed",
        "The source dataset's licence is missing or not one the build policy allows.",
    )
    DUPLICATE = (
        "duplicate",
        "The same source file (same SHA-256) is already published from another path.",
    )
    DEFACE_UNCONFIRMED = (
        "deface_unconfirmed",
        "Defacing could not be confirmed and the build policy excludes rather than defaces.",
    )
    DEFACE_HITS_BRAIN = (
        "deface_hits_brain",
        "A defacing (the uploader's or the toolkit's) would remove more brain than allowed.",
    )
    # -- diffusion ----------------------------------------------------------------------------
    MISSING_GRADIENTS = (
        "missing_gradients",
        "A diffusion series without its .bval or .bvec file.",
    )
    GRADIENT_MISMATCH = (
        "gradient_mismatch",
        "The number of b-values or b-vectors differs from the number of volumes in the series.",
    )
    INVALID_GRADIENTS = (
        "invalid_gradients",
        "B-values or b-vectors are unreadable, non-finite, implausible, or not unit length.",
    )
    NO_B0 = (
        "no_b0",
        "The diffusion series has no b=0 volume to normalise against.",
    )
    TOO_FEW_DIRECTIONS = (
        "too_few_directions",
        "Fewer than six non-collinear gradient directions: a tensor cannot be fitted.",
    )
    SUSPECT_ORIENTATION = (
        "suspect_orientation",
        "Fibres fitted across their bundles; another b-vector axis order/flip fits them along.",
    )
    # -- processing ---------------------------------------------------------------------------
    PROCESSING_ERROR = (
        "processing_error",
        "An unexpected error while processing the image; the detail holds the error message.",
    )


def exclusion_row(
    row: Mapping[str, Any], reason: str, detail: str, *, stage: str, image_id: str | None = None
) -> dict[str, Any]:
    """A row of the exclusion table for an image-table ``row`` (its id unless ``image_id``)."""
    return {
        "dataset_id": row["dataset_id"],
        "dataset_version": row.get("dataset_version"),
        "source_path": row["source_path"],
        "image_id": image_id or row.get("image_id"),
        "stage": stage,
        "reason": str(reason),
        "detail": detail,
    }


#: Reasons that mean the voxels could not be loaded: exclusions at stage 'load'.
LOAD_REASONS = frozenset(
    {
        str(ExclusionReason.NON_FINITE),
        str(ExclusionReason.EMPTY_IMAGE),
        str(ExclusionReason.TRUNCATED),
        str(ExclusionReason.NOT_NIFTI),
    }
)


def failure_row(
    row: Mapping[str, Any], error: Exception, *, stage: str, unexpected: str | None = None
) -> dict[str, Any]:
    """The exclusion row of a unit of work that raised ``error`` for ``row``: bad input under its
    own reason, at stage 'load' where the voxels could not be read and at ``stage`` otherwise;
    any other error a ``processing_error`` quoting it, at ``unexpected`` (default ``stage``),
    its traceback in the debug log. One image's failure never stops the others."""
    if isinstance(error, InvalidInputError):
        where = "load" if error.reason in LOAD_REASONS else stage
        return exclusion_row(row, error.reason, error.detail, stage=where)
    log.debug("%s failed:", row.get("source_path"), exc_info=error)
    detail = f"{type(error).__name__}: {error}"
    return exclusion_row(row, ExclusionReason.PROCESSING_ERROR, detail, stage=unexpected or stage)

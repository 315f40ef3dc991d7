"""NIfTI bytes the toolkit writes and reads: deterministic gzip, the source's spatial header."""

from __future__ import annotations

import hashlib
import json
import struct
from pathlib import Path
from typing import Any, NamedTuple

import nibabel as nib
import numpy as np
from nibabel.filebasedimages import ImageFileError
from numpy.typing import NDArray

from openmind_data.compression import gunzip, gzip_bytes
from openmind_data.errors import InvalidInputError
from openmind_data.exclusions import ExclusionReason as R

__all__ = [
    "Stored",
    "as_3d",
    "check_voxels",
    "decode_nifti",
    "edit_stored",
    "encode_mask",
    "encode_nifti",
    "read_stored",
    "scaled",
    "scaling_of",
]


#: Offsets of scl_slope and scl_inter (float32 each) in a NIfTI-1 header.
_SCALING_OFFSET = 112
_GZIP_MAGIC = b"\x1f\x8b"


class Stored(NamedTuple):
    """An image file read once: the nibabel image, its voxels as stored, (slope, intercept),
    and the SHA-256 of the file's bytes (taken from the bytes that were decoded)."""

    image: Any
    raw: NDArray[Any]
    scaling: tuple[float, float]
    sha256: str


def encode_nifti(
    data: NDArray[Any],
    like: Any,
    *,
    scaling: tuple[float, float] | None = None,
) -> bytes:
    """``data`` as a gzipped NIfTI-1 in the grid of the nibabel image ``like`` (its qform and
    sform with their codes, mm units), deflated as :mod:`openmind_data.compression` does. No
    timestamp in the gzip header: same voxels, same bytes.
    ``scaling`` (slope, intercept) is written as the header's scl_slope and scl_inter, so
    stored integers keep the meaning the source gave them (nibabel would recompute it)."""
    image = nib.Nifti1Image(np.asarray(data), like.affine)
    image.header.set_xyzt_units("mm", "sec")
    qform, qcode = like.header.get_qform(coded=True)
    sform, scode = like.header.get_sform(coded=True)
    image.set_qform(qform if qcode else like.affine, code=int(qcode) or 1)
    image.set_sform(sform if scode else like.affine, code=int(scode))
    payload = image.to_bytes()
    if scaling is not None and tuple(scaling) != (1.0, 0.0):
        header = bytearray(payload[: _SCALING_OFFSET + 8])
        struct.pack_into(f"{image.header.endianness}ff", header, _SCALING_OFFSET, *scaling)
        payload = bytes(header) + payload[len(header) :]
    return gzip_bytes(payload)


def decode_nifti(payload: bytes) -> Any:
    """A nibabel image from stored NIfTI bytes (``encode_nifti``'s, or a plain ``.nii``)."""
    return _from_bytes(payload)


def scaling_of(image: Any) -> tuple[float, float]:
    """(slope, intercept) of a nibabel image's stored voxels; (1, 0) where the header has none."""
    slope, inter = image.dataobj.slope, image.dataobj.inter
    slope = 1.0 if slope is None or not np.isfinite(slope) or slope == 0 else float(slope)
    inter = 0.0 if inter is None or not np.isfinite(inter) else float(inter)
    return slope, inter


def read_stored(path: str | Path) -> Stored:
    """A NIfTI-1 file (``.nii`` or gzipped) read once: its bytes are checksummed and
    inflated in memory, and nibabel parses what they hold. A file that cannot be read, cut
    inside its header or its voxels, is ``truncated``, naming the file."""
    try:
        payload = Path(path).read_bytes()
        image = _from_bytes(payload)
        raw = np.asanyarray(image.dataobj.get_unscaled())
    except (OSError, EOFError, ValueError, ImageFileError) as error:
        raise InvalidInputError(path, R.TRUNCATED, f"voxels cannot be read: {error}") from error
    return Stored(image, raw, scaling_of(image), hashlib.sha256(payload).hexdigest())


def _from_bytes(payload: bytes) -> Any:
    """A nibabel image from a file's bytes, gzipped or not: NIfTI-2 where the header's first
    field (its size, in either byte order) says 540, else NIfTI-1."""
    raw = gunzip(payload) if payload[:2] == _GZIP_MAGIC else payload
    sizes = struct.unpack("<i", raw[:4]) + struct.unpack(">i", raw[:4]) if len(raw) >= 4 else ()
    return (nib.Nifti2Image if 540 in sizes else nib.Nifti1Image).from_bytes(raw)


def as_3d(raw: NDArray[Any], where: str | Path) -> tuple[NDArray[Any], dict[str, Any] | None]:
    """A 3D image's voxels and, where the file stored it with trailing singleton axes (shape
    (X, Y, Z, 1), as some converters write a single volume), the provenance step that dropped
    them; an image with more than one volume is ``too_many_dimensions``, naming the file."""
    if raw.ndim == 3:
        return raw, None
    if raw.ndim > 3 and all(n == 1 for n in raw.shape[3:]):
        step = {
            "step": "load.squeeze",
            "method": "drop singleton axes",
            "parameters": json.dumps({"stored_shape": [int(n) for n in raw.shape]}),
            "software": f"nibabel {nib.__version__}",
        }
        return raw.reshape(raw.shape[:3]), step
    raise InvalidInputError(
        where, R.TOO_MANY_DIMENSIONS, f"a published image must be 3D, this is {raw.shape}"
    )


def scaled(raw: NDArray[Any], scaling: tuple[float, float]) -> NDArray[Any]:
    """Stored voxels in their scaled values: float32, or, as nibabel does, the stored array
    itself when there is no scaling (no copy of a volume that needs none)."""
    slope, inter = scaling
    if (slope, inter) == (1.0, 0.0):
        return raw
    out: NDArray[np.float32] = raw.astype(np.float32) * np.float32(slope) + np.float32(inter)
    return out


def edit_stored(
    raw: NDArray[Any],
    before: NDArray[Any],
    after: NDArray[Any],
    scaling: tuple[float, float],
) -> NDArray[Any]:
    """The stored voxels ``raw`` with the edit from ``before`` to ``after`` (scaled values,
    e.g. a defacing) written back in stored units; untouched voxels keep their exact bits."""
    changed = after != before
    if not changed.any():
        return raw
    slope, inter = scaling
    values = (after[changed] - inter) / slope
    if np.issubdtype(raw.dtype, np.integer):
        values = np.round(values)
    out = raw.copy()
    out[changed] = values.astype(raw.dtype)
    return out


def check_voxels(volume: NDArray[Any], where: str | Path) -> None:
    """An image to publish has finite voxels that are not all the same (``where`` names it)."""
    if not np.isfinite(volume).all():
        bad = int((~np.isfinite(volume)).sum())
        raise InvalidInputError(where, R.NON_FINITE, f"{bad} voxels are NaN or infinite")
    if volume.size == 0 or float(volume.min()) == float(volume.max()):
        raise InvalidInputError(where, R.EMPTY_IMAGE, "every voxel holds the same value")


def encode_mask(mask: NDArray[np.bool_], like: Any) -> bytes:
    """A mask as uint8 0/1 NIfTI in ``like``'s grid. Only a boolean array is accepted: a label
    image, a float or a -1 can never be written as a mask."""
    if mask.dtype != np.bool_:
        raise TypeError(f"a mask must be a bool array, got {mask.dtype}")
    if mask.shape != like.shape[:3]:
        raise ValueError(f"mask shape {mask.shape} is not the image's {like.shape[:3]}")
    return encode_nifti(mask.astype(np.uint8), like)

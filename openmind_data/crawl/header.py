"""Header-only NIfTI checks: what a file claims to hold, learned without reading its voxels.

:func:`read_header` reads the first few kilobytes of a ``.nii``/``.nii.gz`` file and its last
four bytes, and either returns a :class:`HeaderInfo` or raises
:class:`~openmind_data.errors.InvalidInputError` whose ``reason`` is the exclusion code. A gzip
file whose trailer disagrees with the size its header implies is the one case that reads further:
the stream is decompressed (and discarded) to tell a truncated file from a multi-member one.
"""

from __future__ import annotations

import os
import struct
import zlib
from dataclasses import dataclass

import nibabel as nib
import numpy as np
from nibabel.orientations import aff2axcodes
from nibabel.spatialimages import HeaderDataError

from openmind_data.errors import InvalidInputError
from openmind_data.exclusions import ExclusionReason as R

__all__ = ["HeaderInfo", "read_header"]

_GZIP_MAGIC = b"\x1f\x8b"
_CHUNK = 1 << 16


@dataclass(frozen=True, slots=True)
class HeaderInfo:
    shape: tuple[int, ...]  # trailing singleton dimensions beyond the third removed
    spacing: tuple[float, float, float]
    affine: tuple[float, ...]  # 16 values, row-major
    orientation: str
    dtype: str


def read_header(path: str) -> HeaderInfo:
    """The header of a NIfTI-1/2 file, checked; raises InvalidInputError with a reason code."""
    try:
        stat = os.stat(path)
    except FileNotFoundError:
        if os.path.islink(path):
            raise InvalidInputError(
                path, R.DANGLING_SYMLINK, f"symbolic link to missing {os.readlink(path)}"
            ) from None
        raise
    if stat.st_size == 0:
        raise InvalidInputError(path, R.ZERO_BYTE, "the file is empty (unfetched annex object?)")
    with open(path, "rb") as handle:
        head = handle.read(_CHUNK)
        compressed = head[:2] == _GZIP_MAGIC
        if compressed:
            raw = _gunzip_prefix(path, head, handle)
            handle.seek(-4, os.SEEK_END)
            trailer_size = struct.unpack("<I", handle.read(4))[0]
        else:
            raw, trailer_size = head, 0
    header = _parse(path, raw)
    info, expected = _describe(path, header)
    if compressed:
        if trailer_size != expected % (1 << 32):
            _check_stream(path, expected)
    elif stat.st_size < expected:
        raise InvalidInputError(
            path, R.TRUNCATED, f"{stat.st_size} bytes on disk, the header needs {expected}"
        )
    return info


def _gunzip_prefix(path: str, head: bytes, handle: object) -> bytes:
    decompressor = zlib.decompressobj(wbits=31)
    try:
        out = decompressor.decompress(head, 540)
    except zlib.error as error:
        raise InvalidInputError(path, R.NOT_NIFTI, f"gzip stream is corrupt: {error}") from None
    return out


def _parse(path: str, raw: bytes) -> nib.Nifti1Header:
    if len(raw) >= 4:
        for endian in ("<", ">"):
            size = struct.unpack(f"{endian}i", raw[:4])[0]
            if size == 348 and len(raw) >= 348:
                return _checked(path, nib.Nifti1Header, raw[:348], b"n+1\x00")
            if size == 540 and len(raw) >= 540:
                return _checked(path, nib.Nifti2Header, raw[:540], b"n+2\x00")
    raise InvalidInputError(
        path, R.NOT_NIFTI, "no NIfTI-1 or NIfTI-2 header at the start of the file"
    )


def _checked(
    path: str, kind: type[nib.Nifti1Header], block: bytes, magic: bytes
) -> nib.Nifti1Header:
    try:
        header = kind(block, check=False)
    except (HeaderDataError, ValueError, TypeError) as error:
        raise InvalidInputError(path, R.UNREADABLE_HEADER, f"header: {error}") from None
    found = bytes(header["magic"])[:4]
    if found[:3] != magic[:3]:
        raise InvalidInputError(
            path, R.UNREADABLE_HEADER, f"magic {found!r}: not a single-file NIfTI image"
        )
    return header


def _describe(path: str, header: nib.Nifti1Header) -> tuple[HeaderInfo, int]:
    dim = [int(d) for d in header["dim"]]
    if not 1 <= dim[0] <= 7 or any(d < 1 for d in dim[1 : dim[0] + 1]):
        raise InvalidInputError(path, R.UNREADABLE_HEADER, f"impossible dimensions {dim}")
    shape = dim[1 : dim[0] + 1]
    while len(shape) > 3 and shape[-1] == 1:
        shape.pop()
    try:
        dtype = header.get_data_dtype()
    except (HeaderDataError, KeyError, ValueError) as error:  # unknown datatype code
        raise InvalidInputError(path, R.UNREADABLE_HEADER, f"datatype: {error}") from None
    spatial = [n for n in shape[:3] if n > 1]
    if len(spatial) < 3:
        raise InvalidInputError(
            path, R.TOO_FEW_DIMENSIONS, f"shape {tuple(shape)}: fewer than three spatial dimensions"
        )
    affine = np.asarray(header.get_best_affine(), dtype=np.float64)
    linear = affine[:3, :3]
    zooms = np.sqrt((linear**2).sum(axis=0))
    if not np.isfinite(affine).all() or abs(np.linalg.det(linear)) < 1e-12 or (zooms <= 0).any():
        raise InvalidInputError(
            path, R.INVALID_AFFINE, "singular or non-finite voxel-to-world transform"
        )
    expected = int(header["vox_offset"]) + int(np.prod(shape)) * dtype.itemsize
    info = HeaderInfo(
        shape=tuple(shape),
        spacing=(float(zooms[0]), float(zooms[1]), float(zooms[2])),
        affine=tuple(float(v) for v in affine.ravel()),
        orientation="".join(str(c) for c in aff2axcodes(affine)),
        dtype=dtype.name,
    )
    return info, expected


def _check_stream(path: str, expected: int) -> None:
    """Decompress the whole stream: tells truncation from a trailer that only disagrees."""
    decompressor = zlib.decompressobj(wbits=31)
    total = 0
    try:
        with open(path, "rb") as handle:
            while chunk := handle.read(_CHUNK):
                total += len(decompressor.decompress(chunk))
                while decompressor.eof and decompressor.unused_data:  # another gzip member
                    rest = decompressor.unused_data
                    decompressor = zlib.decompressobj(wbits=31)
                    total += len(decompressor.decompress(rest))
    except zlib.error as error:
        raise InvalidInputError(path, R.TRUNCATED, f"gzip stream is corrupt: {error}") from None
    if not decompressor.eof:
        raise InvalidInputError(
            path, R.TRUNCATED, f"gzip stream ends early after {total} of {expected} bytes"
        )
    if total < expected:
        raise InvalidInputError(
            path, R.TRUNCATED, f"{total} bytes of image data, the header needs {expected}"
        )

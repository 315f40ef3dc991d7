"""Stable identifiers: the same input always gets the same id, on any machine; the same bytes
the same checksum."""

from __future__ import annotations

import hashlib
from pathlib import Path

__all__ = ["file_sha256", "image_id"]

CHUNK = 1 << 20


def image_id(dataset_id: str, source_path: str, derivation: str | None = None) -> str:
    """``om-`` and 16 hex digits of SHA-256 over dataset id, source path and derivation.

    >>> image_id("ds000001", "sub-01/anat/sub-01_T1w.nii.gz")
    'om-ac3d710cf454b5b0'
    """
    key = f"{dataset_id}/{source_path}" + (f"#{derivation}" if derivation else "")
    return "om-" + hashlib.sha256(key.encode()).hexdigest()[:16]


def file_sha256(path: str | Path) -> str:
    """SHA-256 of a file's bytes, hex, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with Path(path).open("rb") as handle:
        while chunk := handle.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()

"""``--nifti-tree``: the released OpenMind layout, for tools written against it.

::

    <tree>/openneuro_metadata.csv
    <tree>/<dataset>/sub-*/[ses-*/]<datatype>/<name>.nii.gz         the image
    <tree>/<dataset>/sub-*/[ses-*/]<datatype>/<name>_anat_mask.nii.gz  (and its other masks)

The files are the shards' bytes, each written under a hidden name and renamed. Files already
there with the same bytes are left alone, so writing the tree again after a resume is cheap.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from openmind_data.durable import write_atomic
from openmind_data.schema import VOXEL_COLUMNS

__all__ = ["write_nifti_tree"]


def write_nifti_tree(
    tree: str | Path,
    rows: Sequence[Mapping[str, Any]],
    voxels: Callable[[Mapping[str, Any]], Mapping[str, Any]],
    released_csv: str,
) -> list[Path]:
    """Write every row's image and masks under ``tree`` at their released paths (the
    ``image_path`` and ``*_mask_path`` columns) and the compat CSV; returns the files."""
    tree = Path(tree)
    written = []
    for row in rows:
        columns = voxels(row)
        for column in VOXEL_COLUMNS:
            cell = columns.get(column)
            if cell is None or cell.get("bytes") is None:
                continue
            written.append(_write(tree / cell["path"], cell["bytes"]))
    written.append(_write(tree / "openneuro_metadata.csv", released_csv.encode()))
    return written


def _write(path: Path, payload: bytes) -> Path:
    if path.is_file() and path.stat().st_size == len(payload) and path.read_bytes() == payload:
        return path
    return write_atomic(path, payload)

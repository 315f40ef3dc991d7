"""``--nifti-tree``: the released OpenMind layout, for tools written against the release.

::

    <tree>/openneuro_metadata.csv
    <tree>/OpenMind/<dataset>/sub-*/[ses-*/]<datatype>/<name>.nii.gz             the image
    <tree>/OpenMind/<dataset>/sub-*/[ses-*/]<datatype>/<name>__Data/fb_mask.nii.gz  its masks
    (deface_mask.nii.gz, brain_mask.nii.gz beside it)

The layout is the release's (:mod:`openmind_data.release.layout`), so ``openmind
import-release`` and nnssl's own converter read the tree as they read the release. The files
are the shards' bytes, each written under a hidden name and renamed. Files already there with
the same bytes are left alone, so writing the tree again after a resume is cheap.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from openmind_data.durable import write_atomic
from openmind_data.release.layout import METADATA_CSV, tree_file
from openmind_data.schema import VOXEL_COLUMNS

__all__ = ["write_nifti_tree", "write_tree_cells"]


def write_nifti_tree(
    tree: str | Path,
    rows: Sequence[Mapping[str, Any]],
    voxels: Callable[[Mapping[str, Any]], Mapping[str, Any]],
    released_csv: str,
) -> list[Path]:
    """Write every row's image and masks under ``tree`` at their released paths (the
    ``image_path`` and ``*_mask_path`` columns) and the metadata CSV; returns the files."""
    written = [path for row in rows for path in write_tree_cells(tree, voxels(row))]
    written.append(_write(Path(tree) / METADATA_CSV, released_csv.encode()))
    return written


def write_tree_cells(tree: str | Path, cells: Mapping[str, Any]) -> list[Path]:
    """One row's voxel cells (``{"bytes", "path"}`` or null, by column) written into ``tree``."""
    written = []
    for column in VOXEL_COLUMNS:
        cell = cells.get(column)
        if cell is not None and cell.get("bytes") is not None:
            written.append(_write(tree_file(tree, cell["path"]), cell["bytes"]))
    return written


def _write(path: Path, payload: bytes) -> Path:
    if path.is_file() and path.stat().st_size == len(payload) and path.read_bytes() == payload:
        return path
    return write_atomic(path, payload)

"""The released OpenMind layout: where the release keeps each file, and where our tree puts it.

::

    <root>/openneuro_metadata.csv                       one row per image
    <root>/OpenMind/<image_path>                        the image (<dataset>/.../<name>.nii.gz)
    <root>/OpenMind/<folder>/<stem>__Data/fb_mask.nii.gz      the anatomy (foreground) mask
    <root>/OpenMind/<folder>/<stem>__Data/deface_mask.nii.gz  the anonymization (deface) mask
    <root>/OpenMind/<folder>/<stem>__Data/brain_mask.nii.gz   the brain mask (ours; not released)

The CSV's path columns are relative to the ``OpenMind/`` folder. Where these facts come from:
nnssl's converter (``dataset_conversion/Dataset001_OpenMind.py``) reads the CSV beside an
``OpenMind/`` folder and joins each ``image_path`` onto it, takes the dataset id as the first
eight characters of ``unique_id``, and names the masks by the CSV's ``anat_mask_path`` and
``anon_mask_path``; nidl's loader (``datasets/openmind.py``) reads the same columns; the
``<stem>__Data/{fb_mask,deface_mask}.nii.gz`` names are those of the repository's listing. An
importer never guesses a mask's name: it follows the CSV (:mod:`openmind_data.release.table`).
"""

from __future__ import annotations

import posixpath
from pathlib import Path

__all__ = [
    "IMAGES_FOLDER",
    "MASK_FILES",
    "MASK_FOLDER_SUFFIX",
    "METADATA_CSV",
    "image_stem",
    "mask_paths",
    "published_path",
    "tree_file",
]

METADATA_CSV = "openneuro_metadata.csv"
#: The folder beside the CSV that the CSV's paths are relative to.
IMAGES_FOLDER = "OpenMind"
#: An image's masks live in a folder named after it: ``<stem>__Data/``.
MASK_FOLDER_SUFFIX = "__Data"
#: Voxel column -> the file's name in the image's ``__Data`` folder.
MASK_FILES: dict[str, str] = {
    "anat_mask": "fb_mask.nii.gz",
    "anon_mask": "deface_mask.nii.gz",
    "brain_mask": "brain_mask.nii.gz",
}


def image_stem(image_path: str) -> str:
    """The image's file name without ``.nii`` or ``.nii.gz``."""
    name = posixpath.basename(image_path)
    return name.removesuffix(".gz").removesuffix(".nii")


def published_path(dataset_id: str, source_path: str) -> str:
    """Where an image acquired as ``source_path`` sits in the released layout, gzipped.

    >>> published_path("ds000001", "sub-01/anat/sub-01_T1w.nii")
    'ds000001/sub-01/anat/sub-01_T1w.nii.gz'
    """
    gz = source_path if source_path.endswith(".gz") else f"{source_path}.gz"
    return posixpath.join(dataset_id, gz)


def mask_paths(image_path: str) -> dict[str, str]:
    """The ``*_mask_path`` columns of an image at ``image_path`` in the released layout.

    >>> mask_paths("ds000001/sub-01/anat/sub-01_T1w.nii.gz")["anon_mask_path"]
    'ds000001/sub-01/anat/sub-01_T1w__Data/deface_mask.nii.gz'
    """
    folder = posixpath.join(
        posixpath.dirname(image_path), image_stem(image_path) + MASK_FOLDER_SUFFIX
    )
    return {f"{column}_path": posixpath.join(folder, name) for column, name in MASK_FILES.items()}


def tree_file(tree: str | Path, relative: str) -> Path:
    """Where a file the CSV names by ``relative`` lies in a tree rooted at ``tree``."""
    return Path(tree) / IMAGES_FOLDER / relative

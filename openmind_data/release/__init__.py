"""The released OpenMind: its layout, importing it, and handing a dataset to nnssl.

- :mod:`~openmind_data.release.layout`: where the release keeps each file (and where the
  toolkit's own ``--nifti-tree`` puts it);
- :mod:`~openmind_data.release.table`: ``openneuro_metadata.csv`` rows as image-table rows,
  filtered before anything is downloaded;
- :mod:`~openmind_data.release.source`: a local copy or a Hub repo, files fetched on demand;
- :mod:`~openmind_data.release.unit`: one released image with its masks to a published row;
- :mod:`~openmind_data.release.importer`: :func:`import_release`, resumable through the build's
  journal;
- :mod:`~openmind_data.release.nnssl`: :func:`export_nnssl`, nnssl's ``pretrain_data.json``.

Only the layout is imported here: the masks stage names its files by it, and the importer
imports the masks stage.
"""

from openmind_data.release.layout import (
    IMAGES_FOLDER,
    MASK_FILES,
    METADATA_CSV,
    mask_paths,
    tree_file,
)

__all__ = ["IMAGES_FOLDER", "MASK_FILES", "METADATA_CSV", "mask_paths", "tree_file"]

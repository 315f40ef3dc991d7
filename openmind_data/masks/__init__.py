"""Masks: anatomy, anonymization (deface) and brain masks; defacing; the brain-overlap check.

:func:`run_masks` takes the crawl's candidates (and the DWI stage's maps); :func:`mask_image`
does one image; :func:`foreground` finds anatomy, defaced regions and padding in the voxels.
"""

from openmind_data.masks.anatomy import Foreground, foreground
from openmind_data.masks.brain import BrainMasker, brain_masker
from openmind_data.masks.deface import brain_overlap, quickshear
from openmind_data.masks.figure import write_mask_figure
from openmind_data.masks.run import (
    LOAD_REASONS,
    MasksResult,
    encode_mask,
    mask_paths,
    masker_for,
    published_path,
    run_masks,
    voxel_paths,
)
from openmind_data.masks.stage import MaskedImage, MaskOptions, mask_image

__all__ = [
    "LOAD_REASONS",
    "BrainMasker",
    "Foreground",
    "MaskOptions",
    "MaskedImage",
    "MasksResult",
    "brain_masker",
    "brain_overlap",
    "encode_mask",
    "foreground",
    "mask_image",
    "mask_paths",
    "masker_for",
    "published_path",
    "quickshear",
    "run_masks",
    "voxel_paths",
    "write_mask_figure",
]

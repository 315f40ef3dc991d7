"""Masks: anatomy, anonymization (deface) and brain masks; defacing; the brain-overlap check.

:func:`run_masks` takes the crawl's candidates (and the DWI stage's maps); :func:`mask_image`
does one image; :func:`foreground` finds anatomy, defaced regions and padding in the voxels.
"""

from openmind_data.masks.anatomy import Foreground, foreground
from openmind_data.masks.brain import BACKENDS, BrainMasker, TemplateBrainMasker, brain_masker
from openmind_data.masks.deepbet import DeepBetBrainMasker
from openmind_data.masks.deface import brain_overlap, deface_region, quickshear
from openmind_data.masks.face import FaceCheck, face_removed, face_shown, facial_region
from openmind_data.masks.figure import write_mask_figure
from openmind_data.masks.hdbet import HDBetBrainMasker
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
    "BACKENDS",
    "LOAD_REASONS",
    "BrainMasker",
    "DeepBetBrainMasker",
    "FaceCheck",
    "Foreground",
    "HDBetBrainMasker",
    "MaskOptions",
    "MaskedImage",
    "MasksResult",
    "TemplateBrainMasker",
    "brain_masker",
    "brain_overlap",
    "deface_region",
    "encode_mask",
    "face_removed",
    "face_shown",
    "facial_region",
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

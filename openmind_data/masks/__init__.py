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
from openmind_data.masks.run import MaskFiles, run_masks, voxel_paths
from openmind_data.masks.stage import MaskedImage, MaskOptions, Masks, mask_image, masker_for

__all__ = [
    "BACKENDS",
    "BrainMasker",
    "DeepBetBrainMasker",
    "FaceCheck",
    "Foreground",
    "HDBetBrainMasker",
    "MaskFiles",
    "MaskOptions",
    "MaskedImage",
    "Masks",
    "TemplateBrainMasker",
    "brain_masker",
    "brain_overlap",
    "deface_region",
    "face_removed",
    "face_shown",
    "facial_region",
    "foreground",
    "mask_image",
    "masker_for",
    "quickshear",
    "run_masks",
    "voxel_paths",
    "write_mask_figure",
]

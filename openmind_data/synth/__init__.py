"""A realistic synthetic OpenNeuro-like collection with ground truth, for tests and demos.

>>> from openmind_data.synth import SynthConfig, synthesize
>>> collection = synthesize("collection", SynthConfig(seed=0))  # doctest: +SKIP

Its building blocks are public too, for other synthetic data (the fine-tuning tasks of
:mod:`openmind_ssl.finetune.synthetic`): the head template (:mod:`openmind_data.templates`)
posed, sampled and rendered on a native grid, the scanner's bias field and Rician noise, and
seeded NIfTI writing.
"""

from openmind_data.synth.artifacts import bias_field, rician
from openmind_data.synth.builder import save_nifti, seed_for
from openmind_data.synth.collection import TRUTH_FILE, Collection, load_truth, synthesize
from openmind_data.synth.config import RESOLUTIONS, SynthConfig
from openmind_data.synth.geometry import NativeGrid, plan_grid
from openmind_data.synth.montage import write_montage
from openmind_data.synth.render import (
    BRAIN_FLAG,
    AnatomySpec,
    label_codes,
    phantom_resolution,
    render_anatomy,
    sample_phantom,
    subject_transform,
    tissue_image,
    world_coordinates,
)

__all__ = [
    "BRAIN_FLAG",
    "RESOLUTIONS",
    "TRUTH_FILE",
    "AnatomySpec",
    "Collection",
    "NativeGrid",
    "SynthConfig",
    "bias_field",
    "label_codes",
    "load_truth",
    "phantom_resolution",
    "plan_grid",
    "render_anatomy",
    "rician",
    "sample_phantom",
    "save_nifti",
    "seed_for",
    "subject_transform",
    "synthesize",
    "tissue_image",
    "world_coordinates",
    "write_montage",
]

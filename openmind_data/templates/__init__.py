"""Templates the toolkit registers to images: the head phantom around the MNI152 brain.

It is the template brain masker's model of a head (:mod:`openmind_data.masks.brain`) and the
anatomy of the synthetic collection (:mod:`openmind_data.synth`); both import it from here.
"""

from openmind_data.templates.head import (
    CONTRASTS,
    FACE_TISSUES,
    PHANTOM_VERSION,
    HeadPhantom,
    Tissue,
    cache_dir,
    head_phantom,
    mni_template_files,
)

__all__ = [
    "CONTRASTS",
    "FACE_TISSUES",
    "PHANTOM_VERSION",
    "HeadPhantom",
    "Tissue",
    "cache_dir",
    "head_phantom",
    "mni_template_files",
]

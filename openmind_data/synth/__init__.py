"""A realistic synthetic OpenNeuro-like collection with ground truth, for tests and demos.

>>> from openmind_data.synth import SynthConfig, synthesize
>>> collection = synthesize("collection", SynthConfig(seed=0))  # doctest: +SKIP
"""

from openmind_data.synth.collection import TRUTH_FILE, Collection, load_truth, synthesize
from openmind_data.synth.config import RESOLUTIONS, SynthConfig
from openmind_data.synth.montage import write_montage

__all__ = [
    "RESOLUTIONS",
    "TRUTH_FILE",
    "Collection",
    "SynthConfig",
    "load_truth",
    "synthesize",
    "write_montage",
]

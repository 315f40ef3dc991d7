"""Stages: the steps an image goes through, and the one runner that takes images through them.

- :mod:`~openmind_data.stages.base`: the interface: an :class:`Item` in flight, a stage's
  :class:`Outcome`, :func:`run_stages` (one item through a sequence of stages, errors to
  exclusion rows at the stage that met them) and its :class:`UnitResult`;
- :mod:`~openmind_data.stages.load` and :mod:`~openmind_data.stages.publish`: reading a file
  into voxels, and a masked image into the bytes the dataset publishes;
- the stages of their own packages: :class:`~openmind_data.dwi.stage.Diffusion`,
  :class:`~openmind_data.masks.stage.Masks`, :class:`~openmind_data.quality.stage.Quality`;
- :mod:`~openmind_data.stages.runner`: :func:`run_pipeline`, a pipeline over many items on an
  executor, for the stage commands (``openmind dwi|masks|quality``); the build journals its own
  units (:mod:`openmind_data.curate.run`), each a pass of :func:`run_stages`.
"""

from openmind_data.stages.base import (
    Item,
    Outcome,
    Published,
    Stage,
    UnitResult,
    exclusion_for,
    run_stages,
)
from openmind_data.stages.load import Load
from openmind_data.stages.publish import MASK_COLUMNS, Publish
from openmind_data.stages.runner import Running, StageResult, run_pipeline

__all__ = [
    "MASK_COLUMNS",
    "Item",
    "Load",
    "Outcome",
    "Publish",
    "Published",
    "Running",
    "Stage",
    "StageResult",
    "UnitResult",
    "exclusion_for",
    "run_pipeline",
    "run_stages",
]

"""Image quality: MRIQC-style metrics per image and the IQS, from 1 (best) to 5 (worst).

:func:`image_quality_metrics` measures one image over its masks; :class:`IqsModel` turns the
metrics into a score (the shipped parameters: :func:`load_model`); :func:`run_quality` does a
whole table; :func:`calibrate` fits a model to ratings; :func:`write_quality_sheet` draws the
best- and worst-scoring images of each modality for a person to check.
"""

from openmind_data.quality.calibrate import Calibration, calibrate
from openmind_data.quality.metrics import image_quality_metrics
from openmind_data.quality.model import IqsModel, fit_model, load_model
from openmind_data.quality.ratings import Ratings, read_ratings
from openmind_data.quality.run import (
    QualityResult,
    measure_quality,
    run_quality,
    score_image,
    score_table,
)
from openmind_data.quality.sheet import write_quality_sheet

__all__ = [
    "Calibration",
    "IqsModel",
    "QualityResult",
    "Ratings",
    "calibrate",
    "fit_model",
    "image_quality_metrics",
    "load_model",
    "measure_quality",
    "read_ratings",
    "run_quality",
    "score_image",
    "score_table",
    "write_quality_sheet",
]

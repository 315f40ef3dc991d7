"""Image quality: MRIQC's metrics per image and the IQS, from 1 (best) to 5 (worst).

:func:`image_quality_metrics` measures one image over its masks; :class:`IqsModel` turns the
metrics into a score against the image's peers (:func:`peer_references`; the shipped
parameters: :func:`load_model`); :func:`run_quality` does a whole table; :func:`calibrate` fits
a model to 1-5 ratings, :func:`calibrate_mriqc` to an MRIQC group table's raters
(:func:`read_mriqc_table`, scored by :func:`score_mriqc`); :func:`write_quality_sheet` draws the
best- and worst-scoring images of each modality for a person to check.
"""

from openmind_data.quality.calibrate import Calibration, auc, calibrate, calibrate_mriqc
from openmind_data.quality.fit import FitSettings, fit_model
from openmind_data.quality.metrics import image_quality_metrics
from openmind_data.quality.model import IqsModel, load_model
from openmind_data.quality.mriqc import MriqcTable, is_mriqc_table, read_mriqc_table, score_mriqc
from openmind_data.quality.peers import peer_references
from openmind_data.quality.ratings import Ratings, read_ratings
from openmind_data.quality.run import (
    measure_quality,
    run_quality,
    score_image,
    score_table,
)
from openmind_data.quality.sheet import write_quality_sheet
from openmind_data.quality.stage import Quality

__all__ = [
    "Calibration",
    "FitSettings",
    "IqsModel",
    "MriqcTable",
    "Quality",
    "Ratings",
    "auc",
    "calibrate",
    "calibrate_mriqc",
    "fit_model",
    "image_quality_metrics",
    "is_mriqc_table",
    "load_model",
    "measure_quality",
    "peer_references",
    "read_mriqc_table",
    "read_ratings",
    "run_quality",
    "score_image",
    "score_mriqc",
    "score_table",
    "write_quality_sheet",
]

"""Diffusion: each 4D DWI series becomes MD, FA and a T2-weighted mean-b0 image (dipy).

:func:`run_dwi` takes the crawl's candidate table; :func:`process_series` does one series.
"""

from openmind_data.dwi.gradients import (
    Gradients,
    read_gradients,
    select_volumes,
    validate_gradients,
)
from openmind_data.dwi.options import DwiOptions
from openmind_data.dwi.orientation import check_orientation
from openmind_data.dwi.run import MapFiles, run_dwi
from openmind_data.dwi.stage import (
    Diffusion,
    DwiOutcome,
    derived_path,
    process_series,
    write_outcome,
)

__all__ = [
    "Diffusion",
    "DwiOptions",
    "DwiOutcome",
    "Gradients",
    "MapFiles",
    "check_orientation",
    "derived_path",
    "process_series",
    "read_gradients",
    "run_dwi",
    "select_volumes",
    "validate_gradients",
    "write_outcome",
]

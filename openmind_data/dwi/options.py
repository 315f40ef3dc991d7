"""What the DWI stage can be asked to do, checked once when made."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from openmind_data.errors import ConfigError

__all__ = ["DwiOptions"]

FIT_METHODS = ("WLS", "OLS", "NLLS", "RT")
DENOISERS = ("mppca", "patch2self")
ORIENTATION_POLICIES = ("record", "exclude", "off")


def _median_otsu() -> dict[str, Any]:
    # dipy's defaults (radius 4, four passes) spend seconds on a 3D median filter for the same
    # head outline; radius 2 once, dilated by one voxel, keeps the scalp edge at a tenth of it.
    return {"median_radius": 2, "numpass": 1, "dilate": 1}


@dataclass(frozen=True)
class DwiOptions:
    """Options of the DWI stage; every one that changes voxels is recorded in provenance.

    ``max_bval`` (s/mm^2): shells up to it enter the tensor fit. 1500 by default: the tensor is a
    Gaussian model, and above ~1500 the non-Gaussian (kurtosis) signal biases MD down and FA
    with it; up to 1500 the usual b=1000 protocols and b=1200-1500 ones are fitted as acquired,
    and multi-shell protocols (1000/2000/3000, 1500/2500) give their lowest shell(s). A series
    whose every shell lies above it is fitted on its lowest shell, and says so.
    """

    max_bval: float = 1500.0
    b0_threshold: float = 50.0
    fit_method: str = "WLS"
    denoise: str | None = None
    gibbs: bool = False
    orientation: str = "record"
    #: Upper MD bound, mm^2/s: free water at body temperature (~3.0e-3) plus room for noise.
    md_max: float = 3.5e-3
    median_otsu: dict[str, Any] = field(default_factory=_median_otsu)
    #: Values (voxels x volumes) fitted per slab: bounds the stage's memory beyond the series.
    chunk_values: int = 1 << 22

    def __post_init__(self) -> None:
        if self.fit_method not in FIT_METHODS:
            raise ConfigError(f"fit_method {self.fit_method!r}: choose from {FIT_METHODS}")
        if self.denoise is not None and self.denoise not in DENOISERS:
            raise ConfigError(f"denoise {self.denoise!r}: choose from {DENOISERS} or None")
        if self.orientation not in ORIENTATION_POLICIES:
            raise ConfigError(
                f"orientation {self.orientation!r}: choose from {ORIENTATION_POLICIES}"
            )
        if not 0 <= self.b0_threshold < self.max_bval:
            raise ConfigError(
                f"need 0 <= b0_threshold ({self.b0_threshold}) < max_bval ({self.max_bval})"
            )
        if self.md_max <= 0 or self.chunk_values <= 0:
            raise ConfigError("md_max and chunk_values must be positive")

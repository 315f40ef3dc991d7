"""The synthetic collection's configuration: frozen, validated, printable, reloadable."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Literal

from openmind_data.errors import ConfigError

__all__ = ["RESOLUTIONS", "SynthConfig"]

Resolution = Literal["tiny", "small", "realistic"]

#: Multiplier applied to each acquisition's real voxel size. "realistic" writes ~1 mm anatomy
#: (minutes, gigabytes); "small" (default) keeps head shapes recognisable in a few seconds;
#: "tiny" is for crawl benchmarks of many thousands of files, where voxels do not matter.
RESOLUTIONS: dict[str, float] = {"tiny": 6.0, "small": 2.4, "realistic": 1.0}


@dataclass(frozen=True)
class SynthConfig:
    """What to generate. The same config and seed always give byte-identical files.

    ``copies`` repeats the five dataset recipes under new accession numbers (with new subjects,
    poses and noise); ``subjects`` scales every recipe's subject count (at least its minimum,
    which the recipe needs for its broken and special cases).
    """

    seed: int = 0
    copies: int = 1
    subjects: int = 3
    resolution: Resolution = "small"
    broken: bool = True
    diffusion: bool = True
    quality: bool = True
    quality_levels: int = 3

    def __post_init__(self) -> None:
        if self.resolution not in RESOLUTIONS:
            raise ConfigError(
                f"resolution must be one of {sorted(RESOLUTIONS)}, got {self.resolution!r}"
            )
        for name in ("copies", "subjects"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be at least 1, got {getattr(self, name)}")
        if not 1 <= self.quality_levels <= 3:
            raise ConfigError(f"quality_levels must be 1..3, got {self.quality_levels}")

    @property
    def spacing_scale(self) -> float:
        return RESOLUTIONS[self.resolution]

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> SynthConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(values) - known
        if unknown:
            raise ConfigError(
                f"unknown SynthConfig fields {sorted(unknown)}; known: {sorted(known)}"
            )
        return cls(**values)

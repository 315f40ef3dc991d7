"""The masks stage for one image: anatomy, anonymization and brain masks, defacing, the check.

Privacy rule: an image is published only when its face is known to be gone: defaced by its
uploader (a solid anonymization region), or brain-extracted. Otherwise the toolkit defaces it
(quickshear on the brain mask; the removed voxels become its anonymization mask), or, by
policy, leaves it out (``deface_unconfirmed``). A defacing that covers more than
``overlap_limit`` of the brain mask is flagged (``anon_overlaps_brain``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from importlib.metadata import version
from typing import Any

import numpy as np
from numpy.typing import NDArray

from openmind_data.errors import ConfigError, InvalidInputError
from openmind_data.exclusions import ExclusionReason as R
from openmind_data.masks.anatomy import foreground
from openmind_data.masks.brain import BrainMasker
from openmind_data.masks.deface import MARGIN_MM, SHEAR_DIRECTION, brain_overlap, quickshear

__all__ = ["DEFACE_POLICIES", "MaskOptions", "MaskedImage", "mask_image"]

DEFACE_POLICIES = ("deface", "exclude", "off")
BRAIN_BACKENDS = ("auto", "template", "hd-bet", "none")


@dataclass(frozen=True)
class MaskOptions:
    """``brain``: which brain-mask backend ('auto': HD-BET where its parameters are, else the
    template); ``deface``: what to do with an image whose defacing cannot be confirmed."""

    brain: str = "auto"
    hdbet_params: str | None = None
    device: str = "cpu"
    deface: str = "deface"
    overlap_limit: float = 0.02

    def __post_init__(self) -> None:
        if self.deface not in DEFACE_POLICIES:
            raise ConfigError(f"deface {self.deface!r}: choose from {DEFACE_POLICIES}")
        if self.brain not in BRAIN_BACKENDS:
            raise ConfigError(f"brain {self.brain!r}: choose from {BRAIN_BACKENDS}")
        if self.brain == "none" and self.deface == "deface":
            raise ConfigError("defacing needs a brain mask: choose a brain backend, or deface=off")


@dataclass
class MaskedImage:
    """An image's masks (bool, its grid), its voxels (defaced where the toolkit did it), and the
    image-table fields the stage sets."""

    data: NDArray[np.float32]
    anatomy: NDArray[np.bool_]
    anon: NDArray[np.bool_]
    brain: NDArray[np.bool_] | None
    defaced_here: bool
    fields: dict[str, Any] = field(default_factory=dict)
    provenance: list[dict[str, Any]] = field(default_factory=list)  # the stage's own steps


def mask_image(
    data: NDArray[Any],
    affine: NDArray[np.float64],
    spacing: tuple[float, ...],
    options: MaskOptions,
    masker: BrainMasker | None,
    *,
    where: str,
    derived: bool = False,
) -> MaskedImage:
    """Masks, defacing and the brain-overlap check of one 3D image (``where`` names it in
    errors). ``masker`` is None only when ``options.brain == 'none'``. ``derived`` maps (FA,
    MD, mean b0) follow the same privacy rule: a mean b0 shows a face as well as any T2w."""
    volume = np.asarray(data, dtype=np.float32)
    if not np.isfinite(volume).all():
        bad = int((~np.isfinite(volume)).sum())
        raise InvalidInputError(where, R.NON_FINITE, f"{bad} voxels are NaN or infinite")
    if volume.size == 0 or float(volume.min()) == float(volume.max()):
        raise InvalidInputError(where, R.EMPTY_IMAGE, "every voxel holds the same value")
    found = foreground(volume, spacing, derived=derived)
    steps = [
        _step(
            "anatomy",
            "air-statistics",
            {"background": found.background, "fill": found.fill, "derived": derived},
        )
    ]
    anatomy, anon = found.anatomy, found.anon
    brain: NDArray[np.bool_] | None = None
    backend = None
    if found.is_brain_extract:
        brain, backend = anatomy.copy(), "image"
    elif masker is not None:
        # The head including any defaced region: a defacing that cut the brain must show.
        brain = np.asarray(masker(volume, affine, anatomy | anon), dtype=bool)
        backend = masker.name
        steps.append(_step("brain", masker.name, masker.parameters()))

    defaced_here = False
    if found.is_brain_extract:
        defacing = "brain_extract"
    elif anon.any():
        defacing = "source"
    elif options.deface == "off":
        defacing = "none"
    elif options.deface == "exclude":
        raise InvalidInputError(
            where, R.DEFACE_UNCONFIRMED, "no defaced region and not brain-extracted"
        )
    else:
        assert brain is not None  # MaskOptions refuses deface without a brain backend
        cut = quickshear(brain, affine) & ~found.padding
        volume = volume.copy()
        volume[cut] = found.fill
        anon, anatomy = cut, anatomy & ~cut
        defacing, defaced_here = "toolkit", True
        steps.append(
            _step(
                "deface",
                "quickshear",
                {"margin_mm": MARGIN_MM, "direction_as": SHEAR_DIRECTION.round(4).tolist()},
            )
        )
    overlap = brain_overlap(anon, brain) if brain is not None else None
    flags = (
        ["anon_overlaps_brain"] if overlap is not None and overlap > options.overlap_limit else []
    )
    fields = {
        "is_brain_extract": found.is_brain_extract,
        "defacing": defacing,
        "brain_mask_backend": backend,
        "anon_brain_overlap": overlap,
        "qc_flags": flags,
    }
    return MaskedImage(volume, anatomy, anon, brain, defaced_here, fields, steps)


def _step(step: str, method: str, parameters: dict[str, Any]) -> dict[str, Any]:
    return {
        "step": f"masks.{step}",
        "method": method,
        "parameters": json.dumps(parameters, sort_keys=True),
        "software": f"scipy {version('scipy')}; numpy {version('numpy')}",
    }

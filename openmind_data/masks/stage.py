"""The masks stage for one image: anatomy, anonymization and brain masks, defacing, the checks.

Privacy rule: a face is present unless the voxels show it absent. The facial zone is located
from the brain mask (:mod:`openmind_data.masks.face`); an image counts as defaced by its uploader
only when that zone holds next to no tissue, as brain-extracted when the image is only a brain,
and as ``out_of_view`` when its field of view holds neither the zone nor facial tissue. Zeroed
air, a zero-filled wedge left by resampling or a field of view cut elsewhere are not defacings:
such an image is defaced by the toolkit (the shear plane and the facial region,
see :func:`~openmind_data.masks.deface.deface_region`; the removed voxels become its
anonymization mask), or, by policy, left out (``deface_unconfirmed``). Without a brain mask the
face cannot be located, so it counts as present.

The brain check measures the anonymization region's overlap with a brain estimate independent of
the one that placed the cut: for the uploader's defacing, the brain masker's own mask; for the
toolkit's, the learned masker's mask where the template placed it and a learned masker is
installed, else the brain mask dilated by :data:`CHECK_DILATION_MM`. A defacing that would
remove more than ``overlap_limit`` of it is never applied silently: by policy the image is
excluded (``deface_hits_brain``, the default) or published with that QC flag.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import lru_cache
from importlib.metadata import version
from typing import Any, Final

import numpy as np
from numpy.typing import NDArray

from openmind_data.errors import ConfigError, InvalidInputError
from openmind_data.exclusions import ExclusionReason as R
from openmind_data.masks.anatomy import foreground
from openmind_data.masks.brain import (
    BACKENDS,
    BrainMasker,
    brain_masker,
    check_masker,
    for_image,
)
from openmind_data.masks.deface import MARGIN_MM, SHEAR_DIRECTION, brain_overlap, deface_region
from openmind_data.masks.face import brain_distance, face_shown
from openmind_data.nifti import check_voxels
from openmind_data.stages.base import Item, Outcome

__all__ = [
    "BRAIN_CUT_POLICIES",
    "DEFACE_POLICIES",
    "MaskOptions",
    "MaskedImage",
    "Masks",
    "check_voxels",
    "mask_image",
    "masker_for",
]

DEFACE_POLICIES = ("deface", "exclude", "off")
#: What happens to an image whose defacing would cut the brain.
BRAIN_CUT_POLICIES = ("exclude", "flag")
#: The fallback brain check: the brain mask dilated by this much (mm).
CHECK_DILATION_MM: Final = 2.0
HITS_BRAIN: Final = "deface_hits_brain"


@dataclass(frozen=True)
class MaskOptions:
    """``brain``: which brain-mask backend ('auto': HD-BET on CUDA where its parameters are,
    else deepbet where installed, else the template; 'none' makes no brain mask); ``deface``: what
    to do with an image that shows a face; ``brain_cut``: what to do with one whose defacing
    would remove more than ``overlap_limit`` of the brain."""

    brain: str = "auto"
    hdbet_params: str | None = None
    device: str = "cpu"
    deface: str = "deface"
    overlap_limit: float = 0.005
    brain_cut: str = "exclude"

    def __post_init__(self) -> None:
        if self.deface not in DEFACE_POLICIES:
            raise ConfigError(f"deface {self.deface!r}: choose from {DEFACE_POLICIES}")
        if self.brain not in (*BACKENDS, "none"):
            raise ConfigError(f"brain {self.brain!r}: choose from {(*BACKENDS, 'none')}")
        if self.brain == "none" and self.deface == "deface":
            raise ConfigError("defacing needs a brain mask: choose a brain backend, or deface=off")
        if self.brain_cut not in BRAIN_CUT_POLICIES:
            raise ConfigError(f"brain_cut {self.brain_cut!r}: choose from {BRAIN_CUT_POLICIES}")
        if not 0.0 <= self.overlap_limit < 1.0:
            raise ConfigError(f"overlap_limit must lie in [0, 1), got {self.overlap_limit}")


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


@dataclass(frozen=True)
class Masks:
    """The masks stage (:mod:`openmind_data.stages`): an item's masks and, where its defacing
    is not confirmed, its defacing, with the fields and provenance steps they set."""

    options: MaskOptions = field(default_factory=MaskOptions)
    name: str = "masks"

    def process(self, item: Item) -> Outcome:
        assert item.data is not None, "masks follow a stage that gives voxels"
        row = item.row
        item.masked = mask_image(
            item.data,
            item.like.affine,
            item.spacing,
            self.options,
            masker_for(self.options),
            where=item.where,
            derived=row.get("derivation") is not None,
            modality=str(row["modality"]),
        )
        item.row = {
            **row,
            **item.masked.fields,
            "provenance": [*(row.get("provenance") or []), *item.masked.provenance],
        }
        return Outcome([item])


@lru_cache(maxsize=4)
def masker_for(options: MaskOptions) -> BrainMasker | None:
    """The brain masker ``options`` ask for, made once per process; None for brain='none'."""
    if options.brain == "none":
        return None
    return brain_masker(options.brain, hdbet_params=options.hdbet_params, device=options.device)


def mask_image(
    data: NDArray[Any],
    affine: NDArray[np.float64],
    spacing: tuple[float, ...],
    options: MaskOptions,
    masker: BrainMasker | None,
    *,
    where: str,
    derived: bool = False,
    modality: str | None = None,
) -> MaskedImage:
    """Masks, defacing and the brain check of one 3D image (``where`` names it in errors).
    ``masker`` is None only when ``options.brain == 'none'``; 'auto' chooses by the image's size
    and ``modality``. ``derived`` maps (FA, MD, mean b0) follow the same privacy rule: a mean b0
    shows a face as well as any T2w. The masks and voxels come back in ``data``'s memory order.

    A NIfTI file's voxels load in Fortran order. Such an image is masked as its transpose (the
    same memory, C-contiguous, the grid's axes reversed in the affine): scipy's labels and the
    arrays made for the masks are C-ordered, and mixing them with the image's order strides
    across memory; and NIfTI bytes are written in Fortran order, so each C-ordered mask cost a
    transposing copy (ten times its write) when published."""
    fortran = np.ndim(data) == 3 and np.isfortran(data)
    if fortran:
        data, affine = np.asarray(data).T, affine[:, [2, 1, 0, 3]]
        spacing = tuple(spacing[:3])[::-1]
    volume = np.asarray(data, dtype=np.float32)
    check_voxels(volume, where)
    spacing = tuple(float(z) for z in spacing[:3])
    found = foreground(volume, spacing, derived=derived)
    steps = [
        _step(
            "anatomy",
            "air-statistics",
            {"background": found.background, "fill": found.fill, "derived": derived},
        )
    ]
    anatomy = found.anatomy
    brain: NDArray[np.bool_] | None = None
    backend = None
    if found.is_brain_extract:
        brain, backend = anatomy.copy(), "image"
    elif masker is not None:
        masker = for_image(masker, volume.shape, modality)
        # The head including any solid region: a defacing that cut the brain must show.
        brain = np.asarray(masker(volume, affine, anatomy | found.anon), dtype=bool)
        backend = masker.name
        steps.append(_step("brain", masker.name, masker.parameters()))

    anon = np.zeros(volume.shape, dtype=bool)
    defaced_here = False
    check_brain = brain
    if found.is_brain_extract:
        defacing = "brain_extract"
    else:
        face = face_shown(anatomy, brain, affine, spacing) if brain is not None else None
        if face is not None:
            steps.append(
                _step(
                    "face",
                    "facial-zone",
                    {"zone_ml": round(face.zone_ml, 1), "tissue_ml": round(face.tissue_ml, 1)},
                )
            )
        if face is not None and not face.shown:
            if face.in_view:  # an empty facial zone: the uploader's solid regions removed it
                anon, defacing = found.anon, "source"
            else:  # the field of view holds no face at all
                defacing = "out_of_view"
        elif options.deface == "off":
            defacing = "none"
        elif options.deface == "exclude":
            raise InvalidInputError(
                where, R.DEFACE_UNCONFIRMED, "the face is present and the policy excludes"
            )
        else:
            assert brain is not None  # MaskOptions refuses deface without a brain backend
            cut = deface_region(brain, affine, spacing) & ~found.padding
            check_brain, method = _independent(
                brain, spacing, volume, affine, anatomy, masker, modality
            )
            volume = volume.copy()
            volume[cut] = found.fill
            anon, anatomy = cut, anatomy & ~cut
            defacing, defaced_here = "toolkit", True
            steps.append(
                _step(
                    "deface",
                    "quickshear+facial-region",
                    {
                        "margin_mm": MARGIN_MM,
                        "direction_as": SHEAR_DIRECTION.round(4).tolist(),
                        "brain_check": method,
                    },
                )
            )
    overlap = brain_overlap(anon, check_brain) if check_brain is not None else None
    flags: list[str] = []
    if overlap is not None and overlap > options.overlap_limit:
        if options.brain_cut == "exclude":
            raise InvalidInputError(
                where,
                R.DEFACE_HITS_BRAIN,
                f"the {defacing} defacing would remove {overlap:.2%} of the brain "
                f"(limit {options.overlap_limit:.2%})",
            )
        flags.append(HITS_BRAIN)
    fields = {
        "is_brain_extract": found.is_brain_extract,
        "defacing": defacing,
        "brain_mask_backend": backend,
        "anon_brain_overlap": overlap,
        "qc_flags": flags,
    }
    if fortran:  # back in the caller's axes: each transpose is a view, in Fortran order
        volume, anatomy, anon = volume.T, anatomy.T, anon.T
        brain = None if brain is None else brain.T
    return MaskedImage(volume, anatomy, anon, brain, defaced_here, fields, steps)


def _independent(
    brain: NDArray[np.bool_],
    spacing: tuple[float, ...],
    volume: NDArray[np.float32],
    affine: NDArray[np.float64],
    head: NDArray[np.bool_],
    masker: BrainMasker | None,
    modality: str | None,
) -> tuple[NDArray[np.bool_], str]:
    """A brain estimate independent of ``brain``, which placed the toolkit's cut: the learned
    masker's where ``masker`` is not learned and one is installed, else ``brain`` dilated."""
    second = check_masker(masker, volume.shape, modality)
    if second is not None:
        return np.asarray(second(volume, affine, head), dtype=bool), second.name
    distance = brain_distance(brain, spacing, reach=CHECK_DILATION_MM)
    dilated: NDArray[np.bool_] = distance <= CHECK_DILATION_MM
    return dilated, f"{masker.name if masker else 'brain'} mask dilated {CHECK_DILATION_MM:g} mm"


def _step(step: str, method: str, parameters: dict[str, Any]) -> dict[str, Any]:
    return {
        "step": f"masks.{step}",
        "method": method,
        "parameters": json.dumps(parameters, sort_keys=True),
        "software": f"scipy {version('scipy')}; numpy {version('numpy')}",
    }

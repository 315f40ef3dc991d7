"""The modality vocabulary: what OpenMind calls each kind of image, and which BIDS files map to it.

A modality is named as OpenMind's released metadata names it. :func:`modality_for` maps a BIDS
file (datatype, suffix and entity labels) to its modality or to ``None`` (not an image OpenMind
takes); the rules are data (:data:`RULES`), evaluated in order, first match wins, so a curator can
read and test them.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

__all__ = [
    "DWI_DERIVED",
    "MODALITIES",
    "RULES",
    "Modality",
    "ModalityRule",
    "modality_for",
    "modality_names",
]

Kind = Literal["structural", "quantitative", "vascular", "diffusion", "diffusion_map"]


@dataclass(frozen=True)
class Modality:
    """One entry of the vocabulary.

    ``published`` is false for a modality that only exists as a candidate (a 4D DWI series is
    turned into MD, FA and a mean-b0 image; it is never published itself).
    """

    name: str
    description: str
    kind: Kind
    published: bool = True


MODALITIES: tuple[Modality, ...] = (
    Modality(
        "T1w", "T1-weighted structural image (MPRAGE, SPGR, MP2RAGE-derived T1w, ...)", "structural"
    ),
    Modality(
        "T2w",
        "T2-weighted structural image; also the mean b=0 image of a diffusion series",
        "structural",
    ),
    Modality("FLAIR", "Fluid-attenuated inversion recovery", "structural"),
    Modality("PDw", "Proton-density weighted image", "structural"),
    Modality("T2starw", "T2*-weighted gradient-echo image", "structural"),
    Modality(
        "inplaneT1",
        "T1-weighted image matched to a functional run's slice prescription",
        "structural",
    ),
    Modality(
        "inplaneT2",
        "T2-weighted image matched to a functional run's slice prescription",
        "structural",
    ),
    Modality(
        "FLASH", "Fast low-angle shot gradient-echo image (deprecated BIDS suffix)", "structural"
    ),
    Modality("MP2RAGE", "One inversion image of an MP2RAGE acquisition", "structural"),
    Modality("UNIT1", "MP2RAGE uniform (bias-free) T1-weighted image", "structural"),
    Modality("MEGRE", "One echo of a multi-echo gradient-recalled echo acquisition", "structural"),
    Modality("MESE", "One echo of a multi-echo spin-echo acquisition", "structural"),
    Modality("MTw", "Magnetization-transfer weighted image", "structural"),
    Modality("T1map", "Quantitative T1 map", "quantitative"),
    Modality("T2map", "Quantitative T2 map", "quantitative"),
    Modality("T2starmap", "Quantitative T2* map", "quantitative"),
    Modality("R1map", "Quantitative R1 (1/T1) map", "quantitative"),
    Modality("R2starmap", "Quantitative R2* (1/T2*) map", "quantitative"),
    Modality("PDmap", "Quantitative proton-density map", "quantitative"),
    Modality("angio", "Angiography (time of flight, phase contrast)", "vascular"),
    Modality("SWI", "Susceptibility-weighted image", "vascular"),
    Modality(
        "minIP", "Minimum intensity projection of a susceptibility-weighted image", "vascular"
    ),
    Modality(
        "DWI",
        "A 4D diffusion-weighted series; a candidate, published as MD, FA and T2w",
        "diffusion",
        published=False,
    ),
    Modality(
        "ADC", "Apparent diffusion coefficient map shipped by the source dataset", "diffusion_map"
    ),
    Modality(
        "TRACE", "Trace-weighted diffusion image shipped by the source dataset", "diffusion_map"
    ),
    Modality(
        "MD", "Mean diffusivity computed from a DWI series (diffusion tensor fit)", "diffusion_map"
    ),
    Modality(
        "FA",
        "Fractional anisotropy computed from a DWI series (diffusion tensor fit)",
        "diffusion_map",
    ),
)

#: What a DWI series becomes: derived image kind -> published modality.
DWI_DERIVED: Mapping[str, str] = {"md": "MD", "fa": "FA", "mean_b0": "T2w"}

_BY_NAME = {m.name: m for m in MODALITIES}


def modality_names(*, published_only: bool = False) -> list[str]:
    """The vocabulary's names, in vocabulary order."""
    return [m.name for m in MODALITIES if m.published or not published_only]


@dataclass(frozen=True)
class ModalityRule:
    """``datatype``/``suffix`` must equal; each ``labels`` regex must match that entity's label.

    Regexes are matched case-insensitively with :func:`re.search`; ``"!"`` as a regex means the
    entity must be absent.
    """

    modality: str
    suffix: str
    datatype: str = "anat"
    labels: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.modality not in _BY_NAME:
            raise ValueError(f"rule names unknown modality {self.modality!r}")

    def matches(self, datatype: str, suffix: str, entities: Mapping[str, str]) -> bool:
        if datatype != self.datatype or suffix != self.suffix:
            return False
        for entity, pattern in self.labels.items():
            label = entities.get(entity)
            if pattern == "!":
                if label is not None:
                    return False
            elif label is None or not re.search(pattern, label, re.IGNORECASE):
                return False
        return True


def _anat(suffix: str, modality: str | None = None, **labels: str) -> ModalityRule:
    return ModalityRule(modality or suffix, suffix, "anat", labels)


RULES: tuple[ModalityRule, ...] = (
    # Labels that override the suffix come first: uploaders often put the real contrast in acq.
    _anat("T2w", "FLAIR", acq="flair"),
    _anat("T2starw", "SWI", acq="swi|susc"),
    _anat("T2starw", "minIP", acq="minip"),
    _anat("T1w", "angio", acq="tof|angio|mra"),
    # Plain suffixes.
    *(
        _anat(s)
        for s in (
            "T1w",
            "T2w",
            "FLAIR",
            "PDw",
            "T2starw",
            "inplaneT1",
            "inplaneT2",
            "FLASH",
            "UNIT1",
            "MEGRE",
            "MESE",
            "MTw",
            "T1map",
            "T2map",
            "T2starmap",
            "R1map",
            "R2starmap",
            "PDmap",
            "angio",
            "minIP",
        )
    ),
    _anat("MP2RAGE", inv=r"."),
    _anat("swi", "SWI"),
    _anat("SWI", "SWI"),
    # Deprecated suffixes of BIDS 1.0-1.4, still common on OpenNeuro.
    _anat("PD", "PDw"),
    _anat("T2star", "T2starw"),
    # Diffusion: the 4D series, and 3D maps some datasets ship beside it.
    ModalityRule("ADC", "dwi", "dwi", {"acq": "adc"}),
    ModalityRule("TRACE", "dwi", "dwi", {"acq": "trace"}),
    ModalityRule("DWI", "dwi", "dwi"),
    ModalityRule("ADC", "ADC", "dwi"),
    ModalityRule("TRACE", "TRACE", "dwi"),
)


def modality_for(
    datatype: str, suffix: str, entities: Mapping[str, str] | None = None
) -> str | None:
    """The modality of a BIDS file, or ``None`` when no rule maps it.

    >>> modality_for("anat", "T1w", {"acq": "MPRAGE"})
    'T1w'
    >>> modality_for("anat", "T2w", {"acq": "FLAIR"})
    'FLAIR'
    >>> modality_for("anat", "MP2RAGE", {"inv": "1"})
    'MP2RAGE'
    >>> modality_for("func", "bold") is None
    True
    """
    labels = entities or {}
    # Only datatype, suffix and the entities rules look at decide the answer: memoise on them
    # (a crawl asks this for every image).
    key = (datatype, suffix, *(labels.get(entity) for entity in _RULE_ENTITIES))
    if key not in _ANSWERS:
        _ANSWERS[key] = next(
            (rule.modality for rule in RULES if rule.matches(datatype, suffix, labels)), None
        )
    return _ANSWERS[key]


_RULE_ENTITIES = tuple(sorted({entity for rule in RULES for entity in rule.labels}))
_ANSWERS: dict[tuple[str | None, ...], str | None] = {}

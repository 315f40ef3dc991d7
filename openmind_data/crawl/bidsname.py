"""BIDS file names: entities, suffix, extension and datatype, parsed from the path alone."""

from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = ["DATATYPES", "ENTITY_NAMES", "BidsName", "parse_bids_name"]

#: Datatype folders of BIDS 1.10.
DATATYPES = frozenset(
    {"anat", "beh", "dwi", "eeg", "fmap", "func", "ieeg", "meg", "micr", "motion", "mrs",
     "nirs", "perf", "pet"}
)  # fmt: skip

#: Entity key -> long name (pybids' names), in the BIDS specification's order.
ENTITY_NAMES = {
    "sub": "subject", "ses": "session", "sample": "sample", "task": "task",
    "tracksys": "tracksys", "acq": "acquisition", "nuc": "nucleus", "voi": "volume",
    "ce": "ceagent", "trc": "tracer", "stain": "staining", "rec": "reconstruction",
    "dir": "direction", "run": "run", "mod": "modality", "echo": "echo", "flip": "flip",
    "inv": "inv", "mt": "mt", "part": "part", "proc": "proc", "hemi": "hemisphere",
    "space": "space", "split": "split", "recording": "recording", "chunk": "chunk",
    "seg": "segmentation", "res": "resolution", "den": "density", "label": "label",
    "desc": "description",
}  # fmt: skip

_PAIR = re.compile(r"([a-zA-Z]+)-([a-zA-Z0-9+]+)")
_SUFFIX = re.compile(r"[a-zA-Z0-9+]+")


@dataclass(frozen=True, slots=True)
class BidsName:
    """The parts of a BIDS file name; ``entities`` keep the short keys and the labels as
    written (``run`` stays ``'01'``)."""

    entities: dict[str, str]
    suffix: str
    extension: str
    datatype: str | None

    def matches(self, other: BidsName) -> bool:
        """True when this (sidecar) name applies to ``other``: same suffix, and each of its
        entities present in ``other`` with an equal label (numbers compare by value)."""
        if self.suffix != other.suffix:
            return False
        for key, label in self.entities.items():
            theirs = other.entities.get(key)
            if theirs is None or not _same_label(key, label, theirs):
                return False
        return True


def _same_label(key: str, a: str, b: str) -> bool:
    if a == b:
        return True
    return (
        key in ("run", "echo", "flip", "inv", "chunk")
        and a.isdigit()
        and b.isdigit()
        and (int(a) == int(b))
    )


def parse_bids_name(relpath: str) -> BidsName | None:
    """Parse ``relpath`` (relative to the dataset root, '/' separators).

    Returns None for a name with no suffix or no extension. A file in a subject or session
    folder inherits ``sub``/``ses`` from the folder when its own name lacks them, as BIDS
    entities in folder names do.
    """
    parts = relpath.split("/")
    name = parts[-1]
    dot = name.find(".")
    if dot <= 0:
        return None
    stem, extension = name[:dot], name[dot:]
    *pairs, suffix = stem.split("_")
    if not _SUFFIX.fullmatch(suffix):
        return None
    entities: dict[str, str] = {}
    for pair in pairs:
        match = _PAIR.fullmatch(pair)
        if match is None:
            return None
        entities[match[1]] = match[2]
    for folder in parts[:-1]:
        for key in ("sub", "ses"):
            if folder.startswith(f"{key}-") and key not in entities:
                entities[key] = folder[len(key) + 1 :]
    datatype = parts[-2] if len(parts) > 1 and parts[-2] in DATATYPES else None
    return BidsName(entities, suffix, extension, datatype)

"""Turn the many ways datasets write a value into one: units, spellings, codes.

Each function takes the raw value as found and returns the normalised value, or None when the raw
value says nothing usable; nothing is invented. Functions that change units also say so, so the
caller can record the conversion in the image's provenance.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import Any

__all__ = [
    "normalize_age",
    "normalize_doi",
    "normalize_handedness",
    "normalize_license",
    "normalize_manufacturer",
    "normalize_seconds",
    "normalize_sex",
    "normalize_tesla",
]

_MISSING = {"", "n/a", "na", "nan", "none", "null", "unknown", "-", "?", "missing", "not known"}

_NUMBER = r"(\d+(?:\.\d+)?)"
_PLAIN = re.compile(rf"^{_NUMBER}\s*(?:y|yr|yrs|years?)?$")
_RANGE = re.compile(rf"^{_NUMBER}\s*(?:-|\u2013|to)\s*{_NUMBER}$")
_OPEN_TOP = re.compile(rf"^(?:>=?\s*{_NUMBER}|{_NUMBER}\s*\+)$")
_UNIT_DIVISORS = {"month": 12.0, "week": 365.25 / 7.0, "day": 365.25}


def _clean(raw: Any) -> str | None:
    if raw is None or (isinstance(raw, float) and math.isnan(raw)):
        return None
    text = str(raw).strip()
    return None if text.lower() in _MISSING else text


def normalize_age(raw: Any, units: str | None = None) -> tuple[float | None, bool]:
    """Age in years and whether the raw cell was anything but a plain number.

    ``units`` is the column's unit (from its name or participants.json): months, weeks or days
    are converted. A range ('20-25') gives its midpoint and '89+' (HIPAA's top-coding) its lower
    bound; the caller keeps the raw cell beside such values.
    """
    text = _clean(raw)
    if text is None:
        return None, False
    divisor = 1.0
    for unit, value in _UNIT_DIVISORS.items():
        if units and unit in units.lower():
            divisor = value
    lowered = text.lower()
    if match := _PLAIN.fullmatch(lowered):
        return float(match[1]) / divisor, False
    if match := _RANGE.fullmatch(lowered):
        return (float(match[1]) + float(match[2])) / 2.0 / divisor, True
    if match := _OPEN_TOP.fullmatch(lowered):
        return float(match[1] or match[2]) / divisor, True
    return None, True


_SEX = {
    "m": "M", "male": "M", "man": "M", "boy": "M", "masculine": "M",
    "f": "F", "female": "F", "woman": "F", "girl": "F", "feminine": "F",
    "o": "O", "other": "O", "intersex": "O", "non-binary": "O", "nonbinary": "O",
}  # fmt: skip
_HAND = {
    "r": "R", "right": "R", "rh": "R", "right-handed": "R", "righthanded": "R",
    "l": "L", "left": "L", "lh": "L", "left-handed": "L", "lefthanded": "L",
    "a": "A", "ambidextrous": "A", "ambi": "A", "both": "A", "mixed": "A",
}  # fmt: skip


def _coded(raw: Any, levels: Mapping[str, Any] | None, table: Mapping[str, str]) -> str | None:
    text = _clean(raw)
    if text is None:
        return None
    if levels and text in levels:
        label = levels[text]
        text = str(label.get("Description", label) if isinstance(label, dict) else label)
    return table.get(text.strip().lower())


def normalize_sex(raw: Any, levels: Mapping[str, Any] | None = None) -> str | None:
    """'M', 'F' or 'O'; codes such as '1'/'2' only through participants.json Levels."""
    return _coded(raw, levels, _SEX)


def normalize_handedness(raw: Any, levels: Mapping[str, Any] | None = None) -> str | None:
    """'R', 'L' or 'A' (ambidextrous)."""
    return _coded(raw, levels, _HAND)


_MANUFACTURERS = (
    ("siemens", "Siemens"), ("philips", "Philips"), ("general electric", "GE"),
    ("ge medical", "GE"), ("ge healthcare", "GE"), ("toshiba", "Canon"), ("canon", "Canon"),
    ("hitachi", "Hitachi"), ("bruker", "Bruker"), ("varian", "Varian"), ("agilent", "Agilent"),
    ("united imaging", "United Imaging"), ("uih", "United Imaging"),
)  # fmt: skip


def normalize_manufacturer(raw: Any) -> str | None:
    text = _clean(raw)
    if text is None:
        return None
    lowered = text.lower()
    if lowered == "ge" or lowered.startswith("ge "):
        return "GE"
    for needle, name in _MANUFACTURERS:
        if needle in lowered:
            return name
    return text


def normalize_seconds(raw: Any, upper: float) -> tuple[float | None, bool]:
    """A time in seconds, and whether it was converted from milliseconds.

    A value above ``upper`` (the longest plausible value in seconds for this field and
    modality) is read as milliseconds when that gives a plausible value.
    """
    value = _number(raw)
    if value is None or value <= 0:
        return None, False
    if value > upper and value / 1000.0 <= upper:
        return value / 1000.0, True
    return (value, False) if value <= upper else (None, False)


def normalize_tesla(raw: Any) -> float | None:
    """Field strength in tesla; a value written in gauss (e.g. 30000) is converted."""
    value = _number(raw)
    if value is None or value <= 0:
        return None
    if value > 100 and value / 10000.0 <= 20:
        return value / 10000.0
    return value if value <= 20 else None


def _number(raw: Any) -> float | None:
    if isinstance(raw, bool):
        return None
    if isinstance(raw, int | float):
        return float(raw) if math.isfinite(raw) else None
    text = _clean(raw)
    if text is None:
        return None
    try:
        value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


_LICENSES = (
    (
        re.compile(r"^(cc0|cc0-?1\.?0?|ccz(ero)?|publicdomain\(?cc0\)?|creativecommonszero.*)$"),
        "CC0-1.0",
    ),
    (re.compile(r"^(odc-?)?pddl(-?1\.?0)?$"), "PDDL-1.0"),
    (
        re.compile(r"^(cc-?by|creativecommonsattribution)-?(4\.?0)?(international)?(license)?$"),
        "CC-BY-4.0",
    ),
    (re.compile(r"^cc-?by-?sa-?(4\.?0)?(international)?$"), "CC-BY-SA-4.0"),
    (re.compile(r"^cc-?by-?nc-?(4\.?0)?(international)?$"), "CC-BY-NC-4.0"),
    (re.compile(r"^cc-?by-?nc-?sa-?(4\.?0)?(international)?$"), "CC-BY-NC-SA-4.0"),
)


def normalize_license(raw: Any) -> str | None:
    """An SPDX identifier for the licences OpenNeuro datasets use; unknown text unchanged."""
    text = _clean(raw)
    if text is None:
        return None
    key = re.sub(r"[\s_]+", "", text.lower()).replace("version", "")
    for pattern, spdx in _LICENSES:
        if pattern.fullmatch(key):
            return spdx
    return text


def normalize_doi(raw: Any) -> str | None:
    """'doi:10.xxxx/...' from a bare DOI, a 'doi:' one or a doi.org URL."""
    text = _clean(raw)
    if text is None:
        return None
    match = re.search(r"(10\.\d{4,9}/\S+)", text)
    return f"doi:{match[1]}" if match else None

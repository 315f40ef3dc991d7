"""Participant information: participants.tsv, sessions.tsv and phenotype/, normalised.

The columns a dataset uses for age, sex, handedness and the rest are found by name; codes are
read through the data dictionary (participants.json Levels, Units). Columns that fit no field of
the image table are kept as ``participants.<column>`` in the extra metadata, and so is the raw
cell behind a value that was not a plain number (an age range, '89+').
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

from openmind_data.crawl.normalize import (
    normalize_age,
    normalize_handedness,
    normalize_sex,
)
from openmind_data.crawl.textfiles import read_json, read_tsv
from openmind_data.errors import InvalidInputError

__all__ = ["Participants", "read_participants"]

_AGE = ("age", "age_years", "ageatscan", "age_at_scan", "subject_age", "age (years)")
_AGE_MONTHS = ("age_months", "agemonths", "age_in_months", "age (months)")
_SEX = ("sex", "gender", "biological_sex")
_HAND = ("handedness", "hand", "handed", "dominant_hand")
_HEALTH = ("health_status", "group", "diagnosis", "dx", "status", "condition")
_RACE = ("race", "ethnicity", "race_ethnicity")
_WEIGHT = ("weight", "weight_kg", "body_weight")
_BMI = ("bmi", "body_mass_index")


def _column(columns: list[str], names: tuple[str, ...]) -> str | None:
    lowered = {c.lower(): c for c in columns}
    return next((lowered[n] for n in names if n in lowered), None)


def _float(raw: str | None) -> float | None:
    try:
        return float(raw) if raw not in (None, "", "n/a") else None
    except ValueError:
        return None


@dataclass
class Participants:
    """Normalised participant fields by subject label, session ages, and the files' fates."""

    people: dict[str, dict[str, Any]] = field(default_factory=dict)
    session_age: dict[tuple[str, str], float] = field(default_factory=dict)
    problems: list[InvalidInputError] = field(default_factory=list)

    def for_image(self, subject: str | None, session: str | None) -> dict[str, Any]:
        person = dict(self.people.get(subject or "", {}))
        if subject is not None and session is not None:
            age = self.session_age.get((subject, session))
            if age is not None:
                person["age"] = age
        return person


def _normalise(
    rows: list[dict[str, str]], dictionary: dict[str, Any], prefix: str
) -> dict[str, dict[str, Any]]:
    if not rows:
        return {}
    columns = list(rows[0])
    age, months = _column(columns, _AGE), _column(columns, _AGE_MONTHS)
    sex, hand = _column(columns, _SEX), _column(columns, _HAND)
    health, race = _column(columns, _HEALTH), _column(columns, _RACE)
    weight, bmi = _column(columns, _WEIGHT), _column(columns, _BMI)
    used = {c for c in (age, months, sex, hand, health, race, weight, bmi) if c}

    def levels(column: str | None) -> dict[str, Any] | None:
        entry = dictionary.get(column or "", {})
        return entry.get("Levels") if isinstance(entry, dict) else None

    def units(column: str | None) -> str | None:
        entry = dictionary.get(column or "", {})
        return str(entry.get("Units")) if isinstance(entry, dict) and "Units" in entry else None

    people: dict[str, dict[str, Any]] = {}
    for row in rows:
        label = row.get("participant_id", "").removeprefix("sub-")
        if not label:
            continue
        extra = {
            f"{prefix}.{c}": v
            for c, v in row.items()
            if c not in used and c != "participant_id" and v not in ("", "n/a")
        }
        person: dict[str, Any] = {"extra": extra}
        if age or months:
            column = age or months
            value, unusual = normalize_age(
                row[column or ""], units(column) or ("months" if not age else None)
            )
            person["age"] = value
            if unusual:
                extra[f"{prefix}.{column}"] = row[column or ""]
        if sex:
            person["sex"] = normalize_sex(row[sex], levels(sex))
        if hand:
            person["handedness"] = normalize_handedness(row[hand], levels(hand))
        for key, column in (("health_status", health), ("race", race)):
            if column and row[column] not in ("", "n/a"):
                label_map = levels(column) or {}
                person[key] = str(label_map.get(row[column], row[column]))
        if weight:
            person["weight"] = _float(row[weight])
        if bmi:
            person["bmi"] = _float(row[bmi])
        people[label] = person
    return people


def read_participants(root: str, files: list[str]) -> tuple[Participants, set[str]]:
    """Read the participant tables among ``files`` (paths relative to ``root``).

    Returns the normalised participants and the set of files it read; unreadable files are in
    ``problems`` and contribute nothing.
    """
    out = Participants()
    read: set[str] = set()

    def load_dictionary(rel: str) -> dict[str, Any]:
        json_rel = rel[: -len(".tsv")] + ".json"
        if json_rel not in present:
            return {}
        read.add(json_rel)
        try:
            return read_json(os.path.join(root, json_rel))
        except InvalidInputError as error:
            out.problems.append(error)
            return {}

    present = set(files)
    if "participants.tsv" in present:
        read.add("participants.tsv")
        try:
            rows = read_tsv(os.path.join(root, "participants.tsv"))
            out.people = _normalise(rows, load_dictionary("participants.tsv"), "participants")
        except InvalidInputError as error:
            out.problems.append(error)
    for rel in sorted(f for f in files if f.startswith("phenotype/") and f.endswith(".tsv")):
        read.add(rel)
        try:
            rows = read_tsv(os.path.join(root, rel))
        except InvalidInputError as error:
            out.problems.append(error)
            continue
        if not rows or "participant_id" not in rows[0]:
            continue
        name = os.path.basename(rel)[: -len(".tsv")]
        for label, extra in _normalise(rows, load_dictionary(rel), f"phenotype.{name}").items():
            person = out.people.setdefault(label, {"extra": {}})
            for key, value in extra.items():
                if key == "extra":
                    person["extra"].update(value)
                elif person.get(key) is None:
                    person[key] = value
    for rel in sorted(f for f in files if f.endswith("_sessions.tsv")):
        read.add(rel)
        subject = os.path.basename(rel).split("_")[0].removeprefix("sub-")
        try:
            rows = read_tsv(os.path.join(root, rel))
        except InvalidInputError as error:
            out.problems.append(error)
            continue
        dictionary = load_dictionary(rel)
        column = _column(list(rows[0]), _AGE) if rows else None
        for row in rows:
            session = row.get("session_id", "").removeprefix("ses-")
            if column and session:
                units = dictionary.get(column, {}).get("Units") if dictionary else None
                age, _ = normalize_age(row[column], units)
                if age is not None:
                    out.session_age[(subject, session)] = age
    return out, read

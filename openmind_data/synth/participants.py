"""participants.tsv with the messiness of real OpenNeuro datasets, and what it should mean.

Each style writes ages, sexes and handedness the way some real datasets do (numbers, decimals,
'n/a', ranges, '89+', months in another column, 'M'/'male'/'1' codes explained by
participants.json Levels, extra columns). :class:`Participant` holds both the raw cells and the
normalised values a curator must recover from them: age in years (a range becomes its midpoint,
'89+' its lower bound), sex 'M'/'F'/'O' or None, handedness 'R'/'L'/'A' or None.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

__all__ = [
    "Participant",
    "ParticipantStyle",
    "make_participants",
    "participants_json",
    "participants_tsv",
    "phenotype_tsv",
]

ParticipantStyle = Literal["plain", "messy", "months", "phenotype"]


@dataclass(frozen=True)
class Participant:
    label: str
    cells: dict[str, str]  # raw participants.tsv cells, participant_id excluded
    age: float | None
    sex: str | None
    handedness: str | None
    health_status: str | None = None
    extra: dict[str, str] = field(default_factory=dict)


def _age(rng: np.random.Generator) -> float:
    return float(np.round(rng.uniform(18, 80), 1))


def make_participants(
    labels: list[str], style: ParticipantStyle, rng: np.random.Generator
) -> list[Participant]:
    people = []
    for i, label in enumerate(labels):
        sex = ("M", "F")[int(rng.integers(2))]
        hand = ("R", "R", "R", "L")[int(rng.integers(4))]
        group = ("control", "patient")[int(rng.integers(2))]
        years = _age(rng)
        if style == "plain":
            age = float(round(years))
            cells = {"age": f"{int(age)}", "sex": sex, "handedness": hand, "group": group}
            people.append(Participant(label, cells, age, sex, hand, group))
        elif style == "messy":
            # One participant per oddity, cycling: decimals, n/a, a range, 89+, codes.
            kind = i % 5
            sex_cell = {0: "male", 1: "female", 2: "1", 3: "2", 4: "M"}[kind]
            sex_norm = {0: "M", 1: "F", 2: "M", 3: "F", 4: "M"}[kind]
            age_cell, age_norm = {
                0: (f"{years:.1f}", years),
                1: ("n/a", None),
                2: ("20-25", 22.5),
                3: ("89+", 89.0),
                4: (f"{years:.1f}", years),
            }[kind]
            hand_cell = {"R": "right", "L": "left"}[hand]
            cells = {
                "age": age_cell,
                "sex": sex_cell,
                "hand": hand_cell,
                "iq": str(int(rng.integers(85, 130))),
                "site": "B",
            }
            people.append(
                Participant(
                    label, cells, age_norm, sex_norm, hand, None, {"iq": cells["iq"], "site": "B"}
                )
            )
        elif style == "months":
            months = round(years * 12)
            sex_cell = sex.lower()
            hand_cell = {"R": "R", "L": "A"}[hand]  # this dataset has ambidextrous people
            cells = {"age_months": str(months), "sex": sex_cell, "handedness": hand_cell}
            people.append(
                Participant(
                    label, cells, round(months / 12.0, 4), sex, {"R": "R", "L": "A"}[hand], None
                )
            )
        else:  # phenotype: participants.tsv holds only the group; age/sex live in phenotype/
            cells = {"group": group}
            people.append(Participant(label, cells, float(round(years)), sex, None, group))
    return people


def participants_tsv(people: list[Participant]) -> str:
    columns = list(people[0].cells)
    lines = ["\t".join(["participant_id", *columns])]
    lines += ["\t".join([f"sub-{p.label}", *(p.cells[c] for c in columns)]) for p in people]
    return "\n".join(lines) + "\n"


def phenotype_tsv(people: list[Participant]) -> str:
    lines = ["participant_id\tage\tsex"]
    lines += [
        f"sub-{p.label}\t{int(p.age) if p.age is not None else 'n/a'}\t{p.sex}" for p in people
    ]
    return "\n".join(lines) + "\n"


def participants_json(style: ParticipantStyle) -> dict[str, Any]:
    """The data dictionary real datasets ship, with Levels where codes need explaining."""
    if style == "messy":
        return {
            "age": {"Description": "age at scan", "Units": "years"},
            "sex": {
                "Description": "biological sex",
                "Levels": {
                    "1": "male",
                    "2": "female",
                    "male": "male",
                    "female": "female",
                    "M": "male",
                },
            },
            "hand": {"Description": "handedness", "Levels": {"right": "right", "left": "left"}},
            "iq": {"Description": "full-scale IQ"},
        }
    if style == "months":
        return {
            "age_months": {"Description": "age at scan", "Units": "months"},
            "handedness": {"Levels": {"R": "right", "L": "left", "A": "ambidextrous"}},
        }
    return {"age": {"Description": "age", "Units": "years"}}

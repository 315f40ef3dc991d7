"""Reading the small text files of a BIDS dataset, with a reason code when they are unusable."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any

from openmind_data.errors import InvalidInputError
from openmind_data.exclusions import ExclusionReason as R

__all__ = ["read_json", "read_text", "read_tsv"]


def read_text(path: str | Path) -> str:
    try:
        raw = Path(path).read_bytes()
    except FileNotFoundError:
        if Path(path).is_symlink():
            raise InvalidInputError(
                path, R.DANGLING_SYMLINK, "symbolic link to a missing file"
            ) from None
        raise
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        raise InvalidInputError(
            path, R.NOT_UTF8, f"not UTF-8 ({error.reason} at byte {error.start})"
        ) from None


def read_json(path: str | Path) -> dict[str, Any]:
    text = read_text(path)
    try:
        value = json.loads(text)
    except json.JSONDecodeError as error:
        raise InvalidInputError(path, R.INVALID_JSON, f"invalid JSON: {error}") from None
    if not isinstance(value, dict):
        raise InvalidInputError(path, R.INVALID_JSON, "JSON is not an object")
    return value


def read_tsv(path: str | Path) -> list[dict[str, str]]:
    """Rows as dicts; a row whose cell count differs from the header's is an error."""
    text = read_text(path)
    rows = list(csv.reader(io.StringIO(text), delimiter="\t"))
    rows = [row for row in rows if any(cell.strip() for cell in row)]
    if not rows:
        return []
    header = [cell.strip() for cell in rows[0]]
    for number, row in enumerate(rows[1:], start=2):
        if len(row) != len(header):
            raise InvalidInputError(
                path,
                R.INVALID_TSV,
                f"line {number} has {len(row)} cells, the header has {len(header)}",
            )
    return [dict(zip(header, (cell.strip() for cell in row), strict=True)) for row in rows[1:]]

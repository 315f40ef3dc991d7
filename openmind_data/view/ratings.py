"""The QC browser's ratings: one CSV row per rated image, the file
:func:`openmind_data.quality.read_ratings` (so ``openmind quality calibrate --ratings``) reads
as it is.

Columns: ``image_id``; ``rating``, the 1-5 score calibration fits (1 best); ``verdict``, the
rater's word where one was given (``accept`` is rating 1, ``doubtful`` 3, ``exclude`` 5; a
number key gives the rating alone); ``rater``; ``rated_at`` (UTC, ISO 8601). Rating an image
again replaces its row. The file is rewritten whole on every rating (a hidden temporary file,
flushed, renamed), so a killed browser never leaves half a row.
"""

from __future__ import annotations

import csv
import io
import threading
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from openmind_data.durable import write_atomic
from openmind_data.errors import ConfigError

__all__ = ["COLUMNS", "VERDICTS", "Rating", "RatingsFile"]

#: verdict -> the rating it stands for
VERDICTS = {"accept": 1, "doubtful": 3, "exclude": 5}
COLUMNS = ("image_id", "rating", "verdict", "rater", "rated_at")


@dataclass(frozen=True)
class Rating:
    image_id: str
    rating: int
    verdict: str
    rater: str
    rated_at: str

    def to_dict(self) -> dict[str, Any]:
        return {c: getattr(self, c) for c in COLUMNS}


class RatingsFile:
    """The ratings at ``path`` (read when it exists), changed one image at a time."""

    def __init__(self, path: str | Path, *, rater: str = "") -> None:
        self.path = Path(path)
        self.rater = rater
        self._lock = threading.Lock()
        self.ratings: dict[str, Rating] = {}
        if self.path.is_file():
            self.ratings = _read(self.path)

    def rate(
        self, image_id: str, *, verdict: str | None = None, rating: int | None = None
    ) -> Rating:
        """Record a verdict (accept, doubtful, exclude) or a 1-5 rating of ``image_id``."""
        if (verdict is None) == (rating is None):
            raise ConfigError("a rating needs a verdict or a 1-5 rating, not both")
        if verdict is not None:
            if verdict not in VERDICTS:
                raise ConfigError(f"verdict {verdict!r}: expected one of {', '.join(VERDICTS)}")
            rating = VERDICTS[verdict]
        assert rating is not None
        if isinstance(rating, bool) or int(rating) != rating or not 1 <= rating <= 5:
            raise ConfigError(f"rating {rating!r}: expected a whole number from 1 to 5")
        stamp = datetime.now(UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")
        entry = Rating(image_id, int(rating), verdict or "", self.rater, stamp)
        with self._lock:
            self.ratings[image_id] = entry
            self._write()
        return entry

    def _write(self) -> None:
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=COLUMNS, lineterminator="\n")
        writer.writeheader()
        for image_id in sorted(self.ratings):
            writer.writerow(self.ratings[image_id].to_dict())
        write_atomic(self.path, buffer.getvalue().encode())


def _read(path: Path) -> dict[str, Rating]:
    with path.open(newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        missing = sorted(set(COLUMNS) - set(reader.fieldnames or []))
        if missing:
            raise ConfigError(
                f"{path}: not a ratings file of `openmind view` (no {sorted(missing)})"
            )
        found = {}
        for line, row in enumerate(reader, start=2):
            try:
                rating = int(row["rating"])
            except ValueError as error:
                raise ConfigError(f"{path}: line {line}: rating {row['rating']!r}") from error
            found[row["image_id"]] = Rating(
                row["image_id"], rating, row["verdict"], row["rater"], row["rated_at"]
            )
        return found

"""The metrics log: ``OUT/metrics.csv`` (appended to on resume) or TensorBoard events."""

from __future__ import annotations

import csv
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

__all__ = ["CsvLog", "MetricsLog", "open_metrics"]

COLUMNS = (
    "step",
    "epoch",
    "loss",
    "lr",
    "grad_norm",
    "samples_per_s",
    "data_wait",
    "peak_memory_gb",
)


class MetricsLog(Protocol):
    def write(self, row: dict[str, Any]) -> None: ...

    def close(self) -> None: ...


class CsvLog:
    """Rows of ``columns`` in ``path``, each flushed as written. Rows of an earlier run whose
    ``key`` (step, or epoch) is beyond ``resume_after`` are dropped: the resumed run writes
    them again."""

    def __init__(
        self,
        path: Path,
        resume_after: int,
        columns: Sequence[str] = COLUMNS,
        key: str = "step",
    ) -> None:
        kept: list[dict[str, str]] = []
        if path.is_file():
            with path.open(newline="") as handle:
                kept = [r for r in csv.DictReader(handle) if int(r[key]) <= resume_after]
        self.handle = path.open("w", newline="")
        self.writer = csv.DictWriter(self.handle, fieldnames=columns, extrasaction="ignore")
        self.writer.writeheader()
        self.writer.writerows(kept)

    def write(self, row: dict[str, Any]) -> None:
        self.writer.writerow(row)
        self.handle.flush()

    def close(self) -> None:
        self.handle.close()


class TensorBoardLog:
    def __init__(self, folder: Path, resume_after: int) -> None:
        try:
            from torch.utils.tensorboard import SummaryWriter  # noqa: PLC0415
        except ImportError as error:
            raise ImportError(
                "train.metrics: tensorboard needs the tensorboard package (pip install"
                " tensorboard), or use metrics: csv"
            ) from error
        self.writer = SummaryWriter(str(folder), purge_step=resume_after + 1)

    def write(self, row: dict[str, Any]) -> None:
        for key, value in row.items():
            if key not in ("step", "epoch") and value is not None:
                self.writer.add_scalar(f"pretrain/{key}", value, row["step"])

    def close(self) -> None:
        self.writer.close()


def open_metrics(kind: str, out: Path, resume_after: int) -> MetricsLog:
    """The log of a run in ``out``; rows after step ``resume_after`` are dropped."""
    if kind == "tensorboard":
        return TensorBoardLog(out / "tensorboard", resume_after)
    return CsvLog(out / "metrics.csv", resume_after)

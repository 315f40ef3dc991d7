"""Timing shared by the benchmarks (imported beside them: run them from the repository root)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any


def best(job: Callable[[], Any], repeat: int) -> float:
    """The fastest of ``repeat`` runs of ``job``, in seconds."""
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        job()
        times.append(time.perf_counter() - start)
    return min(times)

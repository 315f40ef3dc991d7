"""Running one pure function over many jobs, in this process or a pool, with a progress bar."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from typing import TypeVar

from tqdm import tqdm

__all__ = ["run_jobs"]

J = TypeVar("J")
R = TypeVar("R")


def run_jobs(
    function: Callable[[J], R],
    jobs: Sequence[J],
    *,
    workers: int = 1,
    desc: str,
    unit: str,
    progress: bool = False,
) -> list[R]:
    """``[function(job) for job in jobs]``, in order, over ``workers`` processes when more than
    one (``function`` and the jobs must pickle). The bar draws only on a terminal."""
    bar = tqdm(total=len(jobs), desc=desc, unit=unit, disable=None if progress else True)
    results: list[R] = []
    if workers <= 1 or len(jobs) <= 1:
        for job in jobs:
            results.append(function(job))
            bar.update()
    else:
        with ProcessPoolExecutor(max_workers=workers) as pool:
            for done in pool.map(function, jobs):
                results.append(done)
                bar.update()
    bar.close()
    return results

"""Which row groups each reader takes: every (DDP rank, DataLoader worker) pair gets a disjoint
share of the epoch's row groups, so each image is read once per epoch across all of them.

The unit is a Parquet row group (about 100 MiB of images): small enough to balance many readers,
large enough to read efficiently. The epoch's order is a permutation drawn from the seed and the
epoch; a reader that stopped after ``position`` of its units resumes with the next one.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

__all__ = ["Unit", "assign"]


@dataclass(frozen=True)
class Unit:
    path: str  # the shard, as the file system that reads it names it
    row_group: int
    rows: int


def assign(
    units: Sequence[Unit],
    *,
    epoch: int,
    seed: int,
    rank: int = 0,
    world_size: int = 1,
    worker: int = 0,
    workers: int = 1,
    position: int = 0,
) -> list[Unit]:
    """The units reader (``rank``, ``worker``) reads in ``epoch``, from ``position`` on."""
    if not (0 <= rank < world_size and 0 <= worker < workers):
        raise ValueError(f"rank {rank}/{world_size}, worker {worker}/{workers}: out of range")
    ordered = sorted(units, key=lambda u: (u.path, u.row_group))
    order = np.random.default_rng([seed, epoch]).permutation(len(ordered))
    slot, readers = rank * workers + worker, world_size * workers
    mine = [ordered[i] for i in order[slot::readers]]
    return mine[position:]

"""What an SSL method is to the trainer: one small interface.

A method builds the network it trains and turns a batch into a loss. The loss comes as a sum
and the weight it is normalised by (e.g. the number of scored voxels); the trainer adds the
weights of every DDP rank before dividing, so a run on several ranks computes the same loss as
one process with the whole batch.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

import torch
from torch import nn

__all__ = ["Batch", "Loss", "Method"]


@dataclass
class Batch:
    """A batch of crops on the training device: (B, 1, X, Y, Z) each; masks as 0/1 floats.
    ``keys`` are the samples' global indices in the run (step * batch + index), which seed
    any per-sample randomness so that it does not depend on how the batch is split."""

    image: torch.Tensor
    anat_mask: torch.Tensor
    anon_mask: torch.Tensor
    keys: list[int]


@dataclass
class Loss:
    total: torch.Tensor  # the sum to normalise; has a gradient
    weight: torch.Tensor  # what it is divided by (summed over ranks first); no gradient
    logs: dict[str, float] = field(default_factory=dict)  # extra figures for the metrics log


class Method(Protocol):
    name: str

    def build(self) -> nn.Module:
        """The network this method trains, freshly initialised."""
        ...

    def loss(self, model: nn.Module, batch: Batch, seed: int) -> Loss:
        """The loss of ``model`` on ``batch``; ``seed`` and ``batch.keys`` seed the random
        choices (masks), so a step can be replayed."""
        ...

"""The optimizer an ``OptimizerConfig`` describes, over the given parameters."""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn

from openmind_ssl.train.config import OptimizerConfig

__all__ = ["build_optimizer"]


def build_optimizer(
    parameters: Iterable[nn.Parameter], optim: OptimizerConfig
) -> torch.optim.Optimizer:
    """AdamW or SGD at ``optim.lr`` (the trainers set each step's rate themselves)."""
    if optim.name == "adamw":
        return torch.optim.AdamW(
            parameters, lr=optim.lr, weight_decay=optim.weight_decay, betas=optim.betas
        )
    return torch.optim.SGD(
        parameters,
        lr=optim.lr,
        momentum=optim.momentum,
        nesterov=optim.nesterov,
        weight_decay=optim.weight_decay,
    )

"""What an SSL method is to the trainer: one small interface.

A method builds the network it trains (a backbone, through its adapter ``self.backbone``, with
whatever heads it needs) and turns a batch of crops into a loss; ``after_step`` runs after each
optimizer step (e.g. a momentum teacher's update). The loss comes as a sum and the weight it is
normalised by (e.g. the number of scored voxels, or of samples); the trainer adds the weights of
every DDP rank before dividing, so a run on several ranks computes the loss of one process with
the whole batch. Method-specific settings live in the method's ``Options`` dataclass, read from
the config's ``method.options`` mapping."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

import torch
from torch import nn

from openmind_ssl.backbones import get_backbone
from openmind_ssl.backbones.base import Backbone

if TYPE_CHECKING:
    from openmind_ssl.train.config import PretrainConfig

__all__ = ["Batch", "Loss", "Method", "NoOptions"]


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


@dataclass(frozen=True)
class NoOptions:
    """A method without settings of its own."""


class Method:
    """The base of every SSL method. Subclasses set ``name`` (as configs spell it) and
    ``Options``, and implement ``build`` and ``loss``."""

    name: ClassVar[str]
    Options: ClassVar[type[Any]] = NoOptions

    def __init__(self, config: PretrainConfig) -> None:
        from openmind_ssl.train.config import build_options  # noqa: PLC0415 (config imports us)

        self.config = config
        self.options = build_options(self.Options, config.method.options, "method.options")

    @property
    def backbone(self) -> Backbone:
        """The adapter of the architecture the method trains (``model.architecture``)."""
        return get_backbone(self.config.model.architecture)

    @property
    def patch_size(self) -> tuple[int, int, int]:
        """The crops the stream delivers."""
        return self.config.train.patch_size

    @property
    def network_input_size(self) -> tuple[int, int, int]:
        """What the backbone sees (and Primus' position embedding is sized for): the crop,
        unless the method cuts views of its own size from it."""
        return self.patch_size

    def build(self) -> nn.Module:
        """The network this method trains, freshly initialised."""
        raise NotImplementedError

    def loss(self, model: nn.Module, batch: Batch, seed: int) -> Loss:
        """The loss of ``model`` (the trained network, perhaps wrapped by DDP or compile) on
        ``batch``; ``seed`` and ``batch.keys`` seed its random choices, so a step replays."""
        raise NotImplementedError

    def after_step(self, network: nn.Module) -> None:
        """Called with the unwrapped network after every optimizer step."""

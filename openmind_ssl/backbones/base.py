"""What a pretraining architecture is to the rest of the package: one small interface.

A :class:`Backbone` adapter owns everything that differs between architectures: building the
network for a crop size, the multiple a crop or a view must be, the masking grid of the
masked-image methods, how the encoder runs and how its output is pooled and decoded, where the
encoder and the stem sit in the state dict (the adaptation keys fine-tuning reads), and the
paper's optimiser and schedule for pretraining and fine-tuning. Methods, fine-tuning and the
configs ask the adapter (``openmind_ssl.backbones.get_backbone``) instead of testing names or
classes; a new architecture is a module with one adapter and a line in the registry.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

from torch import Tensor, nn

from openmind_data.errors import ConfigError

__all__ = ["ADAPTATION_KEYS", "Backbone", "Grid", "Head", "Stages"]

Grid = tuple[int, int, int]

#: Which stages a pooled feature vector reads: the deepest alone, or every stage (nnssl's
#: contrastive heads on ResEnc-L; a token backbone has one).
Stages = Literal["all", "deepest"]

#: The adaptation plan's keys (nnssl's names), in the order checkpoints list them.
ADAPTATION_KEYS = ("key_to_encoder", "key_to_stem", "keys_to_in_proj", "key_to_lpe")


@dataclass(frozen=True)
class Head:
    """What a network is built for, around the architecture: its input channels and output
    classes; ``mae_decoder`` gives a token backbone its small transformer decoder after the
    mask-token restore; ``deep_supervision`` gives a U-Net one output per decoder stage."""

    input_channels: int = 1
    num_classes: int = 1
    mae_decoder: bool = False
    deep_supervision: bool = False


class Backbone(ABC):
    """The adapter of one architecture. Subclasses set the class attributes and implement the
    abstract methods; ``model`` arguments are a ``ModelConfig`` (its size keys)."""

    #: The name configs use (``model.architecture``).
    name: ClassVar[str]
    #: The name people read in messages and docs.
    label: ClassVar[str]
    #: The network class (dna's parameter names) that carries the adaptation keys.
    network_class: ClassVar[type[nn.Module]]
    #: Other names checkpoints give it (nnssl's ``arch_class_name``).
    aliases: ClassVar[tuple[str, ...]] = ()
    #: True for a token backbone (a vision transformer): masks hide tokens, which the encoder
    #: can drop (MAE) or replace (SimMIM); False for a CNN, whose masks hide voxels.
    tokens: ClassVar[bool]
    #: The attributes of the network that make up its encoder with the stem, in registration
    #: order; a classifier takes them over under the same names, so checkpoints map onto it.
    encoder_parts: ClassVar[tuple[str, ...]]
    #: The peak fine-tuning rate from a pretrained checkpoint.
    transfer_lr: ClassVar[float]

    # -- networks ------------------------------------------------------------------------

    def build(
        self,
        model: Any,
        patch_size: Grid,
        *,
        input_channels: int = 1,
        num_classes: int = 1,
        mae_decoder: bool = False,
        deep_supervision: bool = False,
    ) -> nn.Module:
        """The network ``model`` describes, for crops of ``patch_size``, with the :class:`Head`
        the keywords describe."""
        head = Head(input_channels, num_classes, mae_decoder, deep_supervision)
        return self.network(model, patch_size, head)

    @abstractmethod
    def network(self, model: Any, patch_size: Grid, head: Head) -> nn.Module:
        """What :meth:`build` builds: the architecture's own network for ``head``."""

    @staticmethod
    def sizes(model: Any, *keys: str) -> dict[str, Any]:
        """The size keys of ``model`` among ``keys`` that it sets (None: the paper's size)."""
        return {key: getattr(model, key) for key in keys if getattr(model, key) is not None}

    def adaptation_keys(self) -> dict[str, Any]:
        """Where the encoder, the stem, the input projection and the learned position embedding
        sit in the network's own state dict."""
        cls: Any = self.network_class
        return {
            "key_to_encoder": cls.key_to_encoder,
            "key_to_stem": cls.key_to_stem,
            "keys_to_in_proj": list(cls.keys_to_in_proj),
            "key_to_lpe": cls.key_to_lpe,
        }

    # -- sizes ---------------------------------------------------------------------------

    @abstractmethod
    def multiple(self, model: Any) -> int:
        """What every edge of a crop or a view must be a multiple of."""

    @abstractmethod
    def describe(self, model: Any) -> str:
        """The architecture at ``model``'s size, for messages ("ResEnc with 4 stages")."""

    def check_size(self, model: Any, size: Grid, what: str) -> None:
        """A ``ConfigError`` naming ``what`` unless the network can take inputs of ``size``."""
        step = self.multiple(model)
        if any(n % step for n in size):
            raise ConfigError(f"{what} {size}: {self.describe(model)} needs multiples of {step}")

    def check_pooled_size(self, model: Any, size: Grid, what: str) -> None:
        """:meth:`check_size`, for inputs whose deepest features are pooled into one vector."""
        self.check_size(model, size, what)

    @abstractmethod
    def mask_cell(self, block_size: int) -> Grid:
        """The voxels one cell of a masked-image method's mask covers (``block_size``: the
        method's cube edge, where the architecture has no cells of its own)."""

    @abstractmethod
    def position_grid(self, patch_size: Grid) -> Grid | None:
        """The grid of the learned position embedding for inputs of ``patch_size`` (None:
        the architecture has none)."""

    # -- encoder features ----------------------------------------------------------------

    @abstractmethod
    def encode(self, network: nn.Module, x: Tensor) -> Any:
        """The encoder's output on ``x`` (every position visible), as :meth:`pool` and
        :meth:`decode` take it."""

    @abstractmethod
    def pool(self, encoded: Any, stages: Stages = "deepest") -> Tensor:
        """(B, C) of an encoder's output, averaged over space."""

    @abstractmethod
    def decode(self, network: nn.Module, encoded: Any) -> Tensor:
        """The network's full-resolution output from its encoder's output."""

    @abstractmethod
    def feature_dim(self, network: nn.Module, stages: Stages = "deepest") -> int:
        """Channels of :meth:`pooled_features`."""

    def pooled_features(self, network: nn.Module, x: Tensor, stages: Stages = "deepest") -> Tensor:
        """(B, feature_dim): the pooled encoder output on ``x``."""
        return self.pool(self.encode(network, x), stages)

    @abstractmethod
    def deepest_features(self, module: nn.Module, x: Tensor) -> Tensor:
        """(B, C, N): the deepest features at each of the N positions, computed by the
        :attr:`encoder_parts` of ``module`` (the network, or a classifier holding them)."""

    def encoder_modules(self, network: nn.Module) -> list[nn.Module]:
        """The network's :attr:`encoder_parts`."""
        return [network.get_submodule(part) for part in self.encoder_parts]

    # -- the paper's optimisation ----------------------------------------------------------

    @abstractmethod
    def pretrain_defaults(self) -> dict[str, dict[str, Any]]:
        """Config sections of the paper's (nnssl's) pretraining run, under what a file says."""

    @abstractmethod
    def finetune_defaults(self, pretrained: bool) -> dict[str, dict[str, Any]]:
        """Config sections of the paper's fine-tuning, from a checkpoint or from scratch."""

    def __repr__(self) -> str:
        return f"<backbone {self.name}>"

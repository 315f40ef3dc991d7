"""The pretraining architectures as adapters (``base.Backbone``), registered by the name
configs give them (``model.architecture``).

========= ============================================================================
name      architecture
========= ============================================================================
resenc_l  ResEnc-L: nnU-Net's residual-encoder U-Net (CNN; masks hide voxel cubes)
primus_m  Primus-M: an EVA-style 3D vision transformer (tokens of 8^3 voxels)
========= ============================================================================

Adding one: a module here with a ``Backbone`` subclass and its instance, and a line in
:data:`BACKBONES`. The conformance test (``tests/test_backbones.py``) runs every registered
adapter through the same contract.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from openmind_data.errors import ConfigError

if TYPE_CHECKING:
    from torch import nn

    from openmind_ssl.backbones.base import Backbone

__all__ = [
    "BACKBONES",
    "DEFAULT_ARCHITECTURE",
    "backbone_of",
    "check_architecture",
    "get_backbone",
    "known_as",
    "network_classes",
]

#: name -> "module:instance" under openmind_ssl.backbones, imported when a run asks for it.
BACKBONES = {
    "resenc_l": "resenc:RESENC",
    "primus_m": "primus:PRIMUS",
}

#: The architecture a config without ``model.architecture`` trains.
DEFAULT_ARCHITECTURE = "resenc_l"


def check_architecture(name: str) -> None:
    """A ``ConfigError`` listing the registered names unless ``name`` is one."""
    if name not in BACKBONES:
        raise ConfigError(f"model.architecture must be one of {', '.join(BACKBONES)}, not {name!r}")


def get_backbone(name: str) -> Backbone:
    """The adapter registered as ``name``."""
    check_architecture(name)
    module, _, attribute = BACKBONES[name].partition(":")
    found: Backbone = getattr(importlib.import_module(f"{__name__}.{module}"), attribute)
    return found


def backbone_of(network: nn.Module) -> Backbone:
    """The adapter of ``network`` (a registered architecture's network class)."""
    for name in BACKBONES:
        backbone = get_backbone(name)
        if isinstance(network, backbone.network_class):
            return backbone
    raise TypeError(f"{type(network).__name__} is no registered backbone ({', '.join(BACKBONES)})")


def known_as(name: str | None) -> str | None:
    """Our name of the architecture a checkpoint calls ``name`` (ours, or nnssl's class name);
    None when no registered adapter answers to it."""
    for registered in BACKBONES:
        if name == registered or name in get_backbone(registered).aliases:
            return registered
    return None


def network_classes() -> tuple[type[nn.Module], ...]:
    """The network class of every registered adapter."""
    return tuple(get_backbone(name).network_class for name in BACKBONES)

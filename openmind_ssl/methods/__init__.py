"""SSL methods: each builds its network and turns a batch into a loss (``base.Method``).

============== ===================================== ==========================================
name           ResEnc-L                              Primus-M
============== ===================================== ==========================================
mae            masked 16^3 cubes set to 0            true MAE: the encoder sees visible tokens
simmim         S3D/SparK: sparse masked convolutions SimMIM: mask tokens through the encoder
models_genesis ModelsGenesis: restore a distorted crop (both)
volume_fusion  VolumeFusion: segment the fusion weights of two crops (both)
simclr         SimCLR: NT-Xent over two overlapping views, negatives from every rank (both)
voco           VoCo: predict base/target crop overlaps, with a momentum teacher (both)
swin_unetr     SwinUNETR-style: inpainting + rotation + contrastive (both)
============== ===================================== ==========================================
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from openmind_ssl.methods.base import Batch, Loss, Method, NoOptions

if TYPE_CHECKING:
    from openmind_ssl.train.config import PretrainConfig

__all__ = ["METHODS", "Batch", "Loss", "Method", "NoOptions", "make_method", "method_class"]

#: name -> "module:class" under openmind_ssl.methods, imported when a run asks for it.
METHODS = {
    "mae": "mae:MAE",
    "simmim": "simmim:SimMIM",
    "models_genesis": "models_genesis:ModelsGenesis",
    "volume_fusion": "volume_fusion:VolumeFusion",
    "simclr": "simclr:SimCLR",
    "voco": "voco:VoCo",
    "swin_unetr": "swin_unetr:SwinUNETR",
}


def method_class(name: str) -> type[Method]:
    module, _, cls = METHODS[name].partition(":")
    found: type[Method] = getattr(importlib.import_module(f"openmind_ssl.methods.{module}"), cls)
    return found


def make_method(config: PretrainConfig) -> Method:
    """The method ``config.method.name`` names, set up for the config's model and crops."""
    return method_class(config.method.name)(config)

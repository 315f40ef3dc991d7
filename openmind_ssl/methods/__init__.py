"""SSL methods: each builds its network and turns a batch into a loss (``base.Method``)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from openmind_ssl.methods.base import Batch, Loss, Method

if TYPE_CHECKING:
    from openmind_ssl.train.config import PretrainConfig

__all__ = ["Batch", "Loss", "Method", "make_method"]


def make_method(config: PretrainConfig) -> Method:
    """The method ``config.method.name`` names, set up for the config's model and crops."""
    from openmind_ssl.methods.mae import MAE  # noqa: PLC0415 (mae imports the models)

    methods = {"mae": MAE}
    return methods[config.method.name](config.method, config.model, config.train.patch_size)

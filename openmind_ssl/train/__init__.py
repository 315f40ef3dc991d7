"""Pretraining: the run's config, the loop under torchrun, checkpoints and the metrics log."""

from openmind_ssl.train.config import (
    DataConfig,
    MethodConfig,
    ModelConfig,
    OptimConfig,
    PretrainConfig,
    TrainConfig,
    load_config,
    to_dict,
)

__all__ = [
    "DataConfig",
    "MethodConfig",
    "ModelConfig",
    "OptimConfig",
    "PretrainConfig",
    "TrainConfig",
    "load_config",
    "to_dict",
]

"""A fine-tuning run as one frozen dataclass, read from a YAML file.

::

    pretrained: runs/mae/final.pt     # null: train from scratch
    task:     {kind: segmentation, path: data/Dataset101_Lesions}
    schedule: {name: sawtooth, epochs: 150}
    train:    {steps_per_epoch: 250, batch_size: 2, patch_size: [160, 160, 160], out: runs/ft}

Omitted keys take the paper's values for the architecture (its adapter's
``Backbone.finetune_defaults``): ResEnc-L fine-tunes with SGD at 1e-3 (momentum 0.99, Nesterov,
weight decay 3e-5, clip 12), Primus-M with AdamW at 1e-4 (weight decay 5e-2, clip 1) and a
decoder-only learning rate of 1e-6 (x0.01) in Sawtooth's first stages. From scratch, nnU-Net's
rates: 1e-2 and 3e-4. The ``model`` section defaults to
the checkpoint's own pretraining model (its architecture and size), so a checkpoint needs only
its path. ``--set schedule.epochs=1000`` overrides a key; ``epochs`` 150 and 1000 are the
paper's two presets (their stage lengths: :func:`openmind_ssl.finetune.schedules.stage_epochs`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from openmind_data.errors import ConfigError
from openmind_ssl.backbones import get_backbone
from openmind_ssl.finetune.schedules import SCHEDULES
from openmind_ssl.train import checkpoint
from openmind_ssl.train.config import ModelConfig, OptimizerConfig, parse_dataclass, read_yaml

__all__ = [
    "RESUMABLE_CHANGES",
    "EvaluationConfig",
    "FinetuneConfig",
    "FinetuneTrain",
    "ScheduleConfig",
    "TaskConfig",
    "checkpoint_model",
    "finetune_config",
    "load_finetune_config",
]


def _check(condition: bool, message: str) -> None:
    if not condition:
        raise ConfigError(message)


@dataclass(frozen=True)
class TaskConfig:
    """The downstream dataset: a segmentation folder (Decathlon or nnU-Net raw layout) or a
    classification CSV table."""

    kind: Literal["segmentation", "classification"] = "segmentation"
    path: str = ""
    image_columns: tuple[str, ...] = ("image",)  # classification: one column per channel
    label_column: str = "label"
    spacing: float = 1.0  # mm, isotropic, as in pretraining
    val_fraction: float = 0.2  # held out for the evaluation
    oversample: float = 1 / 3  # segmentation patches centred on foreground
    cache: str | None = None  # preprocessed cases (None: OUT/preprocessed); runs may share one

    def __post_init__(self) -> None:
        _check(bool(self.path), "task.path is required")
        _check(self.spacing > 0, "task.spacing must be positive")
        _check(0 <= self.oversample <= 1, "task.oversample must lie in [0, 1]")


@dataclass(frozen=True)
class ScheduleConfig:
    name: str = "default"  # one of schedules.SCHEDULES
    epochs: int = 150
    decoder_epochs: int | None = None  # None: stage_epochs(epochs)
    warmup_epochs: int | None = None
    decoder_lr_factor: float = 1.0

    def __post_init__(self) -> None:
        _check(
            self.name in SCHEDULES,
            f"schedule.name must be one of {', '.join(SCHEDULES)}, not {self.name!r}",
        )
        _check(self.epochs > 0, "schedule.epochs must be positive")


@dataclass(frozen=True)
class FinetuneTrain:
    steps_per_epoch: int = 250
    batch_size: int = 2
    patch_size: tuple[int, int, int] = (160, 160, 160)
    amp: Literal["bf16", "fp16", "none"] = "bf16"  # autocast on CUDA; CPU runs in fp32
    seed: int = 0
    workers: int = 2  # DataLoader worker processes
    augment: bool = True
    deep_supervision: bool = True  # ResEnc-L segmentation: a loss at every decoder stage
    out: str = "runs/finetune"
    progress: bool = True

    def __post_init__(self) -> None:
        _check(self.steps_per_epoch > 0, "train.steps_per_epoch must be positive")
        _check(self.batch_size > 0, "train.batch_size must be positive")
        _check(self.workers >= 0, "train.workers must be >= 0")


@dataclass(frozen=True)
class EvaluationConfig:
    """Sliding-window inference (MONAI) over the held-out cases."""

    overlap: float = 0.5
    sw_batch_size: int = 2
    mode: Literal["gaussian", "constant"] = "gaussian"

    def __post_init__(self) -> None:
        _check(0 <= self.overlap < 1, "evaluation.overlap must lie in [0, 1)")


@dataclass(frozen=True)
class FinetuneConfig:
    task: TaskConfig
    pretrained: str | None = None
    model: ModelConfig = field(default_factory=ModelConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    optim: OptimizerConfig = field(default_factory=lambda: OptimizerConfig(lr=1e-3))
    train: FinetuneTrain = field(default_factory=FinetuneTrain)
    evaluation: EvaluationConfig = field(default_factory=EvaluationConfig)

    def __post_init__(self) -> None:
        backbone = get_backbone(self.model.architecture)
        backbone.check_size(self.model, self.train.patch_size, "train.patch_size")


def load_finetune_config(path: str | Path, overrides: Sequence[str] = ()) -> FinetuneConfig:
    """The run the YAML file at ``path`` describes, with ``overrides`` (``section.key=value``)."""
    return finetune_config(read_yaml(path, overrides), str(path))


def finetune_config(raw: dict[str, Any], where: str = "config") -> FinetuneConfig:
    """A ``FinetuneConfig`` from nested mappings: the checkpoint's model and the
    architecture's defaults under what ``raw`` says."""
    _check(isinstance(raw.get("task"), dict), f"{where}: a task section is required")
    model: dict[str, Any] = {}
    pretrained = raw.get("pretrained")
    if pretrained is not None:
        model.update(checkpoint_model(Path(str(pretrained)), where))
    given = raw.get("model") or {}
    _check(isinstance(given, dict), f"{where}: model must be a mapping")
    model.update(given)
    architecture = str(model.get("architecture", ModelConfig.architecture))
    try:
        base = get_backbone(architecture).finetune_defaults(pretrained=pretrained is not None)
    except ConfigError as error:
        raise ConfigError(f"{where}: {error}") from None
    merged: dict[str, Any] = {section: dict(values) for section, values in base.items()}
    for section, values in raw.items():
        if isinstance(values, dict):
            merged.setdefault(section, {}).update(values)
        else:
            merged[section] = values
    merged["model"] = model
    config: FinetuneConfig = parse_dataclass(FinetuneConfig, merged, where)
    return config


def checkpoint_model(path: Path, where: str) -> dict[str, Any]:
    """The model section of our checkpoint's pretraining config (empty for others)."""
    try:
        payload = checkpoint.read(path, mmap=True)
    except ConfigError as error:
        raise ConfigError(f"{where}: pretrained {error}") from error
    if isinstance(payload, dict) and payload.get("format") == checkpoint.FORMAT:
        model = dict(payload["config"]["model"])
        model.pop("decoder_depth", None)  # the MAE decoder does not carry over
        return model
    return {}


#: Keys a run may change on resume (or a benchmark on read-back) without changing what it
#: computes.
RESUMABLE_CHANGES = {
    ("train", "progress"),
    ("train", "workers"),
    ("train", "out"),
    ("task", "cache"),
}

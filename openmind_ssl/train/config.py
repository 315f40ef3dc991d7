"""A pretraining run as one frozen dataclass, read from a YAML file.

::

    data:   {source: openmind, modalities: [T1w, T2w], max_iqs: 3.0, cache: openmind-cache}
    model:  {architecture: resenc_l}
    method: {name: mae, anon_aware: true, options: {mask_ratio: 0.75}}
    optim:  {name: sgd, lr: 0.01}
    train:  {epochs: 1000, steps_per_epoch: 250, batch_size: 2, out: runs/mae}

Every section and key is optional and defaults to the paper's run for the architecture (its
adapter's ``Backbone.pretrain_defaults``, ``openmind_ssl.backbones``); a method's own settings
sit under ``method.options`` (its ``Options`` dataclass checks them; ``method.mask_ratio`` and
``method.block_size``, where configs kept them before, are read into it); an
unknown key, a wrong type or an impossible value is a ``ConfigError`` naming the file and the
key. ``--set train.epochs=10`` overrides a key from the command line. The resolved config (every
default filled in) is saved beside each checkpoint and read back on resume.
"""

from __future__ import annotations

import dataclasses
import logging
import types
import typing
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, get_args, get_origin

import yaml

from openmind_data.errors import ConfigError
from openmind_ssl.backbones import DEFAULT_ARCHITECTURE, check_architecture, get_backbone
from openmind_ssl.methods import METHODS, method_class

__all__ = [
    "DataConfig",
    "MethodConfig",
    "ModelConfig",
    "OptimConfig",
    "OptimizerConfig",
    "PretrainConfig",
    "TrainConfig",
    "build_options",
    "check_same_run",
    "load_config",
    "parse_dataclass",
    "read_yaml",
    "to_dict",
]

log = logging.getLogger(__name__)

#: Keys that sat directly under ``method`` before they moved into the masked-image methods'
#: ``method.options``; a config that has them there still loads the same way.
MOVED_TO_OPTIONS = ("mask_ratio", "block_size")


def _check(condition: bool, message: str) -> None:
    if not condition:
        raise ConfigError(message)


@dataclass(frozen=True)
class DataConfig:
    """What to stream (``openmind_ssl.data.StreamOptions``) and how many loader workers."""

    source: str = "openmind"  # a dataset folder, ORG/NAME or hf://datasets/ORG/NAME[@REVISION]
    modalities: tuple[str, ...] | None = None
    split: str = "train"
    max_iqs: float | None = None
    licenses: tuple[str, ...] | None = None
    dataset_ids: tuple[str, ...] | None = None
    spacing: float = 1.0  # mm, isotropic
    crops_per_volume: int = 4
    shuffle_buffer: int = 16
    cache: str | None = None  # a VolumeCache root
    augment: bool = True
    workers: int = 4  # DataLoader workers per rank
    max_failures: int = 10

    def __post_init__(self) -> None:
        _check(self.spacing > 0, "data.spacing must be positive")
        _check(self.workers >= 0, "data.workers must be >= 0")


@dataclass(frozen=True)
class ModelConfig:
    """The architecture at its paper size; the size keys shrink it (tests, quick trials)."""

    architecture: str = DEFAULT_ARCHITECTURE  # a name in openmind_ssl.backbones.BACKBONES
    features_per_stage: tuple[int, ...] | None = None  # ResEnc-L: (32, 64, 128, 256, 320, 320)
    blocks_per_stage: tuple[int, ...] | None = None  # ResEnc-L: (1, 3, 4, 6, 6, 6)
    embed_dim: int | None = None  # Primus-M: 864
    depth: int | None = None  # Primus-M: 16
    num_heads: int | None = None  # Primus-M: 12
    decoder_depth: int = 2  # Primus MAE: transformer blocks after the mask tokens are restored
    drop_path_rate: float = 0.2  # Primus only

    def __post_init__(self) -> None:
        check_architecture(self.architecture)


@dataclass(frozen=True)
class MethodConfig:
    """The method, what its loss may see of a defaced image, and ``options``: the method's own
    settings (its ``Options`` dataclass checks them)."""

    name: str = "mae"  # a name in openmind_ssl.methods.METHODS
    anon_aware: bool = False  # voxels inside the anonymization mask neither seen nor scored
    anatomy_only: bool = False  # score only voxels inside the anatomy mask
    options: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        _check(
            self.name in METHODS,
            f"method.name must be one of {', '.join(METHODS)}, not {self.name!r}",
        )


@dataclass(frozen=True)
class OptimizerConfig:
    """An optimizer: SGD (momentum, Nesterov) or AdamW, weight decay, gradient clipping."""

    name: Literal["sgd", "adamw"] = "sgd"
    lr: float = 1e-2
    momentum: float = 0.99  # SGD
    nesterov: bool = True  # SGD
    weight_decay: float = 3e-5
    betas: tuple[float, float] = (0.9, 0.98)  # AdamW
    grad_clip: float = 12.0  # max gradient norm; 0 turns clipping off

    def __post_init__(self) -> None:
        _check(self.lr > 0, "optim.lr must be positive")


@dataclass(frozen=True)
class OptimConfig(OptimizerConfig):
    """Pretraining's optimizer and learning rate: linear warm-up, then polynomial decay to 0."""

    warmup_epochs: int = 0
    poly_exponent: float = 0.9

    def __post_init__(self) -> None:
        super().__post_init__()
        _check(self.warmup_epochs >= 0, "optim.warmup_epochs must be >= 0")


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = 1000
    steps_per_epoch: int = 250
    batch_size: int = 2  # global: split evenly across the DDP ranks
    patch_size: tuple[int, int, int] = (160, 160, 160)
    amp: Literal["bf16", "fp16", "none"] = "bf16"  # autocast dtype on CUDA; CPU runs in fp32
    compile: bool = False
    checkpoint_every: int = 10  # epochs between "latest" checkpoints (and on a stop signal)
    seed: int = 0
    out: str = "runs/pretrain"
    metrics: Literal["csv", "tensorboard"] = "csv"
    progress: bool = True

    def __post_init__(self) -> None:
        _check(self.epochs > 0 and self.steps_per_epoch > 0, "train.epochs/steps_per_epoch > 0")
        _check(self.batch_size > 0, "train.batch_size must be positive")
        _check(self.checkpoint_every > 0, "train.checkpoint_every must be positive")

    @property
    def total_steps(self) -> int:
        return self.epochs * self.steps_per_epoch


@dataclass(frozen=True)
class PretrainConfig:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    method: MethodConfig = field(default_factory=MethodConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def __post_init__(self) -> None:
        backbone = get_backbone(self.model.architecture)
        backbone.check_size(self.model, self.train.patch_size, "train.patch_size")


def load_config(path: str | Path | None = None, overrides: Sequence[str] = ()) -> PretrainConfig:
    """The run described by the YAML file at ``path`` (None: all defaults), with ``overrides``
    of the form ``section.key=value`` (the value parsed as YAML) applied last."""
    where = str(path) if path is not None else "the defaults"
    return from_dict(read_yaml(path, overrides), where)


def from_dict(raw: Mapping[str, Any], where: str = "config") -> PretrainConfig:
    """A ``PretrainConfig`` from nested mappings (a loaded YAML file, or ``to_dict``'s output):
    the architecture's paper defaults under what ``raw`` says."""
    model = raw.get("model") or {}
    _check(isinstance(model, Mapping), f"{where}: model must be a mapping")
    architecture = str(model.get("architecture", ModelConfig.architecture))
    try:
        defaults = get_backbone(architecture).pretrain_defaults()
    except ConfigError as error:
        raise ConfigError(f"{where}: {error}") from None
    merged: dict[str, Any] = {key: dict(value) for key, value in defaults.items()}
    for section, values in raw.items():
        _check(isinstance(values, Mapping), f"{where}: {section} must be a mapping")
        merged.setdefault(section, {}).update(values)
    if "method" in merged:
        merged["method"] = _options_moved(merged["method"], where)
    try:
        return typing.cast(PretrainConfig, _build(PretrainConfig, merged, where, ""))
    except ConfigError as error:
        message = str(error)
        raise ConfigError(message if message.startswith(where) else f"{where}: {message}") from None


def _options_moved(method: dict[str, Any], where: str) -> dict[str, Any]:
    """``method`` with the keys of :data:`MOVED_TO_OPTIONS` moved into its ``options`` (which
    win where both say), for a method whose ``Options`` has them; another method never read
    them, and they are dropped with a warning."""
    moved = {key: method.pop(key) for key in MOVED_TO_OPTIONS if key in method}
    name = method.get("name", MethodConfig.name)
    if not moved or name not in METHODS:
        return method
    known = {f.name for f in dataclasses.fields(method_class(name).Options)}
    options = method.get("options") or {}
    _check(isinstance(options, Mapping), f"{where}: method.options must be a mapping")
    method["options"] = {key: value for key, value in moved.items() if key in known} | dict(options)
    ignored = sorted(set(moved) - known)
    if ignored:
        log.warning("%s: method %s has no %s; ignored", where, name, ", ".join(ignored))
    return method


def to_dict(config: Any) -> dict[str, Any]:
    """A config dataclass (pretraining's or fine-tuning's) as plain nested dicts and lists, for
    YAML and checkpoints."""

    def plain(value: Any) -> Any:
        if isinstance(value, tuple | list):
            return [plain(v) for v in value]
        if isinstance(value, dict):
            return {k: plain(v) for k, v in value.items()}
        return value

    result: dict[str, Any] = plain(dataclasses.asdict(config))
    return result


def check_same_run(
    saved: Mapping[str, Any],
    current: Mapping[str, Any],
    path: Path,
    resumable: Collection[tuple[str, str]] = (),
) -> None:
    """Refuse to continue the run in ``path`` (its config ``saved``, as ``to_dict`` gives it)
    with another config ``current``: a ``ConfigError`` listing each key that differs, old and
    new value. ``resumable`` (section, key) pairs do not change what a run computes (the
    progress bar, the output folder) and may differ; a top-level key is (key, "")."""

    def flat(config: Mapping[str, Any]) -> dict[tuple[str, str], Any]:
        return {
            (section, key): value
            for section, values in config.items()
            for key, value in (values.items() if isinstance(values, Mapping) else [("", values)])
        }

    before, now = flat(saved), flat(current)
    changed = [
        f"{section}.{key}: {before.get((section, key))!r} -> {value!r}"
        if key
        else f"{section}: {before.get((section, key))!r} -> {value!r}"
        for (section, key), value in now.items()
        if (section, key) not in resumable and before.get((section, key)) != value
    ]
    if changed:
        raise ConfigError(
            f"{path} belongs to another run ({'; '.join(changed)}); use another train.out, or"
            " delete it to start over"
        )


def read_yaml(path: str | Path | None, overrides: Sequence[str] = ()) -> dict[str, Any]:
    """The mapping in the YAML file at ``path`` (None: empty), with ``overrides`` of the form
    ``section.key=value`` (the value parsed as YAML; ``key=value`` for a top-level key)."""
    raw: dict[str, Any] = {}
    if path is not None:
        try:
            loaded = yaml.safe_load(Path(path).read_text())
        except (OSError, yaml.YAMLError) as error:
            raise ConfigError(f"{path}: cannot read the config: {error}") from error
        _check(loaded is None or isinstance(loaded, dict), f"{path}: must be a mapping")
        raw = dict(loaded or {})
    for override in overrides:
        key, sep, value = override.partition("=")
        _check(bool(sep and key.strip()), f"--set {override!r}: use section.key=value")
        *sections, name = key.strip().split(".")
        node = raw
        for section in sections:
            node = node.setdefault(section, {})
            _check(isinstance(node, dict), f"{path or 'config'}: {section} must be a mapping")
        node[name] = yaml.safe_load(value)
    return raw


def parse_dataclass(cls: type[Any], values: Mapping[str, Any], where: str) -> Any:
    """A (nested) frozen dataclass from plain mappings, every key and type checked; errors are
    ``ConfigError`` naming ``where`` and the dotted key."""
    try:
        return _build(cls, values, where, "")
    except ConfigError as error:
        message = str(error)
        raise ConfigError(message if message.startswith(where) else f"{where}: {message}") from None


def build_options(cls: type[Any], values: Mapping[str, Any], where: str) -> Any:
    """A method's ``Options`` dataclass from ``method.options``, checked as the config is."""
    return _build(cls, values, where, f"{where}.")


def _build(cls: type[Any], values: Mapping[str, Any], where: str, prefix: str) -> Any:
    hints = typing.get_type_hints(cls)
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - known)
    _check(
        not unknown,
        f"{where}: unknown key {prefix}{unknown[0]} (known: {', '.join(sorted(known))})"
        if unknown
        else "",
    )
    kwargs = {}
    for name, value in values.items():
        kind = hints[name]
        if dataclasses.is_dataclass(kind):
            _check(isinstance(value, Mapping), f"{where}: {prefix}{name} must be a mapping")
            kwargs[name] = _build(typing.cast(type, kind), value, where, f"{prefix}{name}.")
        else:
            kwargs[name] = _coerce(value, kind, f"{where}: {prefix}{name}")
    return cls(**kwargs)


def _coerce(value: Any, kind: Any, what: str) -> Any:
    """``value`` as the annotated type ``kind``: lists become tuples, ints floats; anything
    else that does not fit is a ConfigError."""
    origin, args = get_origin(kind), get_args(kind)
    if origin in (types.UnionType, typing.Union):
        if value is None and type(None) in args:
            return None
        (inner,) = [a for a in args if a is not type(None)]
        return _coerce(value, inner, what)
    if origin is dict:
        _check(isinstance(value, Mapping), f"{what} must be a mapping, not {value!r}")
        return dict(value)
    if origin is Literal:
        _check(value in args, f"{what} must be one of {', '.join(map(repr, args))}, not {value!r}")
        return value
    if origin is tuple:
        _check(isinstance(value, list | tuple), f"{what} must be a list, not {value!r}")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_coerce(v, args[0], what) for v in value)
        _check(len(value) == len(args), f"{what} must have {len(args)} entries")
        return tuple(_coerce(v, a, what) for v, a in zip(value, args, strict=True))
    if kind is float and isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if kind is float and isinstance(value, str):  # YAML reads 3e-4 as a string
        try:
            return float(value)
        except ValueError:
            pass
    _check(
        isinstance(value, kind) and not (kind is int and isinstance(value, bool)),
        f"{what} must be {kind.__name__}, not {value!r}",
    )
    return value

"""Pretrained weights onto a downstream network: the encoder and the stem, through the key map.

Three kinds of checkpoint are read:

- ours (``openmind-ssl pretrain``): the model's state dict with the adaptation keys of its
  backbone (``key_to_encoder``, ``key_to_stem``, ``keys_to_in_proj``, ``key_to_lpe``, prefixed
  where a method wraps the backbone) and the pretraining config;
- nnssl's: ``network_weights`` and ``nnssl_adaptation_plan``, which holds the same four keys;
- a bare ``dynamic_network_architectures`` state dict (or ``{"state_dict": ...}``): its keys
  are taken to be the architecture's own.

Each tensor under the checkpoint's encoder and stem keys is copied onto the same suffix under
the downstream network's. Two may differ in shape, and are adapted:

- the input projection (``keys_to_in_proj``), when the downstream task has more or fewer input
  channels: its weights are repeated over the new channels and scaled by old/new channels, so an
  input whose channels are all equal gives the pretrained activations;
- Primus's learned position embedding (``key_to_lpe``), when the downstream patch has another
  token grid: interpolated trilinearly from the pretraining grid.

Any other missing tensor or shape mismatch is an error naming the checkpoint and the key;
nothing is loaded silently wrong. What was loaded, adapted and left fresh is reported.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn import functional

from openmind_data.errors import ConfigError
from openmind_ssl.backbones import get_backbone, known_as
from openmind_ssl.backbones.base import ADAPTATION_KEYS
from openmind_ssl.models.eva import Eva
from openmind_ssl.train import checkpoint

__all__ = ["LoadReport", "Pretrained", "load_pretrained", "read_pretrained"]


@dataclass(frozen=True)
class Pretrained:
    """A checkpoint's weights and where its encoder and stem are in them."""

    path: Path
    weights: dict[str, Tensor]
    keys: dict[str, Any]  # key_to_encoder, key_to_stem, keys_to_in_proj, key_to_lpe
    architecture: str | None  # a registered backbone's name, when the checkpoint says
    model: dict[str, Any] = field(default_factory=dict)  # our pretraining config's model section
    token_grid: tuple[int, int, int] | None = None  # the position embedding's grid, when known


@dataclass
class LoadReport:
    loaded: list[str] = field(default_factory=list)
    adapted: dict[str, str] = field(default_factory=dict)  # key -> what was done
    fresh: int = 0  # parameters of the downstream network the checkpoint did not provide

    def summary(self) -> str:
        adapted = "; ".join(f"{k}: {v}" for k, v in self.adapted.items()) or "none"
        return f"{len(self.loaded)} tensors loaded, adapted: {adapted}; {self.fresh} fresh params"


def read_pretrained(path: str | Path, architecture: str | None = None) -> Pretrained:
    """The checkpoint at ``path``; ``architecture`` is needed for a bare state dict."""
    path = Path(path)
    payload = checkpoint.read(path)
    if not isinstance(payload, dict):
        raise ConfigError(f"{path}: a checkpoint is a dict, not {type(payload).__name__}")
    if payload.get("format") == checkpoint.FORMAT:
        arch = payload["architecture"]
        keys = {k: arch[k] for k in ADAPTATION_KEYS}
        patch = arch["patch_size"]
        grid = get_backbone(arch["name"]).position_grid((patch[0], patch[1], patch[2]))
        model = dict(payload["config"]["model"])
        return Pretrained(path, payload["model"], keys, arch["name"], model, grid)
    if "network_weights" in payload and "nnssl_adaptation_plan" in payload:
        plan = payload["nnssl_adaptation_plan"]
        name = plan.get("architecture_plans", {}).get("arch_class_name")
        keys = {k: plan.get(k) for k in ADAPTATION_KEYS}
        return Pretrained(path, _unwrap(payload["network_weights"]), keys, known_as(name))
    weights = payload.get("state_dict", payload)
    if not all(isinstance(v, Tensor) for v in weights.values()):
        raise ConfigError(
            f"{path}: neither an openmind-ssl nor an nnssl checkpoint, nor a state dict"
        )
    if architecture is None:
        raise ConfigError(f"{path}: a bare state dict; say its model.architecture")
    keys = get_backbone(architecture).adaptation_keys()
    return Pretrained(path, _unwrap(weights), keys, architecture)


def _unwrap(weights: dict[str, Tensor]) -> dict[str, Tensor]:
    """Keys without DDP's ``module.`` and torch.compile's ``_orig_mod.`` prefixes."""
    out = {}
    for key, value in weights.items():
        name = key
        for prefix in ("module.", "_orig_mod."):
            name = name.removeprefix(prefix)
        out[name] = value
    return out


def load_pretrained(network: nn.Module, pretrained: Pretrained, architecture: str) -> LoadReport:
    """Copy ``pretrained``'s encoder and stem onto ``network`` (an ``architecture`` network
    from :func:`openmind_ssl.finetune.networks.build_downstream`)."""
    if pretrained.architecture is not None and pretrained.architecture != architecture:
        raise ConfigError(
            f"{pretrained.path}: a {pretrained.architecture} checkpoint cannot initialise a"
            f" {architecture} network"
        )
    source, target = pretrained.keys, get_backbone(architecture).adaptation_keys()
    if not source.get("key_to_encoder"):
        raise ConfigError(f"{pretrained.path}: the checkpoint does not say where its encoder is")
    pairs = [(source["key_to_encoder"], target["key_to_encoder"])]
    if source.get("key_to_stem") and target["key_to_stem"]:
        pairs.append((source["key_to_stem"], target["key_to_stem"]))
    in_proj = {f"{key}.weight" for key in target["keys_to_in_proj"]}
    lpe = target["key_to_lpe"]
    state = network.state_dict()
    report = LoadReport()
    loaded_storage: set[int] = set()
    missing = []
    for target_key, tensor in state.items():
        match = next(
            ((s, t) for s, t in pairs if target_key.startswith(f"{t}.") or target_key == t), None
        )
        if match is None:
            continue
        source_key = match[0] + target_key[len(match[1]) :]
        if source_key not in pretrained.weights:
            missing.append(source_key)
            continue
        value = pretrained.weights[source_key].to(tensor.dtype)
        if value.shape != tensor.shape:
            if target_key in in_proj:
                value = _repeat_channels(value, tensor.shape[1])
                report.adapted[target_key] = f"input channels {value.shape[1]}"
            elif target_key == lpe:
                eva = network.get_submodule(lpe.rsplit(".", 1)[0])
                assert isinstance(eva, Eva)
                value = _interpolate_lpe(value, eva.grid, pretrained)
                report.adapted[target_key] = f"position embedding to {tensor.shape[1]} tokens"
            if value.shape != tensor.shape:
                raise ConfigError(
                    f"{pretrained.path}: {source_key} has shape {tuple(value.shape)}, the"
                    f" downstream {target_key} {tuple(tensor.shape)}"
                )
        with torch.no_grad():
            tensor.copy_(value)
        loaded_storage.add(tensor.data_ptr())
        report.loaded.append(target_key)
    if missing:
        raise ConfigError(
            f"{pretrained.path}: {len(missing)} encoder tensors missing, e.g. {missing[:3]}"
        )
    if not report.loaded:
        raise ConfigError(f"{pretrained.path}: nothing under {source['key_to_encoder']!r} to load")
    report.fresh = sum(
        p.numel() for p in network.parameters() if p.data_ptr() not in loaded_storage
    )
    return report


def _repeat_channels(weight: Tensor, channels: int) -> Tensor:
    """A conv weight (out, in, ...) for ``channels`` inputs: repeated, scaled by in/channels."""
    before = weight.shape[1]
    repeats = math.ceil(channels / before)
    repeated = weight.repeat(1, repeats, *([1] * (weight.ndim - 2)))[:, :channels]
    return repeated * (before / channels)


def _interpolate_lpe(
    embedding: Tensor, target: tuple[int, int, int], pretrained: Pretrained
) -> Tensor:
    """A (1, N, C) position embedding on the pretraining token grid, trilinearly resized to
    the downstream ``target`` grid. The pretraining grid is in our checkpoints; for others it
    must be a cube."""
    source = pretrained.token_grid or _cube(embedding.shape[1])
    if source is None or math.prod(source) != embedding.shape[1]:
        raise ConfigError(
            f"{pretrained.path}: cannot tell the token grid of the position embedding"
            f" ({embedding.shape[1]} tokens, not a cube)"
        )
    tokens = math.prod(target)
    channels = embedding.shape[2]
    volume = embedding.transpose(1, 2).reshape(1, channels, *source)
    resized = functional.interpolate(volume, size=target, mode="trilinear", align_corners=False)
    return resized.reshape(1, channels, tokens).transpose(1, 2)


def _cube(tokens: int) -> tuple[int, int, int] | None:
    side = round(tokens ** (1 / 3))
    return (side, side, side) if side**3 == tokens else None

"""Checkpoints: everything a run needs to continue exactly, written atomically.

``OUT/latest.pt`` (every ``checkpoint_every`` epochs and on a stop signal) and ``OUT/final.pt``
hold: the model (unwrapped from DDP and ``torch.compile``), optimizer, gradient scaler, step,
the stream's resume points, every rank's random states, the resolved config, and the
architecture's adaptation keys (``key_to_encoder``, ``key_to_stem``, ``keys_to_in_proj``,
``key_to_lpe``, as nnssl's adaptation plan names them) with its parameter count, so that
fine-tuning finds the encoder and the stem without knowing the method.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import torch

from openmind_data.errors import ConfigError

__all__ = ["FORMAT", "load", "random_state", "restore_random_state", "save"]

FORMAT = "openmind-ssl-checkpoint/1"


def save(path: Path, payload: dict[str, Any]) -> None:
    """Write ``payload`` to ``path`` through a hidden partial file and a rename."""
    partial = path.with_name(f".{path.name}.partial")
    torch.save({"format": FORMAT, **payload}, partial)
    partial.replace(path)


def load(path: Path) -> dict[str, Any]:
    payload: dict[str, Any] = torch.load(path, map_location="cpu", weights_only=False)
    if payload.get("format") != FORMAT:
        raise ConfigError(f"{path}: not an openmind-ssl checkpoint ({payload.get('format')!r})")
    return payload


def random_state() -> dict[str, Any]:
    """This process's global random generators (Python, torch CPU and CUDA: drop path and
    dropout draw from torch's). The toolkit's own draws use seeded generators, never NumPy's
    global one."""
    return {
        "python": random.getstate(),
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }


def restore_random_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])

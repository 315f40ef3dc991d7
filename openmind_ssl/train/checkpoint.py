"""Checkpoints: everything a run needs to continue exactly, written atomically and durably; the
one reader of checkpoint files (ours, nnssl's, bare state dicts) for the whole package.

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

from openmind_data.durable import write_with
from openmind_data.errors import ConfigError

__all__ = ["FORMAT", "load", "random_state", "read", "restore_random_state", "save"]

FORMAT = "openmind-ssl-checkpoint/1"


def save(path: Path, payload: dict[str, Any]) -> None:
    """Write ``payload`` to ``path`` whole (``openmind_data.durable``: a hidden partial file,
    flushed to disk, renamed over ``path``)."""
    write_with(path, lambda partial: torch.save({"format": FORMAT, **payload}, partial))


def read(path: Path, *, mmap: bool = False) -> Any:
    """Whatever ``torch.load`` finds in the file at ``path`` (ours, nnssl's, a bare state dict),
    on the CPU; ``mmap`` maps the tensors instead of reading them. A file that cannot be read
    is a ``ConfigError`` naming it."""
    try:
        return torch.load(path, map_location="cpu", weights_only=False, mmap=mmap)
    except (OSError, RuntimeError, EOFError) as error:
        raise ConfigError(f"{path}: cannot read the checkpoint: {error}") from error


def load(path: Path) -> dict[str, Any]:
    """Our checkpoint at ``path``; a ``ConfigError`` for any other file."""
    payload = read(path)
    found = payload.get("format") if isinstance(payload, dict) else type(payload).__name__
    if found != FORMAT:
        raise ConfigError(f"{path}: not an openmind-ssl checkpoint ({found!r})")
    checked: dict[str, Any] = payload
    return checked


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

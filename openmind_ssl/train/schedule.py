"""The learning rate per step: a linear warm-up from 0, then polynomial decay to 0 (nnU-Net's
``PolyLR``, exponent 0.9), both counted in optimizer steps."""

from __future__ import annotations

__all__ = ["learning_rate"]


def learning_rate(
    step: int, *, peak: float, warmup_steps: int, total_steps: int, exponent: float = 0.9
) -> float:
    """The rate for optimizer step ``step`` (0-based) of ``total_steps``."""
    if step < warmup_steps:
        return peak * (step + 1) / warmup_steps
    decay = max(1, total_steps - warmup_steps)
    done = min(step - warmup_steps, decay)
    return float(peak * (1 - done / decay) ** exponent)

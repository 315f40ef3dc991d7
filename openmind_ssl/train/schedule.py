"""The learning rate's two shapes, for pretraining and every fine-tuning schedule alike: a
linear warm-up to the peak, and polynomial decay from it to 0 (nnU-Net's ``PolyLR``, exponent
0.9). Pretraining runs one warm-up then one decay, counted in optimizer steps
(:func:`learning_rate`); a fine-tuning schedule is a run of such phases
(``openmind_ssl.finetune.schedules``)."""

from __future__ import annotations

__all__ = ["POLY_EXPONENT", "decay_rate", "learning_rate", "warmup_rate"]

#: nnU-Net's ``PolyLR`` exponent.
POLY_EXPONENT = 0.9


def warmup_rate(peak: float, done: float, length: float) -> float:
    """The rate ``done`` of ``length`` into a linear warm-up to ``peak`` (``done`` counts the
    step being taken, so the first rate is above 0 and the last is the peak)."""
    return peak * done / length


def decay_rate(peak: float, done: float, length: float, exponent: float = POLY_EXPONENT) -> float:
    """The rate ``done`` of ``length`` into a polynomial decay from ``peak`` to 0."""
    return float(peak * (1 - done / length) ** exponent)


def learning_rate(
    step: int, *, peak: float, warmup_steps: int, total_steps: int, exponent: float = POLY_EXPONENT
) -> float:
    """The rate for optimizer step ``step`` (0-based) of ``total_steps``."""
    if step < warmup_steps:
        return warmup_rate(peak, step + 1, warmup_steps)
    decay = max(1, total_steps - warmup_steps)
    return decay_rate(peak, min(step - warmup_steps, decay), decay, exponent)

"""The five fine-tuning schedules of the OpenMind paper: which parameter groups train in each
epoch, and the learning rate of each optimizer step.

A pretrained network has two parameter groups: ``"encoder"`` (what the checkpoint holds: the
encoder and its stem) and ``"decoder"`` (what is new: the U-Net decoder, Primus's
up-projection, a classification head). A schedule is a run of phases; each phase trains one
set of groups and either warms the rate up linearly to its peak or decays it polynomially
(exponent 0.9, nnU-Net's ``PolyLR``) from its peak to 0.

With E epochs, D decoder-stage epochs and W whole-network warm-up epochs (both default to
``stage_epochs(E)``: 15 at 150 epochs, 50 at 1000), the phases are, in epochs:

============  =====================================  =====================================
schedule      150 epochs (D = W = 15)                1000 epochs (D = W = 50)
============  =====================================  =====================================
default       whole decay 0-150                      whole decay 0-1000
frozen        decoder decay 0-150                    decoder decay 0-1000
warmup        whole warm-up 0-15, decay 15-150       whole warm-up 0-50, decay 50-1000
valley        decoder decay 0-15,                    decoder decay 0-50,
              whole warm-up 15-30, decay 30-150      whole warm-up 50-100, decay 100-1000
sawtooth      decoder warm-up 0-7, decay 7-15,       decoder warm-up 0-25, decay 25-50,
              whole warm-up 15-30, decay 30-150      whole warm-up 50-100, decay 100-1000
============  =====================================  =====================================

Sawtooth's decoder stage peaks at ``lr * decoder_lr_factor``: 1 for ResEnc-L, 0.01 for
Primus-M, whose freshly initialised up-projection collapses under the full rate. nnssl scales
only Sawtooth this way; its Primus Valley trains the decoder at the full rate, and so does
``make_schedule`` (the factor is ignored by every other schedule).

Where this differs from nnssl's trainers, on purpose:

* the rate changes every optimizer step (nnssl sets it once per epoch), so a 15-epoch warm-up
  rises smoothly instead of in 15 stairs;
* every warm-up ends at its peak. nnssl's whole-network warm-up after a decoder stage divides
  by D + W epochs instead of W, so it ends at W / (D + W) of the peak (a half) and jumps to the
  full rate when the decay starts; the paper describes a warm-up to the peak;
* nnssl's 150-epoch Primus-M trainers keep W = 50 and use a Sawtooth factor of 0.1; pass
  ``warmup_epochs=50, decoder_lr_factor=0.1`` to reproduce them.

Where the trainable set changes (decoder only, then the whole network) the trainer builds a
fresh optimizer, as nnssl does; inside one trainable set it keeps the optimizer and its
momentum (``Schedule.new_optimizer_at``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from openmind_data.errors import ConfigError
from openmind_ssl.backbones import BACKBONES, get_backbone
from openmind_ssl.train.schedule import decay_rate, warmup_rate

__all__ = [
    "GROUPS",
    "SCHEDULES",
    "TRANSFER_LR",
    "Phase",
    "Schedule",
    "make_schedule",
    "stage_epochs",
]

SCHEDULES: tuple[str, ...] = ("default", "frozen", "warmup", "valley", "sawtooth")

#: The peak fine-tuning rate per architecture (its adapter's ``transfer_lr``): ResEnc-L with
#: SGD, Primus-M with AdamW.
TRANSFER_LR: dict[str, float] = {name: get_backbone(name).transfer_lr for name in BACKBONES}

GROUPS = ("encoder", "decoder")

_WHOLE = frozenset(GROUPS)
_DECODER = frozenset({"decoder"})


@dataclass(frozen=True)
class Phase:
    """Epochs ``[start, end)`` training the groups in ``trains``: a linear warm-up to ``peak``
    or a polynomial decay from ``peak`` to 0."""

    name: str
    start: int
    end: int
    trains: frozenset[str]
    shape: Literal["warmup", "decay"]
    peak: float

    def __post_init__(self) -> None:
        if not 0 <= self.start < self.end:
            raise ConfigError(f"phase {self.name!r}: epochs [{self.start}, {self.end}) are empty")
        if not self.trains or not self.trains <= _WHOLE:
            raise ConfigError(
                f"phase {self.name!r}: trains {sorted(self.trains)} must be a non-empty subset"
                f" of {GROUPS}"
            )
        if self.shape not in ("warmup", "decay"):
            raise ConfigError(f"phase {self.name!r}: shape {self.shape!r} is not warmup or decay")
        if not self.peak > 0:
            raise ConfigError(f"phase {self.name!r}: peak learning rate {self.peak} must be > 0")

    def learning_rate(self, epoch: int, step: int, steps_per_epoch: int) -> float:
        """The rate at ``step`` of ``epoch`` (which lies in this phase)."""
        length = self.end - self.start
        if self.shape == "warmup":
            # Counting the step being taken (+1) keeps the first rate above 0 and puts the
            # peak on the phase's last step.
            done = (epoch - self.start) * steps_per_epoch + step + 1
            return warmup_rate(self.peak, done, length * steps_per_epoch)
        return decay_rate(self.peak, epoch - self.start + step / steps_per_epoch, length)


@dataclass(frozen=True)
class Schedule:
    """A named run of contiguous phases covering epochs ``[0, epochs)``."""

    name: str
    epochs: int
    phases: tuple[Phase, ...]

    def __post_init__(self) -> None:
        ends = [0, *(phase.end for phase in self.phases)]
        starts = [phase.start for phase in self.phases]
        if not self.phases or starts != ends[:-1] or ends[-1] != self.epochs:
            spans = ", ".join(f"[{p.start}, {p.end})" for p in self.phases)
            raise ConfigError(
                f"schedule {self.name!r}: phases {spans or '(none)'} do not cover epochs"
                f" [0, {self.epochs}) without gaps"
            )

    def phase(self, epoch: int) -> Phase:
        """The phase ``epoch`` belongs to; ValueError outside ``[0, epochs)``."""
        if not 0 <= epoch < self.epochs:
            raise ValueError(f"schedule {self.name!r}: epoch {epoch} is outside [0, {self.epochs})")
        return next(phase for phase in self.phases if epoch < phase.end)

    def trainable(self, epoch: int) -> frozenset[str]:
        """The parameter groups that train in ``epoch``; the others are frozen."""
        return self.phase(epoch).trains

    def learning_rate(self, epoch: int, step: int, steps_per_epoch: int) -> float:
        """The rate for optimizer step ``step`` (0-based) of ``steps_per_epoch`` in ``epoch``."""
        if not 0 <= step < steps_per_epoch:
            raise ValueError(
                f"schedule {self.name!r}: step {step} is outside [0, {steps_per_epoch})"
            )
        return self.phase(epoch).learning_rate(epoch, step, steps_per_epoch)

    def new_optimizer_at(self, epoch: int) -> bool:
        """Whether the trainer builds a fresh optimizer before ``epoch``: at 0, and where the
        trainable set changes (a decoder stage hands over to the whole network). Momentum
        gathered for the decoder alone would otherwise steer the encoder's first steps."""
        current = self.phase(epoch)
        if epoch == 0:
            return True
        return epoch == current.start and self.phase(epoch - 1).trains != current.trains

    def boundaries(self) -> tuple[int, ...]:
        """The epochs at which a phase starts, 0 first."""
        return tuple(phase.start for phase in self.phases)


def stage_epochs(epochs: int) -> int:
    """The default length of the decoder stage and of the whole-network warm-up: a tenth of
    the run (rounded half up), at least 1 and at most 50 (the paper's 1000-epoch value)."""
    return min(50, max(1, (epochs + 5) // 10))


def make_schedule(
    name: str,
    *,
    epochs: int,
    lr: float,
    decoder_epochs: int | None = None,
    warmup_epochs: int | None = None,
    decoder_lr_factor: float = 1.0,
) -> Schedule:
    """The schedule ``name`` over ``epochs`` epochs peaking at ``lr``.

    ``decoder_epochs`` (D) and ``warmup_epochs`` (W) default to ``stage_epochs(epochs)``; a
    schedule without a decoder stage or a whole-network warm-up ignores them, and every
    schedule but Sawtooth ignores ``decoder_lr_factor``. The whole-network decay must keep at
    least one epoch, or this raises a ``ConfigError`` naming the schedule and the numbers.
    """
    if name not in SCHEDULES:
        raise ConfigError(f"unknown fine-tuning schedule {name!r}; choose one of {SCHEDULES}")
    if epochs < 1:
        raise ConfigError(f"schedule {name!r}: epochs must be >= 1, got {epochs}")
    if not lr > 0:
        raise ConfigError(f"schedule {name!r}: lr must be > 0, got {lr}")
    if not decoder_lr_factor > 0:
        raise ConfigError(
            f"schedule {name!r}: decoder_lr_factor must be > 0, got {decoder_lr_factor}"
        )
    default = stage_epochs(epochs)
    dec = default if decoder_epochs is None else decoder_epochs
    warm = default if warmup_epochs is None else warmup_epochs

    if name == "default":
        return Schedule(
            name, epochs, (Phase("whole-network decay", 0, epochs, _WHOLE, "decay", lr),)
        )
    if name == "frozen":
        return Schedule(name, epochs, (Phase("decoder decay", 0, epochs, _DECODER, "decay", lr),))

    need_decoder = name in ("valley", "sawtooth")
    least_decoder = 2 if name == "sawtooth" else 1  # Sawtooth halves its decoder stage
    if need_decoder and dec < least_decoder:
        raise ConfigError(
            f"schedule {name!r}: decoder_epochs must be >= {least_decoder}, got {dec}"
        )
    if warm < 1:
        raise ConfigError(f"schedule {name!r}: warmup_epochs must be >= 1, got {warm}")
    offset = dec if need_decoder else 0
    if offset + warm >= epochs:
        stages = f"warmup_epochs {warm}"
        if need_decoder:
            stages = f"decoder_epochs {dec} + {stages}"
        raise ConfigError(
            f"schedule {name!r}: {stages} must be < epochs ({epochs}) so that the"
            " whole-network decay keeps an epoch; lower them or train longer"
        )

    phases: list[Phase] = []
    if name == "valley":
        phases.append(Phase("decoder decay", 0, dec, _DECODER, "decay", lr))
    elif name == "sawtooth":
        half = dec // 2
        peak = lr * decoder_lr_factor
        phases.append(Phase("decoder warm-up", 0, half, _DECODER, "warmup", peak))
        phases.append(Phase("decoder decay", half, dec, _DECODER, "decay", peak))
    phases.append(Phase("whole-network warm-up", offset, offset + warm, _WHOLE, "warmup", lr))
    phases.append(Phase("whole-network decay", offset + warm, epochs, _WHOLE, "decay", lr))
    return Schedule(name, epochs, tuple(phases))

"""The fine-tuning schedules: phases, trainable groups, the rate at every phase boundary (against
the closed form written out here), warm-up and decay shapes, optimizer resets and bad input."""

from __future__ import annotations

import itertools
from typing import Any

import pytest

from openmind_data.errors import ConfigError
from openmind_ssl.finetune.schedules import (
    GROUPS,
    SCHEDULES,
    TRANSFER_LR,
    Phase,
    Schedule,
    make_schedule,
    stage_epochs,
)

WHOLE = frozenset({"encoder", "decoder"})
DEC = frozenset({"decoder"})
LR = TRANSFER_LR["resenc_l"]
STEPS = 250  # nnU-Net's steps per epoch

# (start, end, trains, shape) per phase, written out from the paper's presets.
EXPECTED: dict[tuple[str, int], list[tuple[int, int, frozenset[str], str]]] = {
    ("default", 150): [(0, 150, WHOLE, "decay")],
    ("frozen", 150): [(0, 150, DEC, "decay")],
    ("warmup", 150): [(0, 15, WHOLE, "warmup"), (15, 150, WHOLE, "decay")],
    ("valley", 150): [(0, 15, DEC, "decay"), (15, 30, WHOLE, "warmup"), (30, 150, WHOLE, "decay")],
    ("sawtooth", 150): [
        (0, 7, DEC, "warmup"),
        (7, 15, DEC, "decay"),
        (15, 30, WHOLE, "warmup"),
        (30, 150, WHOLE, "decay"),
    ],
    ("default", 1000): [(0, 1000, WHOLE, "decay")],
    ("frozen", 1000): [(0, 1000, DEC, "decay")],
    ("warmup", 1000): [(0, 50, WHOLE, "warmup"), (50, 1000, WHOLE, "decay")],
    ("valley", 1000): [
        (0, 50, DEC, "decay"),
        (50, 100, WHOLE, "warmup"),
        (100, 1000, WHOLE, "decay"),
    ],
    ("sawtooth", 1000): [
        (0, 25, DEC, "warmup"),
        (25, 50, DEC, "decay"),
        (50, 100, WHOLE, "warmup"),
        (100, 1000, WHOLE, "decay"),
    ],
}
CASES = sorted(EXPECTED)


def first_rate(start: int, end: int, shape: str, peak: float) -> float:
    """The closed-form rate on a phase's first step."""
    return peak / ((end - start) * STEPS) if shape == "warmup" else peak


def last_rate(start: int, end: int, shape: str, peak: float) -> float:
    """The closed-form rate on a phase's last step: the peak for a warm-up; for a decay, one
    step short of the end, (1 / (length * steps)) ** 0.9 of the peak."""
    return peak if shape == "warmup" else peak * (1 / ((end - start) * STEPS)) ** 0.9


def test_the_schedules_and_groups() -> None:
    assert SCHEDULES == ("default", "frozen", "warmup", "valley", "sawtooth")
    assert GROUPS == ("encoder", "decoder")
    assert TRANSFER_LR == {"resenc_l": 1e-3, "primus_m": 1e-4}


@pytest.mark.parametrize(("name", "epochs"), CASES)
def test_phases_match_the_paper(name: str, epochs: int) -> None:
    schedule = make_schedule(name, epochs=epochs, lr=LR)
    got = [(p.start, p.end, p.trains, p.shape) for p in schedule.phases]
    assert got == EXPECTED[name, epochs]
    assert all(p.peak == LR for p in schedule.phases)
    assert schedule.boundaries() == tuple(start for start, *_ in EXPECTED[name, epochs])
    assert (schedule.name, schedule.epochs) == (name, epochs)


@pytest.mark.parametrize(("name", "epochs"), CASES)
def test_rate_and_trainable_at_every_boundary(name: str, epochs: int) -> None:
    schedule = make_schedule(name, epochs=epochs, lr=LR)
    phases = EXPECTED[name, epochs]
    for index, (start, end, trains, shape) in enumerate(phases):
        assert schedule.trainable(start) == trains
        assert schedule.learning_rate(start, 0, STEPS) == pytest.approx(
            first_rate(start, end, shape, LR)
        )
        assert schedule.trainable(end - 1) == trains
        assert schedule.learning_rate(end - 1, STEPS - 1, STEPS) == pytest.approx(
            last_rate(start, end, shape, LR)
        )
        if index:
            previous = phases[index - 1]
            assert schedule.trainable(start - 1) == previous[2]
            assert schedule.learning_rate(start - 1, STEPS - 1, STEPS) == pytest.approx(
                last_rate(previous[0], previous[1], previous[3], LR)
            )


def test_decay_follows_fractional_time_inside_an_epoch() -> None:
    """Step 125 of 250 in epoch 80 of Warm-Up's 15-150 decay is at t = 80.5."""
    schedule = make_schedule("warmup", epochs=150, lr=LR)
    expected = LR * (1 - (80.5 - 15) / 135) ** 0.9
    assert schedule.learning_rate(80, 125, STEPS) == pytest.approx(expected)
    warm = schedule.learning_rate(3, 10, STEPS)  # (3 * 250 + 11) / (15 * 250) of the peak
    assert warm == pytest.approx(LR * 761 / 3750)


def rates(schedule: Schedule, phase: Phase, steps: int) -> list[float]:
    return [
        schedule.learning_rate(epoch, step, steps)
        for epoch in range(phase.start, phase.end)
        for step in range(steps)
    ]


@pytest.mark.parametrize("steps", [3, 7])
@pytest.mark.parametrize(("name", "epochs"), CASES)
def test_warmups_rise_from_above_zero_to_the_peak_and_decays_fall_to_near_zero(
    name: str, epochs: int, steps: int
) -> None:
    schedule = make_schedule(name, epochs=epochs, lr=LR)
    for phase in schedule.phases:
        values = rates(schedule, phase, steps)
        pairs = list(itertools.pairwise(values))
        if phase.shape == "warmup":
            assert min(values) > 0
            assert all(a < b for a, b in pairs)
            assert values[-1] == pytest.approx(phase.peak)
        else:
            assert values[0] == pytest.approx(phase.peak)
            assert all(a > b for a, b in pairs)
            assert 0 < values[-1] < 0.1 * phase.peak


def test_primus_sawtooth_scales_only_the_decoder_stage() -> None:
    lr = TRANSFER_LR["primus_m"]
    schedule = make_schedule("sawtooth", epochs=150, lr=lr, decoder_lr_factor=0.01)
    assert [p.peak for p in schedule.phases] == pytest.approx([lr * 0.01, lr * 0.01, lr, lr])
    assert schedule.learning_rate(6, STEPS - 1, STEPS) == pytest.approx(1e-6)
    assert schedule.learning_rate(7, 0, STEPS) == pytest.approx(1e-6)
    assert schedule.learning_rate(29, STEPS - 1, STEPS) == pytest.approx(1e-4)
    assert schedule.learning_rate(30, 0, STEPS) == pytest.approx(1e-4)
    assert max(schedule.learning_rate(e, s, 5) for e in range(15) for s in range(5)) == (
        pytest.approx(1e-6)
    )


@pytest.mark.parametrize("name", ["default", "frozen", "warmup", "valley"])
def test_the_decoder_factor_is_sawtooths_alone(name: str) -> None:
    """nnssl's Primus Valley trains the decoder at the full rate; so does every other one."""
    schedule = make_schedule(name, epochs=150, lr=1e-4, decoder_lr_factor=0.01)
    assert all(p.peak == 1e-4 for p in schedule.phases)
    assert schedule.learning_rate(0, 0, 1) == pytest.approx(1e-4 if name != "warmup" else 1e-4 / 15)


@pytest.mark.parametrize(("name", "epochs"), CASES)
def test_a_fresh_optimizer_at_zero_and_where_the_whole_network_starts(
    name: str, epochs: int
) -> None:
    schedule = make_schedule(name, epochs=epochs, lr=LR)
    expected = {0, stage_epochs(epochs)} if name in ("valley", "sawtooth") else {0}
    assert {e for e in range(epochs) if schedule.new_optimizer_at(e)} == expected


def test_custom_stage_lengths() -> None:
    schedule = make_schedule("sawtooth", epochs=40, lr=LR, decoder_epochs=5, warmup_epochs=10)
    assert schedule.boundaries() == (0, 2, 5, 15)
    assert schedule.phases[-1].end == 40
    assert make_schedule("warmup", epochs=40, lr=LR, warmup_epochs=39).boundaries() == (0, 39)
    # a schedule without the stage ignores its length
    assert make_schedule("default", epochs=3, lr=LR, decoder_epochs=99).boundaries() == (0,)


@pytest.mark.parametrize(
    ("epochs", "expected"),
    [(1000, 50), (150, 15), (5000, 50), (500, 50), (25, 3), (14, 1), (5, 1), (1, 1)],
)
def test_stage_epochs(epochs: int, expected: int) -> None:
    assert stage_epochs(epochs) == expected


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"name": "cosine"}, r"unknown fine-tuning schedule 'cosine'.*'valley', 'sawtooth'"),
        ({"name": "default", "epochs": 0}, r"'default': epochs must be >= 1, got 0"),
        ({"name": "frozen", "lr": 0.0}, r"'frozen': lr must be > 0"),
        ({"name": "sawtooth", "decoder_lr_factor": 0.0}, r"decoder_lr_factor must be > 0"),
        (
            {"name": "valley", "epochs": 20, "decoder_epochs": 10, "warmup_epochs": 10},
            r"'valley': decoder_epochs 10 \+ warmup_epochs 10 must be < epochs \(20\)",
        ),
        (
            {"name": "sawtooth", "epochs": 6},  # D = W = 1, and Sawtooth halves D
            r"'sawtooth': decoder_epochs must be >= 2, got 1",
        ),
        ({"name": "valley", "decoder_epochs": 0}, r"'valley': decoder_epochs must be >= 1"),
        ({"name": "warmup", "epochs": 1}, r"'warmup': warmup_epochs 1 must be < epochs \(1\)"),
        ({"name": "warmup", "warmup_epochs": 0}, r"'warmup': warmup_epochs must be >= 1, got 0"),
    ],
)
def test_bad_schedules_are_config_errors(kwargs: dict[str, Any], match: str) -> None:
    args: dict[str, Any] = {"epochs": 150, "lr": LR, **kwargs}
    with pytest.raises(ConfigError, match=match):
        make_schedule(**args)


def test_out_of_range_queries() -> None:
    schedule = make_schedule("valley", epochs=150, lr=LR)
    for epoch in (-1, 150):
        with pytest.raises(ValueError, match=rf"'valley': epoch {epoch} is outside \[0, 150\)"):
            schedule.phase(epoch)
    with pytest.raises(ValueError, match=r"step 250 is outside \[0, 250\)"):
        schedule.learning_rate(0, 250, 250)


def test_phases_and_schedules_check_themselves() -> None:
    with pytest.raises(ConfigError, match="non-empty subset"):
        Phase("p", 0, 5, frozenset({"head"}), "decay", 1e-3)
    with pytest.raises(ConfigError, match="are empty"):
        Phase("p", 5, 5, DEC, "decay", 1e-3)
    with pytest.raises(ConfigError, match="without gaps"):
        Schedule(
            "s", 10, (Phase("a", 0, 4, DEC, "decay", 1e-3), Phase("b", 5, 10, WHOLE, "decay", 1e-3))
        )
    with pytest.raises(ConfigError, match="without gaps"):
        Schedule("s", 10, (Phase("a", 0, 9, DEC, "decay", 1e-3),))

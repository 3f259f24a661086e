"""Step schedules (teacher-forcing ratio etc.): values, validation, and the resumable counter."""

from __future__ import annotations

import io
import math

import pytest
import torch

from lofibeats.errors import ConfigError
from lofibeats.models.kl_schedules import KLSchedule
from lofibeats.models.schedules import StepSchedule, schedule_value


def test_constant() -> None:
    assert [schedule_value("constant", s, start=0.7, end=0.0) for s in (0, 10, 10**9)] == [0.7] * 3


def test_linear_decays_then_holds() -> None:
    values = [schedule_value("linear", s, start=1.0, end=0.2, steps=100) for s in (0, 50, 100, 500)]
    assert values == pytest.approx([1.0, 0.6, 0.2, 0.2])


def test_inverse_sigmoid_starts_at_start_and_decays_to_end() -> None:
    k = 10.0
    at = lambda step: schedule_value("inverse_sigmoid", step, start=0.9, end=0.1, k=k)  # noqa: E731
    assert at(0) == pytest.approx(0.9)
    # at step = k ln k: exp(step/k) = k, so v = (k+1)/(2k) = 0.55 -> 0.1 + 0.8 * 0.55
    assert at(k * math.log(k)) == pytest.approx(0.1 + 0.8 * 0.55)
    values = [at(s) for s in range(0, 200, 5)]
    assert all(a > b for a, b in zip(values, values[1:], strict=False))
    assert at(10**7) == pytest.approx(0.1)


def test_bad_configs_name_the_key() -> None:
    with pytest.raises(ConfigError, match="model.teacher_forcing.schedule='cosine'"):
        StepSchedule("cosine", key="model.teacher_forcing")
    with pytest.raises(ConfigError, match=r"tf.k=0.5"):
        StepSchedule("inverse_sigmoid", k=0.5, key="tf")
    with pytest.raises(ConfigError, match="steps"):
        StepSchedule("linear", steps=0)


def test_step_counter_survives_a_weights_only_state_dict_round_trip() -> None:
    sched = StepSchedule("linear", start=1.0, end=0.0, steps=10)
    sched.advance(3)
    sched.advance()
    assert sched.step == 4 and sched.value() == pytest.approx(0.6)

    buffer = io.BytesIO()
    torch.save(sched.state_dict(), buffer)
    buffer.seek(0)
    fresh = StepSchedule("linear", start=1.0, end=0.0, steps=10)
    fresh.load_state_dict(torch.load(buffer, weights_only=True))
    assert fresh.step == 4 and fresh.value() == pytest.approx(0.6)


def test_subclasses_declare_their_own_kinds() -> None:
    assert KLSchedule("cyclical", steps=8, cycles=2).kind == "cyclical"
    with pytest.raises(ConfigError, match="model.kl.schedule='inverse_sigmoid'"):
        KLSchedule("inverse_sigmoid")
    with pytest.raises(ConfigError, match="model.kl.steps=0"):
        KLSchedule("logistic", steps=0)
    with pytest.raises(ConfigError, match="tf.schedule='cyclical'"):
        StepSchedule("cyclical", key="tf")

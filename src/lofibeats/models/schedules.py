"""Values that change with the training step (teacher-forcing ratio, KL weight, ...).

A :class:`StepSchedule` is an `nn.Module` whose step counter is saved in its state_dict (as the
module's "extra state", a plain int: no device sync to read it, loads with weights_only=True), so
it survives a resume (`Trainer.fit(ckpt_path=...)`) without relying on Lightning's private counters. The owning LightningModule calls `advance()` once per training batch.
"""

from __future__ import annotations

import math

from torch import nn

from lofibeats.errors import ConfigError

KINDS = ("constant", "linear", "inverse_sigmoid")


def schedule_value(
    kind: str, step: int, *, start: float, end: float, steps: int = 1, k: float = 1.0
) -> float:
    """The value of a schedule at `step` (0-based).

    - ``constant``: `start` forever.
    - ``linear``: `start` -> `end` over `steps` steps, then `end`.
    - ``inverse_sigmoid`` (Bengio et al. 2015): v = k / (k + exp(step / k)), rescaled by its
      step-0 value so the schedule starts exactly at `start`, then mapped to [end, start]:
      end + (start - end) * (k + 1) / (k + exp(step / k)). Larger k decays later; `steps` is unused.
    """
    if kind == "constant":
        return float(start)
    if kind == "linear":
        frac = min(max(step, 0) / max(steps, 1), 1.0)
        return float(start + (end - start) * frac)
    if kind == "inverse_sigmoid":
        exponent = max(step, 0) / k
        # exp overflows past ~709; the value is `end` long before that
        v = 0.0 if exponent > 700 else (k + 1.0) / (k + math.exp(exponent))
        return float(end + (start - end) * v)
    raise ConfigError(f"schedule={kind!r}: choose one of {', '.join(KINDS)}")


class StepSchedule(nn.Module):
    """A schedule plus its own persistent step counter.

    Subclasses with other schedule shapes set `kinds` (the names they accept) and override
    `value()`; the base class validates the name against `kinds` and owns the counter.
    """

    kinds: tuple[str, ...] = KINDS

    def __init__(
        self,
        schedule: str = "constant",
        start: float = 1.0,
        end: float = 1.0,
        steps: int = 1,
        k: float = 1.0,
        key: str = "schedule",
    ) -> None:
        super().__init__()
        if schedule not in self.kinds:
            raise ConfigError(f"{key}.schedule={schedule!r}: choose one of {', '.join(self.kinds)}")
        if schedule == "linear" and steps < 1:
            raise ConfigError(f"{key}.steps={steps}: a linear schedule needs steps >= 1")
        if schedule == "inverse_sigmoid" and k < 1:
            raise ConfigError(f"{key}.k={k}: the inverse-sigmoid schedule needs k >= 1")
        self.kind = schedule
        self.start, self.end, self.steps, self.k = float(start), float(end), int(steps), float(k)
        self.step = 0

    def value(self) -> float:
        """The value at the current step."""
        return schedule_value(
            self.kind, self.step, start=self.start, end=self.end, steps=self.steps, k=self.k
        )

    def advance(self, n: int = 1) -> None:
        self.step += n

    def get_extra_state(self) -> dict[str, int]:
        return {"step": self.step}

    def set_extra_state(self, state: dict[str, int]) -> None:
        self.step = int(state["step"])

    def extra_repr(self) -> str:
        return f"{self.kind}, start={self.start}, end={self.end}, steps={self.steps}, k={self.k}"

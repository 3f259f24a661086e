"""KL weight (beta) schedules for the vseq2seq family, on the step machinery of `schedules`.

`kl.end` is the beta the schedule reaches (beta max), `kl.start` where warm-ups begin:

- ``constant``: `end` from step 0 (no annealing).
- ``linear``: `start` -> `end` over `steps` steps, then `end` (Bowman et al. 2016's warm-up).
- ``logistic``: an S-curve from exactly `start` at step 0 to exactly `end` at `steps`, midpoint at
  `steps / 2`; `sharpness` is the logistic slope over the span (10: the unscaled curve goes from
  0.7 % to 99.3 %), then rescaled to hit both ends.
- ``cyclical`` (Fu et al. 2019): `steps` split into `cycles` periods of ceil(steps / cycles)
  steps; in each, beta ramps linearly from `start` to `end` over the first `ratio` of the
  period and holds `end` for the rest. After the last cycle it stays at `end`.
"""

from __future__ import annotations

import math

from lofibeats.errors import ConfigError
from lofibeats.models.schedules import StepSchedule, schedule_value

KL_KINDS = ("constant", "linear", "logistic", "cyclical")


def kl_weight(
    kind: str,
    step: int,
    *,
    start: float,
    end: float,
    steps: int,
    cycles: int = 4,
    ratio: float = 0.5,
    sharpness: float = 10.0,
) -> float:
    """Beta at `step` (0-based) for schedule `kind` (see the module docstring)."""
    step = max(step, 0)
    if kind == "constant":
        return schedule_value("constant", step, start=end, end=end)
    if kind == "linear":
        return schedule_value("linear", step, start=start, end=end, steps=steps)
    if kind == "logistic":
        frac = min(step / steps, 1.0)

        def curve(x: float) -> float:
            return 1.0 / (1.0 + math.exp(-sharpness * (x - 0.5)))

        lo, hi = curve(0.0), curve(1.0)
        return float(start + (end - start) * (curve(frac) - lo) / (hi - lo))
    if kind == "cyclical":
        if step >= steps:
            return float(end)
        period = math.ceil(steps / cycles)
        ramp = max(1, round(ratio * period))
        return schedule_value("linear", step % period, start=start, end=end, steps=ramp)
    raise ConfigError(f"model.kl.schedule={kind!r}: choose one of {', '.join(KL_KINDS)}")


class KLSchedule(StepSchedule):
    """Beta with its own persistent step counter (StepSchedule's: saved in the state_dict as a
    plain int, so it survives a resume and loads with weights_only=True)."""

    kinds = KL_KINDS

    def __init__(
        self,
        schedule: str = "linear",
        start: float = 0.0,
        end: float = 1.0,
        steps: int = 2000,
        cycles: int = 4,
        ratio: float = 0.5,
        sharpness: float = 10.0,
        key: str = "model.kl",
    ) -> None:
        super().__init__(schedule, start, end, steps, key=key)
        if steps < 1:
            raise ConfigError(f"{key}.steps={steps}: a KL schedule needs steps >= 1")
        if cycles < 1:
            raise ConfigError(f"{key}.cycles={cycles}: the cyclical schedule needs cycles >= 1")
        if not 0.0 < ratio <= 1.0:
            raise ConfigError(f"{key}.ratio={ratio}: give the ramp's share of a cycle, in (0, 1]")
        if sharpness <= 0:
            raise ConfigError(f"{key}.sharpness={sharpness}: give a logistic slope > 0")
        self.cycles, self.ratio, self.sharpness = int(cycles), float(ratio), float(sharpness)

    def value(self) -> float:
        return kl_weight(
            self.kind,
            self.step,
            start=self.start,
            end=self.end,
            steps=self.steps,
            cycles=self.cycles,
            ratio=self.ratio,
            sharpness=self.sharpness,
        )

    def extra_repr(self) -> str:
        return (
            f"{self.kind}, start={self.start}, end={self.end}, steps={self.steps}, "
            f"cycles={self.cycles}, ratio={self.ratio}, sharpness={self.sharpness}, step={self.step}"
        )

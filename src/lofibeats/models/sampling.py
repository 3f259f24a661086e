"""How generation draws each sample: the one owner of the "greedy or temperature 0" rule."""

from __future__ import annotations

from typing import Any, NamedTuple

from lofibeats.errors import ConfigError
from lofibeats.validate import choice, number

DECODINGS = ("sample", "greedy")

#: `temperature=auto` / `loop=auto`: what measured best for the model (README, "Does the generated
#: audio sound like the music?"). A lookback model loops (0.95) at temperature 0.1, which keeps
#: the copies' jitter from piling up into hiss; a family with a measured best of its own says
#: so (`decoding.auto_temperature`); everything else samples at 0.9.
AUTO = "auto"
AUTO_LOOP = 0.95
AUTO_TEMPERATURE = 0.9
AUTO_LOOP_TEMPERATURE = 0.1


def is_auto(value: Any) -> bool:
    """Whether a knob's value is "auto" (resolved per model by `Sampling.parse`)."""
    return isinstance(value, str) and value.strip().lower() == AUTO


def needs_lookback(loop: Any) -> bool:
    """Whether a `loop` value asks for a lookback: a number above 0 ("auto" never does, it
    resolves to 0 for models without one)."""
    return not is_auto(loop) and loop is not None and loop > 0


class Sampling(NamedTuple):
    """Decoding knobs of one take, validated; they may change between chunks of a stream."""

    temperature: float = 1.0
    top_p: float | None = None  # nucleus threshold in (0, 1] (mu-law only), None = off
    decoding: str = "sample"  # sample | greedy (argmax / the regression mean)
    loop: float = 0.0  # lookback models: the least share of each draw on the recalled sample
    beat_prior: float = 0.0  # plan models: each code's pull towards what the last beats played

    @property
    def looping(self) -> bool:
        """Whether the take leans on the lookback's recall (`loop` > 0)."""
        return self.loop > 0

    @property
    def is_greedy(self) -> bool:
        """Argmax / mean decoding: asked for, or implied by a zero temperature."""
        return self.decoding == "greedy" or self.temperature == 0

    @classmethod
    def parse(
        cls,
        temperature: Any = 1.0,
        top_p: Any = None,
        decoding: Any = "sample",
        loop: Any = 0.0,
        beat_prior: Any = "auto",
        prefix: str = "",
        lookback: bool = False,
        model_temperature: float | None = None,
        model_beat_prior: float | None = None,
    ) -> Sampling:
        """Checked knobs; an error names `<prefix>temperature` etc. and what to give (None:
        the default). "auto" resolves for the model: `loop` is `AUTO_LOOP` where it has a
        `lookback`, else 0; `temperature` is `AUTO_LOOP_TEMPERATURE` where the take loops, else
        the model's own `model_temperature` where it has one, else `AUTO_TEMPERATURE`;
        `beat_prior` (auto or None) the model's own `model_beat_prior`, else 0."""
        if is_auto(loop):
            loop_value = AUTO_LOOP if lookback else 0.0
        else:
            loop_value = 0.0 if loop is None else _auto_or_number(loop, f"{prefix}loop", high=1.0)
        if beat_prior is None or is_auto(beat_prior):
            prior = model_beat_prior or 0.0
        else:
            prior = _auto_or_number(beat_prior, f"{prefix}beat_prior")
        if is_auto(temperature):
            plain = AUTO_TEMPERATURE if model_temperature is None else model_temperature
            temperature = AUTO_LOOP_TEMPERATURE if loop_value > 0 else plain
        return cls(
            temperature=_auto_or_number(temperature, f"{prefix}temperature"),
            top_p=None
            if top_p is None
            else number(top_p, f"{prefix}top_p", low=0.0, high=1.0, low_open=True),
            decoding=choice(decoding, DECODINGS, f"{prefix}decoding"),
            loop=loop_value,
            beat_prior=prior,
        )


def _auto_or_number(value: Any, key: str, high: float | None = None) -> float:
    """A number >= 0 (and <= `high`); the error says "auto" is a choice too."""
    try:
        return number(value, key, low=0.0, high=high)
    except ConfigError as exc:
        raise ConfigError(f"{exc}, or auto") from None


#: plain sampling at temperature 1: what every `sampling=` argument defaults to
DEFAULT_SAMPLING = Sampling()

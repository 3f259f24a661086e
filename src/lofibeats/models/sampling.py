"""How generation draws each sample: the one owner of the "greedy or temperature 0" rule."""

from __future__ import annotations

from typing import Any, NamedTuple

from lofibeats.validate import choice, number

DECODINGS = ("sample", "greedy")


class Sampling(NamedTuple):
    """Decoding knobs of one take, validated; they may change between chunks of a stream."""

    temperature: float = 1.0
    top_p: float | None = None  # nucleus threshold in (0, 1] (mu-law only), None = off
    decoding: str = "sample"  # sample | greedy (argmax / the regression mean)
    loop: float = 0.0  # lookback models: the least share of each draw on the recalled sample

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
        prefix: str = "",
    ) -> Sampling:
        """Checked knobs; an error names `<prefix>temperature` etc. and what to give (None:
        the default)."""
        return cls(
            temperature=number(temperature, f"{prefix}temperature", low=0.0),
            top_p=None
            if top_p is None
            else number(top_p, f"{prefix}top_p", low=0.0, high=1.0, low_open=True),
            decoding=choice(decoding, DECODINGS, f"{prefix}decoding"),
            loop=0.0 if loop is None else number(loop, f"{prefix}loop", low=0.0, high=1.0),
        )


#: plain sampling at temperature 1: what every `sampling=` argument defaults to
DEFAULT_SAMPLING = Sampling()

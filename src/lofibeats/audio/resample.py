"""Streaming resampling of one mono signal to several rates at once (soxr, block by block).

Feeding blocks and then calling :meth:`MultiRateResampler.flush` gives, per rate, exactly
`round(n_in * out_rate / in_rate)` samples, aligned with the input (soxr compensates its delay), so
a position in the source maps to `position * out_rate / in_rate` in every output.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import soxr

QUALITY = "HQ"
_EMPTY = np.zeros(0, dtype=np.float32)


class MultiRateResampler:
    """`push(block)` -> {rate: resampled block}; `flush()` -> the tails, once, at the end."""

    def __init__(self, in_rate: int, out_rates: Iterable[int], quality: str = QUALITY):
        self.in_rate = int(in_rate)
        self.out_rates = tuple(sorted({int(r) for r in out_rates}))
        # The same rate needs no resampler: blocks pass through unchanged.
        self._streams = {
            rate: None
            if rate == self.in_rate
            else soxr.ResampleStream(self.in_rate, rate, 1, dtype="float32", quality=quality)
            for rate in self.out_rates
        }

    def push(self, block: np.ndarray) -> dict[int, np.ndarray]:
        """Resample the next 1-D float32 block; outputs may be empty while soxr fills its buffer."""
        return {
            rate: block if stream is None else stream.resample_chunk(block)
            for rate, stream in self._streams.items()
        }

    def flush(self) -> dict[int, np.ndarray]:
        """The remaining samples of every rate; call once after the last block."""
        return {
            rate: _EMPTY if stream is None else stream.resample_chunk(_EMPTY, last=True)
            for rate, stream in self._streams.items()
        }

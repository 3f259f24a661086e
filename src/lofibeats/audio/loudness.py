"""Levels of a mono signal measured block by block: gated RMS loudness, peak, active range.

Loudness is a gated RMS in dBFS, in the spirit of ITU-R BS.1770 without its K-weighting filter:
400 ms blocks every 100 ms; blocks below an absolute gate of -70 dBFS are ignored, then so are
blocks more than 10 dB below the mean of the rest. Gating keeps silence and fades from dragging
the measure down, so a track with long pauses is not boosted too much.

The level statistics are kept per 10 ms window (a few MB for hours of audio), so the measure
needs one pass and no copy of the signal.
"""

from __future__ import annotations

import math

import numpy as np

WINDOW_S = 0.01
GATE_BLOCK_S = 0.4
GATE_STEP_S = 0.1
ABSOLUTE_GATE_DBFS = -70.0
RELATIVE_GATE_DB = -10.0

# Limiter: transparent below the knee, a smooth (tanh) curve above it that never reaches the
# ceiling, so int16 conversion never clips. Gain is capped so at most MAX_LIMITING_DB of peak
# goes through the curve: a very peaky file ends up quieter than the target instead of squashed.
KNEE_DBFS = -3.0
CEILING_DBFS = -0.3
MAX_LIMITING_DB = 6.0
INT16_SCALE = 32767.0


def db_to_amplitude(db: float) -> float:
    return 10.0 ** (db / 20.0)


class LevelMeter:
    """Accumulates per-window (10 ms) sums of squares and peaks of a mono float signal."""

    def __init__(self, sr: int, window_s: float = WINDOW_S):
        self.sr = int(sr)
        self.window = max(1, round(self.sr * window_s))
        self.frames = 0
        self._sumsq: list[np.ndarray] = []
        self._peak: list[np.ndarray] = []
        self._tail = np.zeros(0, dtype=np.float32)

    def add(self, block: np.ndarray) -> None:
        """Measure the next block (any length)."""
        self.frames += len(block)
        if len(self._tail):  # complete the window the previous block left open
            head = self.window - len(self._tail)
            self._tail = np.concatenate([self._tail, block[:head]])
            block = block[head:]
            if len(self._tail) < self.window:
                return
            self._windows_of(self._tail)
        whole = len(block) // self.window * self.window
        if whole:
            self._windows_of(block[:whole])
        self._tail = block[whole:].copy()

    def _windows_of(self, x: np.ndarray) -> None:
        w = x.reshape(-1, self.window)
        # float32 sums over one window (10 ms) are precise enough, and 4x faster than float64
        self._push(np.einsum("ij,ij->i", w, w).astype(np.float64), np.abs(w).max(1))

    def finish(self) -> None:
        """Count the last, partial window; call once after the last block."""
        if len(self._tail):
            t = self._tail.astype(np.float64)
            self._push(np.array([t @ t]), np.array([np.abs(t).max()]))
            self._tail = np.zeros(0, dtype=np.float32)

    def _push(self, sumsq: np.ndarray, peak: np.ndarray) -> None:
        self._sumsq.append(sumsq)
        self._peak.append(peak.astype(np.float32))

    @property
    def _windows(self) -> tuple[np.ndarray, np.ndarray]:
        if len(self._sumsq) > 1:
            self._sumsq = [np.concatenate(self._sumsq)]
            self._peak = [np.concatenate(self._peak)]
        if not self._sumsq:
            return np.zeros(0), np.zeros(0, dtype=np.float32)
        return self._sumsq[0], self._peak[0]

    @property
    def peak(self) -> float:
        """Largest absolute sample value seen."""
        peaks = self._windows[1]
        return float(peaks.max()) if len(peaks) else 0.0

    def loudness_dbfs(self) -> float | None:
        """Gated RMS level in dBFS; None when nothing rises above the absolute gate."""
        sumsq = self._windows[0]
        if not len(sumsq):
            return None
        per_block = max(1, round(GATE_BLOCK_S / WINDOW_S))
        step = max(1, round(GATE_STEP_S / WINDOW_S))
        cumulative = np.concatenate([[0.0], np.cumsum(sumsq)])
        if len(sumsq) <= per_block:
            blocks = cumulative[-1:] / self.frames
        else:
            starts = np.arange(0, len(sumsq) - per_block + 1, step)
            blocks = (cumulative[starts + per_block] - cumulative[starts]) / (
                per_block * self.window
            )
        gated = blocks[blocks > 10.0 ** (ABSOLUTE_GATE_DBFS / 10.0)]
        if not len(gated):
            return None
        gated = gated[gated >= gated.mean() * 10.0 ** (RELATIVE_GATE_DB / 10.0)]
        return 10.0 * math.log10(float(gated.mean()))

    def active_range(self, threshold: float) -> tuple[int, int] | None:
        """[start, end) frames from the first to the last window whose peak exceeds `threshold`."""
        peaks = self._windows[1]
        loud = np.flatnonzero(peaks > threshold)
        if not len(loud):
            return None
        return int(loud[0]) * self.window, min(self.frames, (int(loud[-1]) + 1) * self.window)


def normalization_gain_db(loudness_dbfs: float, peak: float, target_dbfs: float) -> float:
    """Gain toward `target_dbfs`, capped so the peak goes at most MAX_LIMITING_DB into the limiter."""
    gain = target_dbfs - loudness_dbfs
    if peak > 0:
        gain = min(gain, CEILING_DBFS + MAX_LIMITING_DB - 20.0 * math.log10(peak))
    return gain


def to_int16(
    x: np.ndarray, gain_db: float, *, limit: bool, out: np.ndarray | None = None
) -> np.ndarray:
    """Scale float audio by `gain_db` and convert to int16 (full scale 32767), into `out` if given.

    With `limit`, peaks above the knee are softly compressed below the ceiling; without it, values
    beyond full scale (float sources, resampling overshoot) are clipped. Either way nothing wraps.
    """
    y = x * np.float32(db_to_amplitude(gain_db) * INT16_SCALE)
    if limit:
        knee = db_to_amplitude(KNEE_DBFS) * INT16_SCALE
        if len(y) and max(float(y.max()), -float(y.min())) > knee:
            span = db_to_amplitude(CEILING_DBFS) * INT16_SCALE - knee
            over = np.flatnonzero(np.abs(y) > knee)
            v = y[over]
            y[over] = np.sign(v) * (knee + span * np.tanh((np.abs(v) - knee) / span))
    else:
        np.clip(y, -INT16_SCALE, INT16_SCALE, out=y)
    np.rint(y, out=y)
    if out is None:
        return y.astype(np.int16)
    out[...] = y
    return out

"""How much of a clip is a copy of what came before it, and of how long a stretch.

Beat and flatness (`lofibeats.metrics.music`) cannot tell music from a replay: a continuation
that loops a 0.2-s fragment has a steadier pulse than the music it continues. These say what
repeats. Every `REPEAT_HOP_SECONDS` the clip's next `REPEAT_WINDOW_SECONDS` (a *stretch*) is
matched against the audio `REPEAT_LAGS_SECONDS` (0.1-4 s) before it, by the lookback's
normalised cross-correlation at every lag (`lofibeats.models.lookback.match_scores`, one FFT per
stretch). The audio before a stretch is the clip's own and, when given, the `past` it continues
(a continuation's prime); only lags whose earlier stretch lies wholly in that audio count. The
first stretch is the first hop with 0.1 s of audio before it (0.25 s into a clip without a past,
its start with one), so the first few search less than 4 s back.

* **repeat**: the best match of each stretch, median over stretches. An exact replay scores 1;
  music repeats too (beats, bars, held chords) but never sample for sample; white noise scores
  the chance maximum of ~60,000 lags of 8,000 samples (about 0.05 at 16 kHz).
* **loop** (seconds): the lag of each stretch's best match, median over stretches. Peaks of the
  match (over lags) within `TIE` (relative) of the best count as the best and the shortest
  wins, so a loop of period P reads P, not 2 P or 3 P, whose matches are as good. A 0.2-s stutter reads
  0.2 and a looped 2-s phrase 2; music and noise spread their best lags over the range.
* **copy span** (seconds): how long the best lag stays put. Neighbouring stretches whose lags
  agree within `SAME_LAG_SECONDS` form a run covering (n - 1) hops + one window; each stretch
  takes its run's length, median over stretches. A copy at one lag throughout reads the whole
  clip (less the stretches before the lag is reachable); lags that wander read one window.

A constant offset (DC) matches itself at every lag: noise 0.02 off zero (the verdict's DC limit)
would read repeat 0.18 and 0.05 off 0.53. So the clip and its past are each centred first.

Lags and windows are in seconds, so the measures work at any sample rate. Stretches below
-100 dBFS (nothing to match) are left out; a clip with no other reads 0, 0, 0.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from lofibeats.metrics.sanity import as_signal
from lofibeats.models.lookback import match_scores

REPEAT_WINDOW_SECONDS = 0.5  # the stretch matched: the lookback's default match window
REPEAT_HOP_SECONDS = 0.25
REPEAT_LAGS_SECONDS = (0.1, 4.0)  # a stutter's fragment up to the lookback's farthest lag
TIE = 0.01  # lags whose match is within this share of the best one count as the best
SAME_LAG_SECONDS = 0.01  # neighbouring stretches whose best lags are this close: one copy
_SILENT_RMS = 1e-5  # -100 dBFS
# stretches matched in one FFT: bounds memory (each holds 4 s + a window of samples, 1.2 MB at
# 16 kHz, times the FFT's padding) however long the clip is
_STRETCHES_PER_FFT = 32


def repetition(x: np.ndarray, sr: int, past: np.ndarray | None = None) -> dict[str, float]:
    """{"repeat", "loop", "copy_span"} of the mono clip `x` (module doc), optionally continuing
    `past` (only its last 4 s are read). A ValueError when `x` holds no stretch: shorter than
    one window, or than one hop and one window without a past."""
    x = as_signal(x, "repetition").astype(np.float32)
    x = x - x.mean()  # an offset is no repetition (module doc)
    window = round(REPEAT_WINDOW_SECONDS * sr)
    hop = round(REPEAT_HOP_SECONDS * sr)
    min_lag, max_lag = (round(s * sr) for s in REPEAT_LAGS_SECONDS)
    before = np.zeros(0, np.float32)
    if past is not None:
        before = as_signal(past, "repetition's past")[-max_lag:].astype(np.float32)
        before = before - before.mean()
    first = math.ceil(max(0, min_lag - before.size) / hop) * hop
    starts = np.arange(first, x.size - window + 1, hop)  # of the stretches, in x
    if not starts.size:
        raise ValueError(
            f"repetition needs at least {(first + window) / sr:.3f} s of audio"
            f"{'' if past is None else ' after its past'}, got {x.size / sr:.3f} s"
        )
    stretches = x[starts[:, None] + np.arange(window)]
    starts = starts[np.sqrt(np.mean(np.square(stretches, dtype=np.float64), axis=1)) >= _SILENT_RMS]
    if not starts.size:
        return {"repeat": 0.0, "loop": 0.0, "copy_span": 0.0}
    # x with max_lag samples before it (the past, then silence), so stretch s spans [s, s + S)
    signal = np.concatenate([np.zeros(max_lag - before.size, np.float32), before, x])
    blocks = [
        _best_matches(signal, block, before.size, min_lag, max_lag, window, sr)
        for block in np.array_split(starts, math.ceil(starts.size / _STRETCHES_PER_FFT))
    ]
    best, loops = (np.concatenate(parts) for parts in zip(*blocks, strict=True))
    joined = (np.diff(starts) == hop) & (np.abs(np.diff(loops)) <= SAME_LAG_SECONDS)
    run = np.concatenate([[0], np.cumsum(~joined)])  # which run each stretch belongs to
    run_hops = np.bincount(run)[run] - 1
    return {
        "repeat": float(np.median(best)),
        "loop": float(np.median(loops)),
        "copy_span": float(np.median(run_hops) * hop + window) / sr,
    }


def _best_matches(
    signal: np.ndarray,
    starts: np.ndarray,
    offset: int,
    min_lag: int,
    max_lag: int,
    window: int,
    sr: int,
) -> tuple[np.ndarray, np.ndarray]:
    """(best match, its loop in seconds) of the stretches at `starts` (in the clip, which
    begins `max_lag` samples into `signal` and `offset` samples after the past's start)."""
    spans = signal[starts[:, None] + np.arange(max_lag + window)]
    scores = match_scores(torch.from_numpy(spans), min_lag, max_lag, window).numpy()
    lags = max_lag - np.arange(scores.shape[1])  # of the columns, in samples
    scores = np.where(lags[None] <= (starts + offset)[:, None], scores, -np.inf)
    best = scores.max(axis=1)
    # the near-best peaks (lags of a smooth signal next to a peak are near-best too)
    edge = np.full((len(starts), 1), -np.inf, scores.dtype)
    peak = (scores >= np.hstack([edge, scores[:, :-1]])) & (
        scores >= np.hstack([scores[:, 1:], edge])
    )
    near = peak & (scores >= (best - TIE * np.abs(best))[:, None])
    loops = lags[scores.shape[1] - 1 - np.argmax(near[:, ::-1], axis=1)] / sr  # the shortest
    return best, loops

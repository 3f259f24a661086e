"""Cheap statistics that say whether generated audio is plausible sound at all.

A model that collapsed produces silence (from the start or part-way: a dropout), a constant
(DC), a square wave stuck at full scale, or white noise. Each has a signature these numbers catch, so `audio_sanity` also returns a one-word
verdict. The thresholds are deliberately loose: they flag broken output, not bad music.
"""

from __future__ import annotations

import numpy as np

CLIP_LEVEL = 0.999  # |x| at or above this counts as clipped
SILENT_RMS = 1e-3  # -60 dBFS
DC_SHARE = 0.5  # |mean| >= DC_SHARE * rms: at least a quarter of the power is the DC offset
CLIPPED_RATE = 1e-3  # more than 0.1 % of samples at full scale
# Per-frame flatness of white noise is exp(-euler_gamma) ~= 0.56 (periodogram bins are
# exponentially distributed); tonal music sits below ~0.1, so 0.35 separates the two.
NOISE_FLATNESS = 0.35
# A take that falls silent part-way ("dropout"): at least this share of its SILENT_BLOCK-second
# blocks below SILENT_RMS. Measured, a seq2seq trained 60 minutes on real music went silent 3-6 s
# into 4 of 8 takes while each whole take still passed as "ok".
DROPOUT_SHARE = 0.25
SILENT_BLOCK_SECONDS = 0.5

FRAME = 512
HOP = 256
_AMIN = 1e-12  # power floor inside the logarithm
_ACTIVE_RMS = 1e-5  # frames quieter than this (-100 dBFS) are left out of the flatness average

VERDICTS = ("silent", "dc", "clipped", "noise", "dropout", "ok")


def as_signal(x: np.ndarray, name: str) -> np.ndarray:
    """`x` as float64, or a ValueError naming `name` unless it is a non-empty 1-D signal."""
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 1 or x.size == 0:
        raise ValueError(f"{name} expects a non-empty 1-D signal, got shape {x.shape}")
    return x


def _frames(x: np.ndarray, frame: int, hop: int) -> np.ndarray:
    """[n_frames, frame] views of `x`; a signal shorter than one frame is zero-padded to one."""
    if x.size < frame:
        x = np.pad(x, (0, frame - x.size))
    return np.lib.stride_tricks.sliding_window_view(x, frame)[::hop]


def spectral_flatness(x: np.ndarray, frame: int = FRAME, hop: int = HOP) -> float:
    """Geometric over arithmetic mean of each frame's power spectrum, averaged over frames.

    1 for a perfectly flat spectrum, ~0.56 for white noise, near 0 for tones. Frames below
    -100 dBFS are skipped (digital silence has no meaningful shape); all-silent input gives 0.
    """
    frames = _frames(np.asarray(x, dtype=np.float64), frame, hop)
    active = np.sqrt(np.mean(frames**2, axis=1)) >= _ACTIVE_RMS
    if not active.any():
        return 0.0
    power = np.abs(np.fft.rfft(frames[active] * np.hanning(frame), axis=1)) ** 2
    power = np.maximum(power, _AMIN)
    flatness = np.exp(np.mean(np.log(power), axis=1)) / np.mean(power, axis=1)
    return float(np.mean(flatness))


def zero_crossing_rate(x: np.ndarray) -> float:
    """Sign changes per sample (a sine of frequency f at rate sr gives 2 f / sr)."""
    x = np.asarray(x)
    if x.size < 2:
        return 0.0
    signs = np.signbit(x)
    return float(np.count_nonzero(signs[1:] != signs[:-1]) / (x.size - 1))


def silent_share(x: np.ndarray, sr: int) -> float:
    """The share of `x`'s `SILENT_BLOCK_SECONDS` blocks (the last one may be shorter) whose RMS is
    below `SILENT_RMS`."""
    block = max(1, round(SILENT_BLOCK_SECONDS * sr))
    starts = np.arange(0, x.size, block)
    power = np.add.reduceat(x**2, starts) / np.diff(np.append(starts, x.size))
    return float(np.mean(np.sqrt(power) < SILENT_RMS))


def verdict(
    rms: float, dc_offset: float, clip_rate: float, flatness: float, silent: float = 0.0
) -> str:
    """The first failure that applies, in the order of `VERDICTS`, else "ok" (`silent`: the
    `silent_share`)."""
    if rms < SILENT_RMS:
        return "silent"
    if abs(dc_offset) >= DC_SHARE * rms:
        return "dc"
    if clip_rate > CLIPPED_RATE:
        return "clipped"
    if flatness >= NOISE_FLATNESS:
        return "noise"
    if silent >= DROPOUT_SHARE:
        return "dropout"
    return "ok"


def audio_sanity(x: np.ndarray, sr: int) -> dict[str, float | str]:
    """Statistics of a mono clip of floats in [-1, 1].

    Returns rms, dc_offset (the mean), peak (max |x|), clip_rate (share of samples with
    |x| >= 0.999), spectral_flatness, zero_crossing_rate (per sample), silent_share (of its
    0.5-s blocks), seconds and a verdict: "silent", "dc", "clipped", "noise", "dropout" (a
    quarter or more of it silent) or "ok".
    """
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 1 or x.size == 0:
        raise ValueError(f"audio_sanity expects a non-empty 1-D signal, got shape {x.shape}")
    rms = float(np.sqrt(np.mean(x**2)))
    dc_offset = float(np.mean(x))
    clip_rate = float(np.mean(np.abs(x) >= CLIP_LEVEL))
    flatness = spectral_flatness(x)
    silent = silent_share(x, sr)
    return {
        "seconds": x.size / sr,
        "rms": rms,
        "dc_offset": dc_offset,
        "peak": float(np.max(np.abs(x))),
        "clip_rate": clip_rate,
        "spectral_flatness": flatness,
        "zero_crossing_rate": zero_crossing_rate(x),
        "silent_share": silent,
        "verdict": verdict(rms, dc_offset, clip_rate, flatness, silent),
    }

"""The lofi chain applied to the mixed music: tape wobble, tone, saturation, vinyl noise, level."""

from __future__ import annotations

import numpy as np

from lofibeats.audio.synth.dsp import fft_filter
from lofibeats.audio.synth.music import TapeParams

PEAK_DBFS = -1.0


def tape_wobble(x: np.ndarray, sr: int, tape: TapeParams, rng: np.random.Generator) -> np.ndarray:
    """Wow (slow) and flutter (fast) pitch drift, by reading the signal through a varying delay.

    A delay d(t) = A sin(2 pi f t) bends pitch by up to 2 pi f A, so A is set from the depth in cents.
    Wow mixes two incommensurate rates so the drift never repeats exactly.
    """
    t = np.arange(len(x)) / sr
    delay = np.zeros_like(t)
    for hz, cents, weight in (
        (tape.wow_hz, tape.wow_cents, 0.75),
        (tape.wow_hz * 1.618, tape.wow_cents, 0.25),
        (tape.flutter_hz, tape.flutter_cents, 1.0),
    ):
        amplitude = weight * (2 ** (cents / 1200) - 1) / (2 * np.pi * hz)
        delay += amplitude * (1 + np.sin(2 * np.pi * hz * t + rng.uniform(0, 2 * np.pi)))
    positions = np.arange(len(x)) - delay * sr
    return np.interp(positions, np.arange(len(x)), x)


def saturate(x: np.ndarray, drive: float) -> np.ndarray:
    """tanh soft clipping of the peak-normalised signal; `drive` near 1 is almost clean."""
    peak = np.max(np.abs(x))
    if peak == 0:
        return x
    return np.tanh(drive * x / peak) / np.tanh(drive)


def vinyl_noise(
    n: int, sr: int, tape: TapeParams, rms: float, rng: np.random.Generator
) -> np.ndarray:
    """Crackle (sparse clicks with heavy-tailed sizes) and hiss, scaled against the music's RMS."""
    count = rng.poisson(tape.crackles_per_s * n / sr)
    impulses = np.zeros(n)
    sizes = np.minimum(rng.pareto(2.5, count) + 1.0, 6.0) * rng.choice([-1.0, 1.0], count)
    np.add.at(impulses, rng.integers(0, n, count), sizes)
    click = np.diff(np.exp(-np.arange(max(3, sr // 1000) + 1) / (0.0002 * sr)))  # a ~1 ms snap
    crackle = np.convolve(impulses, click / np.max(np.abs(click)))[:n]
    hiss = fft_filter(rng.standard_normal(n), sr, low_pass=min(9000.0, 0.4 * sr), high_pass=800.0)
    hiss *= 10 ** (tape.hiss_db / 20) * rms / max(np.std(hiss), 1e-12)
    return 0.35 * rms * crackle + hiss


def fade(x: np.ndarray, sr: int, seconds: float = 0.02) -> np.ndarray:
    """Short fades at both ends so a track never starts or stops with a click."""
    k = min(len(x) // 2, round(seconds * sr))
    if k > 0:
        ramp = np.linspace(0.0, 1.0, k, endpoint=False)
        x[:k] *= ramp
        x[len(x) - k :] *= ramp[::-1]
    return x


def normalize_peak(x: np.ndarray, dbfs: float = PEAK_DBFS) -> np.ndarray:
    peak = np.max(np.abs(x))
    return x if peak == 0 else x * (10 ** (dbfs / 20) / peak)

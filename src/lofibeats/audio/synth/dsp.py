"""Small vectorised DSP helpers shared by the voices and the effects."""

from __future__ import annotations

import numpy as np

NYQUIST_MARGIN = 0.45  # partials above this fraction of the sample rate are dropped (no aliasing)


def fast_fft_len(m: int) -> int:
    """The smallest 2^a 3^b 5^c >= m: lengths numpy's FFT handles fastest."""
    best = 1 << max(0, m - 1).bit_length()
    p5 = 1
    while p5 < best:
        p35 = p5
        while p35 < best:
            p = p35
            while p < m:
                p *= 2
            best = min(best, p)
            p35 *= 3
        p5 *= 5
    return best


def fft_filter(
    x: np.ndarray,
    sr: int,
    low_pass: float | None = None,
    high_pass: float | None = None,
    order: int = 2,
) -> np.ndarray:
    """Zero-phase Butterworth-shaped filtering in the frequency domain (12 dB/octave at order 2).

    The signal is zero-padded by 50 ms so the filter's short ringing does not wrap around.
    """
    n = len(x)
    nfft = fast_fft_len(n + max(16, sr // 20))
    freqs = np.fft.rfftfreq(nfft, 1.0 / sr)
    gain = np.ones_like(freqs)
    if low_pass is not None:
        gain /= np.sqrt(1.0 + (freqs / low_pass) ** (2 * order))
    if high_pass is not None:
        ratio = np.divide(high_pass, freqs, out=np.full_like(freqs, np.inf), where=freqs > 0)
        gain /= np.sqrt(1.0 + ratio ** (2 * order))
    return np.fft.irfft(np.fft.rfft(x, nfft) * gain, nfft)[:n]


def partial(t: np.ndarray, hz: float, sr: int, phase: float = 0.0) -> np.ndarray:
    """sin(2 pi hz t + phase), or silence when `hz` would alias at `sr`."""
    if hz >= NYQUIST_MARGIN * sr:
        return np.zeros_like(t)
    return np.sin(2 * np.pi * hz * t + phase)


def release_envelope(n: int, sr: int, gate: float, release: float) -> np.ndarray:
    """1 while the key is held (`gate` seconds), then a fall to exactly 0 over `release` seconds."""
    t = np.arange(n) / sr
    after = np.maximum(t - gate, 0.0)
    return np.exp(-after / (release / 4)) * np.clip(1.0 - after / release, 0.0, 1.0)


def attack_envelope(n: int, sr: int, attack: float) -> np.ndarray:
    return np.minimum(np.arange(n) / max(1.0, attack * sr), 1.0)

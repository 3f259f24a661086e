"""The instruments: drum one-shots and pitched voices (electric piano, bass, lead).

Each returns a float64 array of about unit peak; the mixer scales it by velocity. Partials that
would alias at the render rate are dropped, so an 8 kHz render is as clean as a 22 kHz one.
"""

from __future__ import annotations

import numpy as np

from lofibeats.audio.synth.dsp import (
    NYQUIST_MARGIN,
    attack_envelope,
    fft_filter,
    partial,
    release_envelope,
)
from lofibeats.audio.synth.music import KeysParams, KitParams, midi_to_hz


def _time(sr: int, seconds: float) -> np.ndarray:
    return np.arange(max(1, round(seconds * sr))) / sr


def _unit(x: np.ndarray) -> np.ndarray:
    peak = np.max(np.abs(x))
    return x / peak if peak > 0 else x


def kick(sr: int, kit: KitParams) -> np.ndarray:
    """A sine with a fast downward pitch sweep, plus a short click."""
    t = _time(sr, kit.kick_decay * 3)
    freq = kit.kick_hz + (3 * kit.kick_hz - kit.kick_hz) * np.exp(-t / 0.025)
    body = np.sin(2 * np.pi * np.cumsum(freq) / sr) * np.exp(-t / kit.kick_decay)
    click = np.exp(-t / 0.003) * partial(t, min(1200.0, 0.4 * sr), sr)
    return _unit(np.tanh(1.5 * (body + 0.15 * click)))


def snare(sr: int, kit: KitParams, rng: np.random.Generator) -> np.ndarray:
    """Band-passed noise over a two-partial body."""
    t = _time(sr, kit.snare_decay * 4)
    body = np.exp(-t / 0.045) * (
        partial(t, kit.snare_hz, sr) + 0.5 * partial(t, 1.75 * kit.snare_hz, sr)
    )
    noise = fft_filter(
        rng.standard_normal(len(t)), sr, low_pass=min(7000.0, 0.4 * sr), high_pass=1200.0
    )
    noise = _unit(noise) * np.exp(-t / kit.snare_decay)
    return _unit(0.6 * body + noise)


def rim(sr: int, kit: KitParams) -> np.ndarray:
    """A short woody click: two damped partials."""
    t = _time(sr, 0.08)
    return _unit(
        np.exp(-t / 0.012) * (partial(t, 1650.0, sr) + 0.6 * partial(t, 820.0, sr))
        + np.exp(-t / 0.002) * 0.5
    )


def hat(sr: int, kit: KitParams, rng: np.random.Generator, open_: bool = False) -> np.ndarray:
    """High-passed noise with a short (closed) or long (open) decay."""
    decay = kit.hat_decay * (6 if open_ else 1)
    t = _time(sr, decay * 4)
    corner = min(kit.hat_hz, 0.3 * sr)
    noise = fft_filter(rng.standard_normal(len(t)), sr, high_pass=corner, order=3)
    return _unit(noise * np.exp(-t / decay))


def epiano(sr: int, midi: int, gate: float, keys: KeysParams) -> np.ndarray:
    """An FM electric piano: 1:1 FM whose index decays (the bark), a bell-like tine partial at the
    attack, a soft second harmonic, and two voices detuned against each other (the shimmer)."""
    f0 = midi_to_hz(midi)
    decay = keys.decay * (261.6 / f0) ** 0.5  # high notes die sooner, as on a real piano
    release = 0.25
    t = _time(sr, gate + release)
    amp = (
        attack_envelope(len(t), sr, 0.002)
        * np.exp(-t / decay)
        * release_envelope(len(t), sr, gate, release)
    )
    index = keys.fm_index * np.exp(-t / 0.15) + 0.25
    sidebands = int(np.ceil(keys.fm_index + 2))  # FM energy above this harmonic is negligible
    out = np.zeros_like(t)
    for cents in (-keys.detune_cents, keys.detune_cents):
        f = f0 * 2 ** (cents / 1200)
        w = 2 * np.pi * f * t
        if f * sidebands < NYQUIST_MARGIN * sr:
            out += np.sin(w + index * np.sin(w))
        else:
            out += np.sin(w)
        out += 0.15 * np.exp(-t / (0.4 * decay)) * partial(t, 2 * f, sr)
        out += keys.tine * np.exp(-t / 0.03) * partial(t, 7.0 * f, sr)
    return _unit(out * amp)


def bass(sr: int, midi: int, gate: float) -> np.ndarray:
    """A round, slightly saturated electric bass."""
    f = midi_to_hz(midi)
    release = 0.06
    t = _time(sr, gate + release)
    env = (
        attack_envelope(len(t), sr, 0.008)
        * np.exp(-t / 0.9)
        * release_envelope(len(t), sr, gate, release)
    )
    tone = partial(t, f, sr) + 0.3 * partial(t, 2 * f, sr) + 0.12 * partial(t, 3 * f, sr)
    pluck = 1 + 0.5 * np.exp(-t / 0.05)
    return _unit(np.tanh(1.4 * tone * env * pluck))


def lead(sr: int, midi: int, gate: float) -> np.ndarray:
    """A mellow, flute-like lead with delayed vibrato."""
    f = midi_to_hz(midi)
    release = 0.15
    t = _time(sr, gate + release)
    vibrato = 1 + 0.004 * np.sin(2 * np.pi * 5.0 * t) * np.clip((t - 0.15) / 0.2, 0.0, 1.0)
    phase = 2 * np.pi * f * np.cumsum(vibrato) / sr
    tone = np.sin(phase)
    for h, a in ((2, 0.2), (3, 0.08)):
        if h * f < NYQUIST_MARGIN * sr:
            tone += a * np.sin(h * phase)
    env = (
        attack_envelope(len(t), sr, 0.03)
        * np.exp(-t / 3.0)
        * release_envelope(len(t), sr, gate, release)
    )
    return _unit(tone * env)

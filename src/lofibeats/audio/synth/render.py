"""Score to audio: voice every note and hit, mix the stems, then run the lofi chain."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from lofibeats.audio.synth import effects, voices
from lofibeats.audio.synth.arrange import Hit, Note, arrange
from lofibeats.audio.synth.dsp import fft_filter
from lofibeats.audio.synth.music import TrackPlan

# Mix balance: each stem's RMS (while it plays) in dB, before the lofi chain.
_STEM_DB = {"drums": -14.0, "keys": -16.0, "bass": -19.0, "lead": -21.0}
_HAT_VARIANTS = 4


def _place(out: np.ndarray, start: int, sound: np.ndarray, gain: float) -> None:
    end = min(len(out), start + len(sound))
    if start < end:
        out[start:end] += gain * sound[: end - start]


def _mix_notes(
    notes: Sequence[Note], n: int, sr: int, voice: Callable[[int, float], np.ndarray]
) -> np.ndarray:
    """Sum the notes; identical (pitch, length) notes reuse one render, so looped parts are cheap."""
    out = np.zeros(n)
    cache: dict[tuple[int, float], np.ndarray] = {}
    for note in notes:
        start = round(note.start * sr)
        if start >= n:
            continue
        key = (note.midi, note.dur)
        if key not in cache:
            cache[key] = voice(note.midi, max(note.dur, 0.05))
        _place(out, start, cache[key], note.vel)
    return out


def _mix_drums(
    hits: Sequence[Hit], n: int, sr: int, plan: TrackPlan, rng: np.random.Generator
) -> np.ndarray:
    kit = plan.kit
    sounds = {
        "kick": [voices.kick(sr, kit)],
        "snare": [1.3 * voices.snare(sr, kit, rng) for _ in range(2)],
        "rim": [0.8 * voices.rim(sr, kit)],
        "hat": [1.6 * voices.hat(sr, kit, rng) for _ in range(_HAT_VARIANTS)],
        "open_hat": [1.0 * voices.hat(sr, kit, rng, open_=True)],
    }
    out = np.zeros(n)
    choices = rng.integers(0, _HAT_VARIANTS, len(hits))
    for hit, choice in zip(hits, choices, strict=True):
        variants = sounds[
            hit.drum
        ]  # round-robin variants keep repeated hits from sounding identical
        _place(out, round(hit.start * sr), variants[choice % len(variants)], hit.vel**1.5)
    return out


def _at_level(stem: np.ndarray, db: float) -> np.ndarray:
    """Scale `stem` so its RMS over the stretches where it sounds is `db` (silence stays silent)."""
    sounding = np.abs(stem) > 1e-4
    if not sounding.any():
        return stem
    rms = np.sqrt(np.mean(stem[sounding] ** 2))
    return stem * (10 ** (db / 20) / rms)


def render_track(plan: TrackPlan, seconds: float, sr: int) -> np.ndarray:
    """One mono track of `round(seconds * sr)` float32 samples, peak at -1 dBFS."""
    n = max(1, round(seconds * sr))
    score = arrange(plan, seconds)
    rng = np.random.default_rng([plan.seed, plan.index, 2])
    t = np.arange(n) / sr

    keys = _mix_notes(score.keys, n, sr, lambda m, g: voices.epiano(sr, m, g, plan.keys))
    keys *= 1 - plan.keys.tremolo_depth * 0.5 * (1 + np.sin(2 * np.pi * plan.keys.tremolo_hz * t))
    stems = {
        "drums": _mix_drums(score.drums, n, sr, plan, rng),
        "keys": keys,
        "bass": _mix_notes(score.bass, n, sr, lambda m, g: voices.bass(sr, m, g)),
        "lead": _mix_notes(score.lead, n, sr, lambda m, g: voices.lead(sr, m, g)),
    }
    music = sum(_at_level(stem, _STEM_DB[name]) for name, stem in stems.items())

    tape = plan.tape
    music = effects.tape_wobble(music, sr, tape, rng)
    music = fft_filter(music, sr, low_pass=min(tape.cutoff_hz, 0.45 * sr), high_pass=30.0)
    music = effects.saturate(music, tape.drive)
    rms = float(np.sqrt(np.mean(music**2)))
    mix = music + effects.vinyl_noise(n, sr, tape, rms, rng)
    return effects.normalize_peak(effects.fade(mix, sr)).astype(np.float32)

"""The beat and flatness measures on audio made here: white noise, a click track, a chord, and a
track of the built-in lofi corpus (issue 11 measured noise 0.12 / 0.56, the corpus 0.53 / 0.003)."""

from __future__ import annotations

import numpy as np
import pytest

from lofibeats.audio.synth import plan_corpus, render_track
from lofibeats.metrics.music import band_flatness, beat_strength, music_stats, onset_envelope

from helpers import sine

SR = 16000
SECONDS = 12.0


def noise(seconds: float = SECONDS, sr: int = SR, seed: int = 0) -> np.ndarray:
    return 0.1 * np.random.default_rng(seed).standard_normal(round(seconds * sr))


def click_track(bpm: float = 90.0, seconds: float = SECONDS, sr: int = SR) -> np.ndarray:
    """A 5-ms decaying noise burst on every beat."""
    x = np.zeros(round(seconds * sr))
    burst = np.random.default_rng(1).standard_normal(round(0.005 * sr))
    burst *= 0.8 * np.exp(-np.arange(burst.size) / (0.001 * sr))
    for start in np.arange(0, x.size - burst.size, 60.0 / bpm * sr).astype(int):
        x[start : start + burst.size] += burst
    return x


def chord(seconds: float = SECONDS, sr: int = SR) -> np.ndarray:
    """A sustained Cmaj7 of four sines."""
    return sum(sine(hz, 0.1, seconds, sr) for hz in (261.63, 329.63, 392.0, 493.88))


@pytest.fixture(scope="module")
def lofi_tracks() -> list[np.ndarray]:
    plans = plan_corpus(8, 0)
    return [render_track(plans[i], SECONDS, SR) for i in (0, 5)]


def test_white_noise_is_the_ceiling() -> None:
    for seed in range(3):
        x = noise(seed=seed)
        assert 0.06 < beat_strength(x, SR) < 0.2
        assert band_flatness(x, SR) == pytest.approx(np.exp(-np.euler_gamma), abs=0.02)


def test_click_track_has_a_strong_beat() -> None:
    x = click_track()
    assert beat_strength(x, SR) > 0.6
    # under noise 20 dB down the pulse is still there and the noise's flatness shows
    noisy = x + 0.01 * np.random.default_rng(2).standard_normal(x.size)
    assert beat_strength(noisy, SR) > 0.6
    assert band_flatness(noisy, SR) > 0.4


def test_sustained_chord_is_tonal_and_has_no_beat() -> None:
    x = chord()
    assert band_flatness(x, SR) < 1e-3
    # a little noise, as any recording or quantised output has: no pulse
    noisy = x + 0.001 * np.random.default_rng(3).standard_normal(x.size)
    assert beat_strength(noisy, SR) < 0.25
    assert band_flatness(noisy, SR) < 0.01


def test_steady_tone_has_no_onsets() -> None:
    """A pure tone's only flux is STFT phase jitter, periodic with the hop: not a beat."""
    assert beat_strength(sine(440.0, 0.3, SECONDS, SR), SR) == 0.0
    assert beat_strength(np.zeros(SR * 4), SR) == 0.0
    assert band_flatness(np.zeros(SR * 4), SR) == 0.0


def test_builtin_corpus_reads_as_music(lofi_tracks: list[np.ndarray]) -> None:
    for x in lofi_tracks:
        assert beat_strength(x, SR) > 0.4
        assert band_flatness(x, SR) < 0.02


@pytest.mark.parametrize("sr", [8000, 22050, 44100])
def test_any_sample_rate(sr: int) -> None:
    assert 0.06 < beat_strength(noise(sr=sr), sr) < 0.2
    assert band_flatness(noise(sr=sr), sr) == pytest.approx(0.56, abs=0.02)
    assert beat_strength(click_track(sr=sr), sr) > 0.6
    assert band_flatness(chord(sr=sr), sr) < 1e-3
    envelope, rate = onset_envelope(noise(seconds=2.0, sr=sr), sr)
    assert rate == pytest.approx(100.0, rel=0.01)


def test_short_clips_are_one_segment_and_too_short_is_an_error() -> None:
    # 2 s: three clicks, two pairs a beat apart (the autocorrelation is not rescaled per lag)
    assert beat_strength(click_track(seconds=2.0), SR) > 0.4
    assert beat_strength(noise(seconds=2.0), SR) < 0.3
    with pytest.raises(ValueError, match="at least 1 s"):
        beat_strength(noise(seconds=0.9), SR)
    with pytest.raises(ValueError, match="1-D"):
        beat_strength(np.zeros((2, SR)), SR)
    assert band_flatness(noise(seconds=0.01), SR) > 0.3  # shorter than a frame: zero-padded


def test_music_stats_adds_the_music_measures_to_the_sanity_stats() -> None:
    x = noise() + 0.05
    stats = music_stats(x, SR)
    assert stats["dc_offset"] == pytest.approx(0.05, abs=0.005)
    assert stats["beat"] == beat_strength(x, SR)
    assert stats["flatness"] == band_flatness(x, SR)
    assert stats["verdict"] == "noise"
    assert {"rms", "peak", "clip_rate", "spectral_flatness"} <= set(stats)
    assert {"repeat", "loop", "copy_span"} <= set(stats)  # tests/test_repetition.py

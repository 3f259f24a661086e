"""The repetition measures on audio made here: exact loops of a built-in track (a 0.2-s stutter,
a 2-s phrase), the track itself, white noise, a continuation replaying its past, and bad input."""

from __future__ import annotations

import numpy as np
import pytest

from lofibeats.audio.synth import plan_corpus, render_track
from lofibeats.metrics.music import music_stats
from lofibeats.metrics.repetition import repetition

SR = 16000
SECONDS = 10.0


@pytest.fixture(scope="module")
def track() -> np.ndarray:
    return render_track(plan_corpus(8, 0)[0], SECONDS, SR)


def looped(x: np.ndarray, period: float, seconds: float = SECONDS, sr: int = SR) -> np.ndarray:
    """The first `period` s of `x` played over and over for `seconds` s."""
    return np.resize(x[: round(period * sr)], round(seconds * sr))


def noise(seconds: float = SECONDS, sr: int = SR, seed: int = 0) -> np.ndarray:
    return 0.1 * np.random.default_rng(seed).standard_normal(round(seconds * sr))


@pytest.mark.parametrize("period", [0.2, 2.0])
def test_an_exact_loop_repeats_at_its_period(track: np.ndarray, period: float) -> None:
    r = repetition(looped(track, period), SR)
    assert r["repeat"] > 0.99
    assert r["loop"] == pytest.approx(period, abs=1 / SR)  # not 2 or 3 periods, as good a match
    # one copy, from the first stretch (every 0.25 s) a period into the clip to its end
    first = max(0.25, np.ceil(period / 0.25) * 0.25)
    assert r["copy_span"] == pytest.approx(SECONDS - first)


def test_music_repeats_less_than_a_loop_and_more_than_noise(track: np.ndarray) -> None:
    music = repetition(track, SR)
    assert 0.3 < music["repeat"] < 0.9
    assert music["copy_span"] < 2.0  # its best lags wander
    for seed in range(2):
        assert repetition(noise(seed=seed), SR)["repeat"] < 0.1


def test_an_offset_is_no_repetition(track: np.ndarray) -> None:
    past = noise(4.0, seed=1)
    for clip in (noise(), track):
        centred = repetition(clip, SR, past=past)
        for offset in (0.02, 0.05):  # the take off zero, its past off the other way
            off = repetition(clip + offset, SR, past=past - offset)
            assert off["repeat"] == pytest.approx(centred["repeat"], abs=0.01)


def test_a_past_counts_as_what_came_before(track: np.ndarray) -> None:
    """A continuation that replays the last 1.5 s of its prime is a copy from its first stretch;
    a real continuation of a different moment is not."""
    prime, after = track[: 4 * SR], track[4 * SR :]
    replay = looped(prime[-round(1.5 * SR) :], 1.5, 6.0)
    r = repetition(replay, SR, past=prime)
    assert r["repeat"] > 0.99 and r["loop"] == pytest.approx(1.5, abs=1 / SR)
    assert r["copy_span"] == pytest.approx(6.0)  # the whole clip, from its first stretch
    assert repetition(replay, SR)["copy_span"] < 5.0  # alone, its first 1.5 s have no source
    assert repetition(after, SR, past=prime)["repeat"] < 0.9


@pytest.mark.parametrize("sr", [8000, 22050, 44100])
def test_any_sample_rate(sr: int) -> None:
    x = noise(seconds=1.0, sr=sr, seed=3)
    r = repetition(looped(x, 0.7, 5.0, sr), sr)
    assert r["repeat"] > 0.99 and r["loop"] == pytest.approx(0.7, abs=1 / sr)
    assert repetition(noise(5.0, sr), sr)["repeat"] < 0.15


def test_bad_input_is_an_error_and_silence_reads_zero() -> None:
    with pytest.raises(ValueError, match="1-D"):
        repetition(np.zeros(0), SR)
    with pytest.raises(ValueError, match="1-D"):
        repetition(np.zeros((2, SR)), SR)
    with pytest.raises(ValueError, match="at least 0.750 s"):
        repetition(noise(seconds=0.7), SR)
    with pytest.raises(ValueError, match="at least 0.500 s of audio after its past"):
        repetition(noise(seconds=0.4), SR, past=noise(seconds=1.0))
    with pytest.raises(ValueError, match="past"):
        repetition(noise(seconds=1.0), SR, past=np.zeros(0))
    assert repetition(np.zeros(3 * SR), SR) == {"repeat": 0.0, "loop": 0.0, "copy_span": 0.0}
    # silent past: nothing to copy from, so the first stretches' best matches are 0
    assert repetition(noise(seconds=1.0), SR, past=np.zeros(SR))["repeat"] < 0.1


def test_music_stats_reports_repetition(track: np.ndarray) -> None:
    prime = track[: 2 * SR]
    stats = music_stats(track[2 * SR :], SR, prime)
    assert {k: stats[k] for k in ("repeat", "loop", "copy_span")} == repetition(
        track[2 * SR :], SR, prime
    )

"""Audio sanity statistics and the Frechet log-mel distance on signals with known answers."""

from __future__ import annotations

import numpy as np
import pytest

from lofibeats.metrics.frechet import frechet_distance, frechet_logmel, logmel_stats
from lofibeats.metrics.sanity import audio_sanity, spectral_flatness, zero_crossing_rate

from helpers import SR, sine


def _noise(seed: int, std: float = 0.2, seconds: float = 1.0) -> np.ndarray:
    return np.clip(np.random.default_rng(seed).normal(0.0, std, round(seconds * SR)), -1, 1)


def test_sine_statistics() -> None:
    stats = audio_sanity(sine(1000, amp=0.5), SR)
    assert stats["rms"] == pytest.approx(0.5 / np.sqrt(2), rel=1e-3)
    assert stats["dc_offset"] == pytest.approx(0.0, abs=1e-6)
    assert stats["peak"] == pytest.approx(0.5, rel=1e-3)
    assert stats["clip_rate"] == 0.0
    assert stats["zero_crossing_rate"] == pytest.approx(2 * 1000 / SR, rel=0.01)
    assert stats["spectral_flatness"] < 0.01
    assert stats["seconds"] == pytest.approx(1.0)
    assert stats["verdict"] == "ok"


def test_white_noise_flatness_is_exp_minus_gamma() -> None:
    # periodogram bins of white noise are exponential: E[log] = log(mean) - euler_gamma
    assert spectral_flatness(_noise(0)) == pytest.approx(np.exp(-np.euler_gamma), abs=0.03)
    assert audio_sanity(_noise(0), SR)["verdict"] == "noise"
    assert zero_crossing_rate(_noise(1)) == pytest.approx(0.5, abs=0.02)


def test_tonal_mixture_with_a_little_noise_is_ok() -> None:
    chord = sine(110, 0.3) + sine(220, 0.1) + sine(330, 0.2) + _noise(2, std=0.01)
    assert audio_sanity(chord, SR)["verdict"] == "ok"


@pytest.mark.parametrize(
    ("signal", "verdict"),
    [
        (np.zeros(SR), "silent"),
        (sine(440, amp=1e-4), "silent"),
        (np.full(SR, 0.3), "dc"),
        (sine(440, 0.1) + 0.2, "dc"),
        (np.clip(sine(200, amp=3.0), -1, 1), "clipped"),
        (sine(440, 0.5), "ok"),
    ],
)
def test_verdicts(signal: np.ndarray, verdict: str) -> None:
    assert audio_sanity(signal, SR)["verdict"] == verdict


def test_a_take_that_falls_silent_part_way_is_a_dropout() -> None:
    """silent_share counts 0.5-s blocks below -60 dBFS; a quarter of them makes a "dropout"
    (the whole take's RMS and spectrum still pass)."""
    music = sine(110, 0.3, 8.0) + sine(165, 0.2, 8.0)
    half = music.copy()
    half[4 * SR :] = 1e-5 * np.sign(half[4 * SR :])  # a -100 dBFS tail
    stats = audio_sanity(half, SR)
    assert stats["silent_share"] == 0.5 and stats["verdict"] == "dropout"
    pause = music.copy()
    pause[SR : SR + SR // 2] = 0.0  # one 0.5-s block of 16: a pause, not a dropout
    assert audio_sanity(pause, SR)["silent_share"] == pytest.approx(1 / 16)
    assert audio_sanity(pause, SR)["verdict"] == "ok"
    assert audio_sanity(np.zeros(SR), SR)["verdict"] == "silent"  # all of it: silent


def test_clip_rate_counts_full_scale_samples() -> None:
    x = np.zeros(1000)
    x[:10] = 1.0
    x[10:15] = -0.9995
    x[15:20] = 0.998
    assert audio_sanity(x, SR)["clip_rate"] == pytest.approx(0.015)


def test_silent_and_short_inputs() -> None:
    assert spectral_flatness(np.zeros(SR)) == 0.0
    assert audio_sanity(np.array([0.5, -0.5, 0.5]), SR)["zero_crossing_rate"] == 1.0
    with pytest.raises(ValueError, match="1-D"):
        audio_sanity(np.zeros((2, 10)), SR)


def test_frechet_distance_of_known_gaussians() -> None:
    rng = np.random.default_rng(0)
    a = rng.normal(size=(5, 5))
    cov = a @ a.T + np.eye(5)
    mu = rng.normal(size=5)
    assert frechet_distance(mu, cov, mu, cov) == pytest.approx(0.0, abs=1e-6)
    assert frechet_distance(mu, cov, mu + 2.0, cov) == pytest.approx(4.0 * 5, rel=1e-6)
    # commuting (diagonal) covariances: sum of (sqrt(a) - sqrt(b))^2
    da, db = np.diag([1.0, 4.0, 9.0]), np.diag([4.0, 4.0, 1.0])
    assert frechet_distance(np.zeros(3), da, np.zeros(3), db) == pytest.approx(1.0 + 0.0 + 4.0)
    # singular covariances stay finite and non-negative
    assert frechet_distance(np.zeros(3), np.zeros((3, 3)), np.zeros(3), da) == pytest.approx(14.0)


def test_frechet_distance_matches_scipy_sqrtm() -> None:
    from scipy import linalg  # the dev extra's: a reference sqrtm, not a dependency of lofibeats

    rng = np.random.default_rng(1)
    a, b = rng.normal(size=(2, 6, 6))
    cov_a, cov_b = a @ a.T, b @ b.T + 0.1 * np.eye(6)
    mu_a, mu_b = rng.normal(size=(2, 6))
    root = linalg.sqrtm(cov_a @ cov_b).real
    expected = np.sum((mu_a - mu_b) ** 2) + np.trace(cov_a + cov_b - 2 * root)
    assert frechet_distance(mu_a, cov_a, mu_b, cov_b) == pytest.approx(expected, rel=1e-6)
    assert frechet_distance(mu_b, cov_b, mu_a, cov_a) == pytest.approx(expected, rel=1e-6)


def test_frechet_logmel_orders_same_vs_different_material() -> None:
    noise_a = [_noise(seed) for seed in range(4)]
    noise_b = [_noise(seed) for seed in range(4, 8)]
    tones = [sine(f, 0.3) + sine(2 * f, 0.1) for f in (110, 147, 196, 262)]
    same = frechet_logmel(noise_a, noise_b, SR)
    different = frechet_logmel(noise_a, tones, SR)
    assert same >= 0.0
    assert different > 50 * max(same, 1.0)
    assert frechet_logmel(tones, noise_a, SR) == pytest.approx(different, rel=1e-6)


def test_logmel_stats_shapes() -> None:
    mu, cov = logmel_stats([sine(440, 0.5), sine(880, 0.5, seconds=0.5)], SR, n_mels=40)
    assert mu.shape == (40,) and cov.shape == (40, 40)
    np.testing.assert_allclose(cov, cov.T)
    with pytest.raises(ValueError, match="at least one clip"):
        logmel_stats([], SR)

"""Frechet distance between the log-mel frame statistics of two sets of clips.

Each set is summarised by the mean and covariance of its log-mel frames (one 80-dim vector per
STFT frame, in dB), and the two Gaussians are compared with the Frechet (2-Wasserstein) distance

    |mu_a - mu_b|^2 + tr(C_a + C_b - 2 (C_a C_b)^(1/2))

The matrix square root uses the symmetric form tr((C_a C_b)^(1/2)) = tr((S C_b S)^(1/2)) with
S = C_a^(1/2), so two `numpy.linalg.eigh` calls replace scipy's `sqrtm` (scipy is not a
dependency) and stay real and stable for singular covariances. Units are dB^2.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from lofibeats.audio.spectrogram import log_mel_spectrogram

N_MELS = 80


def logmel_stats(
    clips: Sequence[np.ndarray], sr: int, n_mels: int = N_MELS
) -> tuple[np.ndarray, np.ndarray]:
    """Mean [n_mels] and covariance [n_mels, n_mels] of the log-mel frames of all `clips`."""
    if len(clips) == 0:
        raise ValueError("logmel_stats needs at least one clip")
    frames = np.concatenate(
        [log_mel_spectrogram(np.asarray(c, dtype=np.float32), sr, n_mels=n_mels).T for c in clips],
        axis=0,
    ).astype(np.float64)
    if frames.shape[0] < 2:
        raise ValueError(
            "logmel_stats needs at least two log-mel frames in total: give longer clips"
        )
    return frames.mean(axis=0), np.cov(frames, rowvar=False)


def _psd_sqrt(matrix: np.ndarray) -> np.ndarray:
    """Square root of a symmetric positive semi-definite matrix (negative round-off clipped)."""
    values, vectors = np.linalg.eigh((matrix + matrix.T) / 2)
    return (vectors * np.sqrt(np.clip(values, 0.0, None))) @ vectors.T


def frechet_distance(
    mu_a: np.ndarray, cov_a: np.ndarray, mu_b: np.ndarray, cov_b: np.ndarray
) -> float:
    """Frechet distance between N(mu_a, cov_a) and N(mu_b, cov_b); 0 for identical Gaussians."""
    root_a = _psd_sqrt(cov_a)
    cross = root_a @ cov_b @ root_a
    trace_sqrt = np.sum(np.sqrt(np.clip(np.linalg.eigvalsh((cross + cross.T) / 2), 0.0, None)))
    distance = np.sum((mu_a - mu_b) ** 2) + np.trace(cov_a) + np.trace(cov_b) - 2.0 * trace_sqrt
    return float(max(distance, 0.0))


def frechet_logmel(
    a_list: Sequence[np.ndarray], b_list: Sequence[np.ndarray], sr: int, n_mels: int = N_MELS
) -> float:
    """Frechet distance between the log-mel frame statistics of clip sets `a_list` and `b_list`."""
    return frechet_distance(*logmel_stats(a_list, sr, n_mels), *logmel_stats(b_list, sr, n_mels))

"""Log-mel spectrograms: shapes, levels, where a tone lands, and the PNG figure."""

from __future__ import annotations

import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from lofibeats.audio.spectrogram import (
    FLOOR_DB,
    log_mel_spectrogram,
    save_spectrogram_png,
    spectrogram_figure,
)

from helpers import sine


def _band_centres_hz(n_mels: int, sr: int) -> np.ndarray:
    mel_max = 2595 * np.log10(1 + (sr / 2) / 700)
    mels = np.linspace(0, mel_max, n_mels + 2)[1:-1]
    return 700 * (10 ** (mels / 2595) - 1)


@pytest.mark.parametrize(
    ("sr", "n_fft", "win"), [(8000, 512, 368), (16000, 1024, 736), (22050, 1024, 1014)]
)
def test_default_sizes_scale_with_the_rate(sr: int, n_fft: int, win: int) -> None:
    audio = np.zeros(sr, dtype=np.float32)
    spec = log_mel_spectrogram(audio, sr)
    hop = win // 4  # ~46 ms window, 75 % overlap
    assert spec.shape == (80, 1 + sr // hop)
    assert spec.dtype == np.float32


def test_explicit_sizes_and_input_types_agree() -> None:
    audio = sine(440, seconds=0.5, sr=8000).astype(np.float32)
    spec = log_mel_spectrogram(audio, 8000, n_mels=40, n_fft=256, hop=100)
    assert spec.shape == (40, 1 + len(audio) // 100)
    np.testing.assert_allclose(
        log_mel_spectrogram(torch.from_numpy(audio), 8000, 40, 256, 100), spec
    )
    stereo = np.stack([audio, audio])
    np.testing.assert_allclose(log_mel_spectrogram(stereo, 8000, 40, 256, 100), spec, atol=1e-4)
    with pytest.raises(ValueError, match="channels, samples"):
        log_mel_spectrogram(stereo[None], 8000)
    with pytest.raises(ValueError, match="non-empty"):
        log_mel_spectrogram(np.zeros(0), 8000)
    with_grad = torch.from_numpy(audio).requires_grad_(True)
    np.testing.assert_allclose(log_mel_spectrogram(with_grad, 8000, 40, 256, 100), spec)


def test_levels_are_in_dbfs() -> None:
    sr = 16000
    full_scale = log_mel_spectrogram(sine(1000, sr=sr).astype(np.float32), sr)[:, 5:-5]
    assert full_scale.max() == pytest.approx(0.0, abs=1.5)  # a full-scale sine reads ~0 dB
    quieter = log_mel_spectrogram(sine(1000, 0.1, sr=sr).astype(np.float32), sr)[:, 5:-5]
    assert full_scale.max() - quieter.max() == pytest.approx(20.0, abs=0.1)
    assert np.all(log_mel_spectrogram(np.zeros(sr), sr) == FLOOR_DB)
    noise = np.random.default_rng(0).uniform(-1, 1, sr)
    spec = log_mel_spectrogram(noise, sr)
    assert np.isfinite(spec).all() and spec.min() >= FLOOR_DB and spec.max() < 6.0


@pytest.mark.parametrize(("sr", "hz"), [(8000, 440.0), (16000, 1000.0), (22050, 3000.0)])
def test_a_tone_lands_in_its_mel_band(sr: int, hz: float) -> None:
    spec = log_mel_spectrogram(sine(hz, sr=sr).astype(np.float32), sr)
    band = int(np.argmax(spec.mean(axis=1)))
    centres = _band_centres_hz(80, sr)
    assert band in (int(np.argmin(np.abs(centres - hz))) + d for d in (-1, 0, 1))
    far = np.abs(centres - hz) > 0.5 * hz  # an octave-ish away: at least 40 dB down
    assert spec.mean(axis=1)[far].max() < spec.mean(axis=1)[band] - 40


def test_default_filterbank_has_no_empty_bands() -> None:
    """An empty band (an all-zero mel filter) reads the floor whatever comes in: on white noise
    every one of the 80 default bands must hold energy."""
    noise = np.random.default_rng(0).uniform(-1, 1, 22050)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # torchaudio warns about all-zero mel filters
        for sr in (8000, 16000, 22050):
            spec = log_mel_spectrogram(noise[:sr], sr)
            assert spec.shape[0] == 80
            assert spec.mean(axis=1).min() > FLOOR_DB + 60, sr  # noise: about -25 dB a band


def test_figure_axes_and_split_line() -> None:
    sr = 8000
    audio = sine(440, seconds=2.0, sr=sr).astype(np.float32)
    fig = spectrogram_figure(audio, sr, title="prime | continuation", split_at=1.25)
    main, colorbar = fig.axes
    assert main.get_xlim() == pytest.approx((0.0, 2.0))
    assert main.get_title() == "prime | continuation"
    assert colorbar.get_ylabel() == "dB"
    assert [line.get_xdata()[0] for line in main.get_lines()] == [1.25]
    labels = [t.get_text() for t in main.get_yticklabels()]
    assert labels == ["125", "250", "500", "1k", "2k"]  # 4k is Nyquist: the edge, not a band
    bottom, top = main.get_ylim()
    assert all(bottom <= y <= top for y in main.get_yticks())
    assert not spectrogram_figure(audio, sr).axes[0].get_lines()


def test_png_is_written(tmp_path: Path) -> None:
    path = save_spectrogram_png(
        sine(440, sr=8000).astype(np.float32),
        8000,
        tmp_path / "nested" / "spec.png",
        title="t",
        split_at=0.5,
    )
    assert path == tmp_path / "nested" / "spec.png"
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5_000


def test_importing_audio_does_not_import_matplotlib() -> None:
    code = "import sys, lofibeats.audio.spectrogram, lofibeats.audio.synth; sys.exit('matplotlib' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], timeout=120).returncode == 0

"""Log-mel spectrograms as arrays and as figures (for TensorBoard, sample folders and docs).

matplotlib is imported inside the figure functions, so `lofibeats.audio` imports without it. The
figures are plain `matplotlib.figure.Figure` objects on an Agg canvas: no pyplot state, no GUI
backend, safe in worker threads and headless runs.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
import torchaudio

if TYPE_CHECKING:
    from matplotlib.figure import Figure

WINDOW_SECONDS = 0.046
FLOOR_DB = -100.0
_DISPLAY_RANGE_DB = 80.0
_HZ_TICKS = (125, 250, 500, 1000, 2000, 4000, 8000, 16000)


def _mono(audio: np.ndarray | torch.Tensor) -> torch.Tensor:
    """A 1-D float32 CPU tensor (channels averaged); accepts GPU tensors and tensors with grad."""
    if isinstance(audio, torch.Tensor):
        x = audio.detach().to(device="cpu", dtype=torch.float32)
    else:
        x = torch.as_tensor(np.asarray(audio), dtype=torch.float32)
    if x.dim() == 2:
        x = x.mean(dim=0)
    if x.dim() != 1 or x.numel() == 0:
        raise ValueError(
            f"audio must be non-empty [samples] or [channels, samples], got shape {tuple(x.shape)}"
        )
    return x


def _sizes(sr: int, n_fft: int | None, hop: int | None) -> tuple[int, int, int]:
    """(n_fft, window length, hop): by default a ~46 ms window, FFT size the next power of two."""
    if n_fft is None:
        win = max(16, round(WINDOW_SECONDS * sr))
        n_fft = 1 << (win - 1).bit_length()
    else:
        win = n_fft
    return n_fft, win, hop or max(1, win // 4)


def log_mel_spectrogram(
    audio: np.ndarray | torch.Tensor,
    sr: int,
    n_mels: int = 80,
    n_fft: int | None = None,
    hop: int | None = None,
) -> np.ndarray:
    """[n_mels, frames] float32 power in dB, where a full-scale sine reads about 0 dB.

    `audio` is [samples] or [channels, samples] (channels are averaged). Mel bands are HTK-spaced
    from 0 Hz to sr / 2 with unit-peak triangles; values are floored at -100 dB.
    """
    x = _mono(audio)
    n_fft, win, hop = _sizes(sr, n_fft, hop)
    window = torch.hann_window(win)
    spec = torch.stft(
        x,
        n_fft=n_fft,
        hop_length=hop,
        win_length=win,
        window=window,
        center=True,
        pad_mode="constant",
        return_complex=True,
    )
    # Scale so a unit-amplitude sinusoid has magnitude 1 in its bin.
    power = (spec.abs() * (2.0 / window.sum())) ** 2
    fbanks = torchaudio.functional.melscale_fbanks(
        n_freqs=n_fft // 2 + 1,
        f_min=0.0,
        f_max=sr / 2,
        n_mels=n_mels,
        sample_rate=sr,
        norm=None,
        mel_scale="htk",
    )
    mel = fbanks.T @ power
    return (10.0 * torch.log10(mel.clamp_min(10 ** (FLOOR_DB / 10)))).numpy().astype(np.float32)


def _hz_to_mel(hz: np.ndarray | float) -> np.ndarray:
    return 2595.0 * np.log10(1.0 + np.asarray(hz, dtype=np.float64) / 700.0)


def spectrogram_figure(
    audio: np.ndarray | torch.Tensor,
    sr: int,
    title: str = "",
    split_at: float | None = None,
) -> Figure:
    """A log-mel spectrogram figure: time in seconds, mel-spaced axis labelled in Hz, dB colorbar.

    `split_at` (seconds) draws a vertical line, e.g. where a prime ends and the generated
    continuation begins.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    x = _mono(audio)
    db = log_mel_spectrogram(x, sr)
    seconds = len(x) / sr
    n_mels = db.shape[0]
    top = float(db.max())

    fig = Figure(figsize=(10, 4), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    image = ax.imshow(
        db,
        origin="lower",
        aspect="auto",
        interpolation="nearest",
        extent=(0.0, seconds, 0.0, float(n_mels)),
        vmin=max(FLOOR_DB, top - _DISPLAY_RANGE_DB),
        vmax=top,
        cmap="magma",
    )
    # Mel band i is centred at mel (i + 1) * mel_max / (n_mels + 1); place Hz ticks accordingly.
    mel_max = float(_hz_to_mel(sr / 2))
    positions = _hz_to_mel(_HZ_TICKS) / mel_max * (n_mels + 1) - 0.5
    shown = (positions >= 0) & (positions <= n_mels)
    ax.set_yticks(positions[shown])
    ax.set_yticklabels(
        [
            f"{hz / 1000:g}k" if hz >= 1000 else str(hz)
            for hz, keep in zip(_HZ_TICKS, shown, strict=True)
            if keep
        ]
    )
    ax.set_ylim(0.0, float(n_mels))
    ax.set_xlabel("time (s)")
    ax.set_ylabel("frequency (Hz, mel scale)")
    if title:
        ax.set_title(title)
    if split_at is not None and math.isfinite(split_at):
        ax.axvline(split_at, color="cyan", linestyle="--", linewidth=1.5)
    fig.colorbar(image, ax=ax, label="dB")
    return fig


def save_spectrogram_png(
    audio: np.ndarray | torch.Tensor,
    sr: int,
    path: Path,
    title: str = "",
    split_at: float | None = None,
) -> Path:
    """Write :func:`spectrogram_figure` to `path` as a PNG (parent folders created) and return it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig = spectrogram_figure(audio, sr, title=title, split_at=split_at)
    try:
        fig.savefig(path, format="png")
    finally:
        fig.clear()
    return path

"""Primes from audio files: read, mix to mono, resample to the model's rate, fit the context."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

from lofibeats.errors import DataError


def read_prime(path: Path, sr: int, seconds: float | None = None) -> tuple[np.ndarray, int]:
    """The first `seconds` (None: all) of audio file `path` as mono float32 at `sr`.

    Returns (samples, the file's own rate) so the caller can say when it resampled.
    Raises DataError naming the file when it is missing, unreadable or empty.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise DataError(
            f"prime={path}: no such file: pass prime=<wav/flac/ogg file>, prime=val or prime=none"
        )
    try:
        with sf.SoundFile(path) as fh:
            file_sr = fh.samplerate
            frames = -1 if seconds is None else max(1, round(seconds * file_sr))
            audio = fh.read(frames, dtype="float32", always_2d=True)
    except (sf.SoundFileError, RuntimeError) as exc:
        reason = (getattr(exc, "error_string", "") or str(exc) or type(exc).__name__).strip()
        raise DataError(
            f"prime={path}: not a readable audio file ({reason}): give a wav, flac or ogg file"
        ) from None
    if audio.shape[0] == 0:
        raise DataError(f"prime={path}: the file holds no audio: give a non-empty audio file")
    mono = audio.mean(axis=1)
    if file_sr != sr:
        mono = soxr.resample(mono, file_sr, sr, quality="HQ").astype(np.float32)
    return np.clip(mono, -1.0, 1.0).astype(np.float32, copy=False), file_sr


def pad_to_context(prime: np.ndarray, context_len: int) -> np.ndarray:
    """Left-pad `prime` with silence to `context_len` samples (longer primes are returned as-is)."""
    missing = context_len - prime.shape[-1]
    if missing <= 0:
        return prime
    return np.pad(prime, [(0, 0)] * (prime.ndim - 1) + [(missing, 0)])

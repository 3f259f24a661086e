"""Primes from audio files: decode, mix to mono, resample to the model's rate, level like the
training audio, fit the context."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import soxr
from omegaconf import DictConfig, OmegaConf

from lofibeats.audio.decode import AudioDecodeError, MonoReader
from lofibeats.audio.loudness import INT16_SCALE, LevelMeter, normalization_gain_db, to_int16
from lofibeats.errors import DataError
from lofibeats.models.base import LofiModule
from lofibeats.units import to_samples


def read_prime(
    path: Path, sr: int, seconds: float | None = None, target_dbfs: float | None = None
) -> tuple[np.ndarray, int]:
    """The first `seconds` (None: all) of audio file `path` as mono float32 at `sr`, in any
    format `prepare` reads. With `target_dbfs`, levelled the way `prepare` levels training audio
    (gated loudness to the target, the same soft limiter and int16 rounding), so the model hears
    a prime as loud as what it learned from.

    Returns (samples, the file's own rate) so the caller can say when it resampled.
    Raises DataError naming the file when it is missing, unreadable, empty or silent.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise DataError(
            f"prime={path}: no such file: pass prime=<audio file>, prime=val or prime=none"
        )
    try:
        with MonoReader(path) as reader:
            file_sr = reader.info.sr
            wanted = None if seconds is None else max(1, round(seconds * file_sr))
            blocks, have = [], 0
            for block in reader.blocks():
                blocks.append(block)
                have += len(block)
                if wanted is not None and have >= wanted:
                    break
    except AudioDecodeError as exc:
        raise DataError(
            f"prime={path}: not a readable audio file ({exc}): give a wav, flac, ogg, mp3, m4a ... file"
        ) from None
    mono = np.concatenate(blocks)[:wanted] if blocks else np.zeros(0, np.float32)
    if mono.size == 0:
        raise DataError(f"prime={path}: the file holds no audio: give a non-empty audio file")
    if file_sr != sr:
        mono = soxr.resample(mono, file_sr, sr, quality="HQ").astype(np.float32)
    if target_dbfs is not None:
        mono = level_like_training(mono, sr, target_dbfs, path)
    return np.clip(mono, -1.0, 1.0).astype(np.float32, copy=False), file_sr


def level_like_training(x: np.ndarray, sr: int, target_dbfs: float, path: Path) -> np.ndarray:
    """`x` at `target_dbfs` gated loudness through prepare's limiter and int16 rounding."""
    meter = LevelMeter(sr)
    meter.add(x)
    meter.finish()
    loudness = meter.loudness_dbfs()
    if loudness is None:
        raise DataError(f"prime={path}: the prime is silent: give audio that is not silence")
    gain_db = normalization_gain_db(loudness, meter.peak, target_dbfs)
    return to_int16(x.astype(np.float32), gain_db, limit=True).astype(np.float32) / INT16_SCALE


def data_config_for(module: LofiModule, data_cfg: Mapping[str, Any]) -> dict[str, Any]:
    """The data config at the checkpoint's rate and window lengths (the windows it trained on):
    where `prime=val` clips and eval's real audio come from."""
    data = (
        OmegaConf.to_container(data_cfg, resolve=True)
        if isinstance(data_cfg, DictConfig)
        else dict(data_cfg)
    )
    assert isinstance(data, dict)
    data["sr"] = module.sample_rate
    data["prev_len_max"] = module.context_len
    data["next_len"] = module.chunk_len
    shortest = to_samples(data.get("prev_len_min", 1), module.sample_rate, "data.prev_len_min")
    data["prev_len_min"] = min(shortest, module.context_len)
    return data


def pad_to_context(prime: np.ndarray, context_len: int) -> np.ndarray:
    """Left-pad `prime` with silence to `context_len` samples (longer primes are returned as-is)."""
    missing = context_len - prime.shape[-1]
    if missing <= 0:
        return prime
    return np.pad(prime, [(0, 0)] * (prime.ndim - 1) + [(missing, 0)])

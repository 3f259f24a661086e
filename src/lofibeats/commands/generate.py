"""`python generate.py`: load a checkpoint, prime it, generate takes, write wav + png, print stats."""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf
import torch
from omegaconf import DictConfig
from rich import box
from rich.console import Console
from rich.table import Table

from lofibeats.audio.spectrogram import save_spectrogram_png
from lofibeats.cli import quiet_third_party
from lofibeats.commands.inference import (
    carry_for,
    check_latent_keys,
    creativity_from,
    load_for_inference,
    longform_options,
    prime_seconds,
    sampling_from,
    val_datamodule,
)
from lofibeats.errors import ConfigError
from lofibeats.generation.engine import check_sampling, describe
from lofibeats.generation.fused import weights_choice
from lofibeats.generation.longform import generate_long
from lofibeats.generation.prime import pad_to_context, read_prime
from lofibeats.generation.style import style_path
from lofibeats.metrics.music import MIN_BEAT_SECONDS, music_stats
from lofibeats.metrics.sanity import audio_sanity
from lofibeats.models.base import LofiModule
from lofibeats.models.decoding import has_lookback
from lofibeats.models.sampling import is_auto
from lofibeats.models.vseq2seq import VSeq2SeqModule
from lofibeats.validate import number

#: prime_seconds=auto: the model's context, or this where that is shorter (a prime to hear)
AUTO_PRIME_SECONDS = 2.0


@dataclass
class Take:
    """One generated take: the prime (possibly empty) followed by its continuation."""

    index: int
    audio: np.ndarray
    prime_len: int
    sr: int


def build_primes(
    cfg: DictConfig, module: LofiModule, data_cfg: Mapping[str, Any], n: int, notes: Console
) -> np.ndarray | None:
    """[n, T] float32 primes for `cfg.prime` (val | none | a file), or None for no prime.

    Take i of prime=val continues val clip i (the start of val source i, see `val_clip`).
    """
    sr = module.sample_rate
    choice = cfg.get("prime")
    if choice is None or str(choice).lower() == "none":
        return None
    seconds = prime_seconds(cfg, module, AUTO_PRIME_SECONDS)
    if str(choice) == "val":
        length = round(number(seconds, "prime_seconds", low=0, low_open=True) * sr)
        datamodule = val_datamodule(module, data_cfg)
        return np.stack([datamodule.val_clip(i, length) for i in range(n)])
    target = data_cfg.get("target_dbfs") if data_cfg.get("normalize_loudness", True) else None
    audio, file_sr = read_prime(Path(str(choice)), sr, seconds, target_dbfs=target)
    if file_sr != sr:
        notes.print(f"note: resampled the prime from {file_sr} Hz to the model's {sr} Hz")
    if target is not None:
        notes.print(f"note: levelled the prime to {target:g} dBFS, as the training audio was")
    return np.tile(audio, (n, 1))


def generate(cfg: DictConfig) -> list[dict[str, Any]]:
    """Run `python generate.py`; returns one row of stats per take (what the table shows)."""
    quiet_third_party()
    console, notes = Console(), Console(stderr=True, soft_wrap=True)
    n = number(cfg.get("n"), "n", kind=int, low=1)
    seconds = number(cfg.get("seconds"), "seconds", low=0, low_open=True)
    sampling_from(cfg)  # a bad knob stops the command before the checkpoint loads
    seed = number(cfg.get("seed"), "seed", kind=int)
    module, ckpt, data_cfg = load_for_inference(cfg)
    sampling = check_sampling(module.net, sampling_from(cfg, module.net))
    sr = module.sample_rate
    options = longform_options(cfg)
    check_latent_keys(cfg, module)
    primes = build_primes(cfg, module, data_cfg, n, notes)
    prime_len = 0 if primes is None else primes.shape[1]
    if primes is not None and prime_len < module.context_len:
        notes.print(
            f"warning: the prime is {prime_len / sr:.2f} s, shorter than the model's context "
            f"({module.context_len / sr:.2f} s): padded with silence at the start"
        )
    prime = None if primes is None else torch.from_numpy(pad_to_context(primes, module.context_len))
    if has_lookback(module.net) and is_auto(cfg.get("loop")):
        notes.print(
            f"note: loop=auto: this model has a lookback, so {sampling.loop:g} of each draw "
            f"replays where its music repeats (temperature {sampling.temperature:g}); loop=0 "
            "plays the model as trained"
        )
    elif has_lookback(module.net) and not sampling.looping:
        notes.print(
            "tip: this model has a lookback: sampling=loop replays where the prime repeats, "
            "so its beat and harmonics carry on (a loop of the prime, not new music)"
        )

    n_samples = max(1, round(seconds * sr))
    options.update(latent_options(cfg, module, prime, n, n_samples, seed, options))
    engine = str(cfg.get("engine") or "auto")
    weights = weights_choice(cfg.get("weights"))
    started = time.perf_counter()
    continuation = generate_long(
        module,
        prime,
        n_samples,
        sampling=sampling,
        seed=seed,
        progress=bool(cfg.get("progress", True)),
        batch_size=n,
        engine=engine,
        precision=weights,
        carry=carry_for(cfg, module, data_cfg),
        **options,
    )
    elapsed = time.perf_counter() - started
    rtf = n_samples / sr / elapsed
    together = f", {rtf * n:.2f}x for all {n} takes" if n > 1 else ""
    console.print(
        f"generated {n} x {n_samples / sr:.2f} s in {elapsed:.2f} s with the "
        f"{describe(module, engine, weights)} engine: real-time factor {rtf:.2f}x per take{together}",
        soft_wrap=True,
    )
    continuation = continuation.cpu().numpy()
    takes = [
        Take(
            i,
            continuation[i] if primes is None else np.concatenate([primes[i], continuation[i]]),
            prime_len,
            sr,
        )
        for i in range(n)
    ]
    out_dir = Path(str(cfg.out_dir))
    rows = [write_take(take, out_dir, rtf) for take in takes]
    console.print(stats_table(rows, f"{ckpt} ({module.family}, {sr} Hz)"))
    console.print(f"wrote {n} takes to {out_dir}", soft_wrap=True)
    return rows


def latent_options(
    cfg: DictConfig,
    module: LofiModule,
    prime: torch.Tensor | None,
    n: int,
    n_samples: int,
    seed: int,
    options: Mapping[str, Any],
) -> dict[str, Any]:
    """vseq2seq: `{"z": StylePath}` for `n` takes of `n_samples`: one z per take from the
    prime (`creativity`; drawn with `seed`) that moves at `style_change_at` (see
    `lofibeats.generation.style`). Other families: nothing (`check_latent_keys` refuses the
    latent keys for them)."""
    if not isinstance(module, VSeq2SeqModule):
        return {}
    if cfg.get("style_change_at") is not None and options.get("crossfade"):
        raise ConfigError(
            "options.crossfade: style changes need crossfade 0 or null (the vseq2seq model "
            "decodes sample by sample: no seams to blend)"
        )
    path = style_path(
        module,
        prime,
        batch=n,
        n_samples=n_samples,
        seed=seed,
        creativity=creativity_from(cfg),
        change_at=cfg.get("style_change_at"),
        target=cfg.get("style_target"),
        blend=cfg.get("style_blend"),
    )
    return {"z": path}


MUSIC_KEYS = ("beat", "repeat", "copy_span")  # the table's music columns (None: take too short)


def write_take(take: Take, out_dir: Path, rtf: float) -> dict[str, Any]:
    """Write take_XX.wav (prime + continuation) and take_XX.png; return its stats row."""
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = f"take_{take.index:02d}"
    sf.write(out_dir / f"{stem}.wav", take.audio, take.sr, subtype="PCM_16")
    split_at = take.prime_len / take.sr if take.prime_len else None
    title = f"{stem}: prime | continuation" if take.prime_len else f"{stem}: unprimed"
    save_spectrogram_png(
        take.audio, take.sr, out_dir / f"{stem}.png", title=title, split_at=split_at
    )
    continuation = take.audio[take.prime_len :]
    if continuation.size >= MIN_BEAT_SECONDS * take.sr:
        prime = take.audio[: take.prime_len] if take.prime_len else None
        stats = music_stats(continuation, take.sr, past=prime)
    else:  # too short for a beat: the table shows "-"
        stats = {**audio_sanity(continuation, take.sr), **dict.fromkeys(MUSIC_KEYS)}
    return {"take": stem, "rtf": rtf, **stats}


def stats_table(rows: list[dict[str, Any]], title: str) -> Table:
    """One row per take: sanity stats, then beat and how much of it copies its prime and its own
    past (`lofibeats.metrics.music`: repeat 1.00 with a copy span of the whole take is a replay).
    Length and real-time factor are the same for every take (the line above the table has them);
    clipping shows in the verdict."""
    table = Table(title=title, box=box.SIMPLE_HEAD, pad_edge=False)  # fits 80 columns
    columns = ("take", "rms", "dc", "flatness", "beat", "repeat", "copy span", "verdict")
    for column in columns:
        left = column in ("take", "verdict")
        table.add_column(column, justify="left" if left else "right", min_width=len(column))
    for row in rows:
        table.add_row(
            row["take"],
            f"{row['rms']:.3f}",
            f"{row['dc_offset']:+.3f}",
            f"{row['spectral_flatness']:.3f}",
            *(
                "-" if row[key] is None else shown.format(row[key])
                for key, shown in zip(MUSIC_KEYS, ("{:.2f}", "{:.2f}", "{:.1f} s"), strict=True)
            ),
            row["verdict"],
        )
    return table

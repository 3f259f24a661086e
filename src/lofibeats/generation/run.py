"""`python generate.py`: load a checkpoint, prime it, generate takes, write wav + png, print stats.

Like `lofibeats.training.run` this is command glue: it joins the checkpoint loader (models), the
val clips (data), long-form generation and the sanity metrics, so it imports across packages.
"""

from __future__ import annotations

import inspect
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf
import torch
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf
from rich.console import Console
from rich.table import Table

from lofibeats.audio.spectrogram import save_spectrogram_png
from lofibeats.cli import quiet_third_party
from lofibeats.data.datamodule import LofiDataModule
from lofibeats.errors import ConfigError
from lofibeats.generation.engine import describe
from lofibeats.generation.longform import generate_long
from lofibeats.generation.prime import pad_to_context, read_prime
from lofibeats.generation.style import style_path
from lofibeats.metrics.sanity import audio_sanity
from lofibeats.models.base import LofiModule
from lofibeats.models.checkpoint import module_from_checkpoint, read_checkpoint
from lofibeats.models.vseq2seq import VSeq2SeqModule
from lofibeats.runs import resolve_checkpoint
from lofibeats.units import to_samples

# options generate_long consumes itself; every other option goes to the model's continue_audio
LONGFORM_OPTIONS = ("crossfade", "fade")
# top-level keys that set a vseq2seq take's latent z (style_blend has a default, so not listed)
LATENT_KEYS = ("creativity", "style_change_at", "style_target")


@dataclass
class Take:
    """One generated take: the prime (possibly empty) followed by its continuation."""

    index: int
    audio: np.ndarray
    prime_len: int
    sr: int


def positive(cfg: Mapping[str, Any], key: str, kind: type = float, allow_zero: bool = False) -> Any:
    """`cfg[key]` as an int/float > 0 (>= 0 with `allow_zero`); a ConfigError naming the key."""
    value = cfg.get(key)
    ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    if ok and kind is int:
        ok = float(value).is_integer()
    if not ok or value < 0 or (value == 0 and not allow_zero):
        bound = ">= 0" if allow_zero else "> 0"
        raise ConfigError(f"{key}={value!r}: give a {kind.__name__} {bound}")
    return kind(value)


def pick_device(name: str) -> torch.device:
    """`cpu`, `cuda` (error if absent) or `auto` (cuda when available)."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name not in ("cpu", "cuda"):
        raise ConfigError(f"device={name!r}: use cpu, cuda or auto")
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device=cuda: no CUDA device is visible; use device=cpu")
    return torch.device(name)


def load_for_inference(cfg: DictConfig) -> tuple[LofiModule, Path, Mapping[str, Any]]:
    """Resolve `cfg.ckpt` (`last` = newest under outputs/), load it on `cfg.device`, eval mode.

    Returns the module, its path and the data config to read primes and real audio from: the
    data the checkpoint was trained on, unless the command line sets any `data.*` key (then
    `cfg.data`). Also applies `cfg.threads` (null leaves torch's default of one per core).
    """
    if cfg.get("threads") is not None:
        torch.set_num_threads(positive(cfg, "threads", int))
    path = resolve_checkpoint(str(cfg.ckpt), Path(cfg.paths.root_dir) / "outputs")
    device = pick_device(str(cfg.get("device", "cpu")))
    ckpt = read_checkpoint(path, map_location=device)
    module = module_from_checkpoint(ckpt, path, map_location=device)
    trained = ckpt.get("datamodule_hyper_parameters")
    data_cfg = cfg.data if _data_given_on_command_line() or not trained else trained
    return module, path, data_cfg


def _data_given_on_command_line() -> bool:
    if not HydraConfig.initialized():
        return False
    return any(o.lstrip("+~").startswith("data.") for o in HydraConfig.get().overrides.task)


def data_config_for(module: LofiModule, data_cfg: Mapping[str, Any]) -> dict[str, Any]:
    """The data config at the checkpoint's rate and window lengths (the windows it trained on)."""
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


def val_datamodule(module: LofiModule, data_cfg: Mapping[str, Any]) -> LofiDataModule:
    """A prepared LofiDataModule over the data config, at the checkpoint's rate."""
    datamodule = LofiDataModule.from_config(data_config_for(module, data_cfg))
    datamodule.prepare_data()
    datamodule.setup("validate")
    return datamodule


def generation_options(module: LofiModule, options: Mapping[str, Any] | None) -> dict[str, Any]:
    """`options` without nulls; a key neither generate_long nor the model's continue_audio takes
    is a ConfigError naming it (instead of a TypeError deep inside the decode loop)."""
    given = {str(k): v for k, v in (options or {}).items() if v is not None}
    params = inspect.signature(module.continue_audio).parameters
    takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    known = [
        *LONGFORM_OPTIONS,
        *(
            name
            for name, p in params.items()
            if p.kind is inspect.Parameter.KEYWORD_ONLY and name not in ("temperature", "generator")
        ),
    ]
    for key in given:
        if key not in known and not takes_any:
            raise ConfigError(
                f"options.{key}: the {module.family} model does not take it; known: {', '.join(known)}"
            )
    return given


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
    if str(choice) == "val":
        length = round(positive(cfg, "prime_seconds") * sr)
        datamodule = val_datamodule(module, data_cfg)
        return np.stack([datamodule.val_clip(i, length) for i in range(n)])
    seconds = None if cfg.get("prime_seconds") is None else positive(cfg, "prime_seconds")
    audio, file_sr = read_prime(Path(str(choice)), sr, seconds)
    if file_sr != sr:
        notes.print(f"note: resampled the prime from {file_sr} Hz to the model's {sr} Hz")
    return np.tile(audio, (n, 1))


def generate(cfg: DictConfig) -> list[dict[str, Any]]:
    """Run `python generate.py`; returns one row of stats per take (what the table shows)."""
    quiet_third_party()
    console, notes = Console(), Console(stderr=True, soft_wrap=True)
    n = positive(cfg, "n", int)
    seconds = positive(cfg, "seconds")
    temperature = positive(cfg, "temperature", allow_zero=True)
    seed = int(cfg.get("seed") or 0)
    module, ckpt, data_cfg = load_for_inference(cfg)
    sr = module.sample_rate
    options = generation_options(module, cfg.get("options"))
    primes = build_primes(cfg, module, data_cfg, n, notes)
    prime_len = 0 if primes is None else primes.shape[1]
    if primes is not None and prime_len < module.context_len:
        notes.print(
            f"warning: the prime is {prime_len / sr:.2f} s, shorter than the model's context "
            f"({module.context_len / sr:.2f} s): padded with silence at the start"
        )
    prime = None if primes is None else torch.from_numpy(pad_to_context(primes, module.context_len))

    n_samples = max(1, round(seconds * sr))
    options.update(latent_options(cfg, module, prime, n, n_samples, seed, options))
    engine = str(cfg.get("engine") or "auto")
    started = time.perf_counter()
    continuation = generate_long(
        module,
        prime,
        n_samples,
        temperature=temperature,
        seed=seed,
        progress=bool(cfg.get("progress", True)),
        batch_size=n,
        engine=engine,
        **options,
    )
    elapsed = time.perf_counter() - started
    rtf = n_samples / sr / elapsed
    together = f", {rtf * n:.2f}x for all {n} takes" if n > 1 else ""
    console.print(
        f"generated {n} x {n_samples / sr:.2f} s in {elapsed:.2f} s with the "
        f"{describe(module, engine)} engine: real-time factor {rtf:.2f}x per take{together}",
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
    `lofibeats.generation.style`). Other families: nothing; a ConfigError if one of
    `LATENT_KEYS` is set."""
    if not isinstance(module, VSeq2SeqModule):
        given = [key for key in LATENT_KEYS if cfg.get(key) is not None]
        if given:
            raise ConfigError(
                f"{given[0]}: only vseq2seq models have a latent z; this checkpoint is a "
                f"{module.family} model (drop {given[0]})"
            )
        return {}
    if cfg.get("style_change_at") is not None and options.get("crossfade"):
        raise ConfigError(
            "options.crossfade: style changes need crossfade 0 or null (the vseq2seq model "
            "decodes sample by sample: no seams to blend)"
        )
    creativity = cfg.get("creativity")
    path = style_path(
        module,
        prime,
        batch=n,
        n_samples=n_samples,
        seed=seed,
        creativity=None if creativity is None else positive(cfg, "creativity", allow_zero=True),
        change_at=cfg.get("style_change_at"),
        target=cfg.get("style_target"),
        blend=cfg.get("style_blend"),
    )
    return {"z": path}


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
    stats = audio_sanity(take.audio[take.prime_len :], take.sr)
    return {"take": stem, "rtf": rtf, **stats}


def stats_table(rows: list[dict[str, Any]], title: str) -> Table:
    table = Table(title=title)
    for column in ("take", "seconds", "RTF", "rms", "dc", "clip rate", "flatness", "verdict"):
        table.add_column(column, justify="left" if column in ("take", "verdict") else "right")
    for row in rows:
        table.add_row(
            row["take"],
            f"{row['seconds']:.2f}",
            f"{row['rtf']:.2f}x",
            f"{row['rms']:.4f}",
            f"{row['dc_offset']:+.4f}",
            f"{row['clip_rate']:.2%}",
            f"{row['spectral_flatness']:.3f}",
            row["verdict"],
        )
    return table

"""`python eval.py`: objective metrics of a checkpoint, written as JSON and printed as a table.

Two kinds of numbers:

* teacher-forced likelihood over fixed val windows (the model's own window lengths and rate):
  bits/sample for every head, and MSE for the regression head. The module's `validation_step`
  runs under a throw-away `Trainer.validate` and the logged `val/*` metrics (batch-size-weighted
  epoch means) are read back.
* `n` generated clips, each continuing the prime of a real window: their sanity statistics, and
  the Frechet log-mel distance to the real continuations of the same primes, shown between a
  floor (real vs real: the first half of the real clips against the second half) and a ceiling
  (white noise at the real clips' loudness vs real), and the measures that tell music from noise
  (beat, flatness; `lofibeats.metrics.music`) and from a replay of its past (repeat, loop, copy
  span, with the prime as past; `lofibeats.metrics.repetition`) for generated, real and white
  noise side by side.
* the NLL of the same target windows given 64 ms, 1 s and 4 s of past (`context_windows` of them).

The clips are generated with the same inference knobs as `generate.py` (conf/inference).
"""

from __future__ import annotations

import json
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
from omegaconf import DictConfig
from rich.console import Console
from rich.table import Table
from torch.utils.data import DataLoader

from lofibeats.cli import quiet_third_party
from lofibeats.commands.inference import (
    carry_for,
    check_latent_keys,
    creativity_from,
    data_config_for,
    load_for_inference,
    longform_options,
    prime_seconds,
    sampling_from,
)
from lofibeats.data.manifest import Manifest
from lofibeats.data.prepare import ensure_prepared
from lofibeats.data.shards import ShardStore, Spans
from lofibeats.data.windows import ValWindows, collate_pairs
from lofibeats.errors import ConfigError, DataError
from lofibeats.generation.engine import check_sampling
from lofibeats.generation.fused import weights_choice
from lofibeats.generation.longform import generate_long
from lofibeats.metrics.context_nll import context_nll
from lofibeats.metrics.frechet import frechet_logmel
from lofibeats.metrics.music import music_stats
from lofibeats.metrics.sanity import audio_sanity
from lofibeats.models.base import LofiModule
from lofibeats.models.sampling import Sampling
from lofibeats.models.vseq2seq import VSeq2SeqModule
from lofibeats.validate import number

SANITY_KEYS = ("rms", "dc_offset", "peak", "clip_rate", "spectral_flatness", "zero_crossing_rate")
SPLITS = ("val", "all")
#: prime_seconds=auto: the model's context, or this where that is shorter
AUTO_PRIME_SECONDS = 1.0


@dataclass
class EvalAudio:
    """The prepared audio eval reads: memory-mapped shards and the sources of one split."""

    store: ShardStore
    spans: Spans
    sr: int

    @classmethod
    def prepare(cls, data: dict[str, Any], split: str, progress: bool) -> EvalAudio:
        """Prepare `data` at `data["sr"]` if needed; `split` is val or all (every source, for a
        folder the model never trained on)."""
        if split not in SPLITS:
            raise ConfigError(
                f"split={split!r}: use val (the held-out files) or all (every file of data.raw_dir)"
            )
        sr_dir = ensure_prepared(data, data["sr"], progress=progress)
        manifest = Manifest.load(sr_dir)
        entries = manifest.sources if split == "all" else manifest.split("val")
        if not entries:
            raise DataError(f"no {split} sources in {sr_dir}: add audio files or use split=all")
        spans = Spans.from_entries(entries, manifest.shards)
        return cls(ShardStore(sr_dir, manifest.shards), spans, data["sr"])

    def windows(self, count: int, prev_len: int, next_len: int, remedy: str) -> ValWindows:
        """`count` evenly spread (prev, next) windows; a DataError saying `remedy` if no source
        is long enough for one."""
        if self.spans.longest < prev_len + next_len:
            raise DataError(
                f"no source in {self.store.sr_dir} is {(prev_len + next_len) / self.sr:.2f} s long "
                f"(longest: {self.spans.longest / self.sr:.2f} s): {remedy}"
            )
        return ValWindows(self.store, self.spans, count=count, prev_len=prev_len, next_len=next_len)


def teacher_forced(module: LofiModule, loader: DataLoader) -> dict[str, Any]:
    """Teacher-forced metrics over `loader`: the module's `validation_step` under a throw-away
    `Trainer.validate`; the logged `val/*` metrics without their prefix."""
    trainer = pl.Trainer(
        accelerator="gpu" if module.device.type == "cuda" else "cpu",
        devices=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.validate(module, dataloaders=loader, verbose=False)
    metrics = {
        name.removeprefix("val/"): float(value)
        for name, value in trainer.callback_metrics.items()
        if name.startswith("val/")
    }
    return {"method": "validation_step", "metrics": metrics}


def generated_vs_real(
    module: LofiModule,
    pairs: ValWindows,
    *,
    sampling: Sampling,
    seed: int,
    progress: bool,
    engine: str,
    carry: str,
    options: dict[str, Any],
) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    """Continue each window's prev; return (generated [n, T], real continuations [n, T], the
    primes [n, P], RTF)."""
    primes = torch.stack([pairs[i][0] for i in range(len(pairs))])
    real = torch.stack([pairs[i][1] for i in range(len(pairs))]).numpy()
    started = time.perf_counter()
    generated = generate_long(
        module,
        primes,
        real.shape[1],
        sampling=sampling,
        seed=seed,
        progress=progress,
        engine=engine,
        carry=carry,
        **options,
    )
    rtf = real.shape[1] / module.sample_rate / (time.perf_counter() - started)
    return generated.cpu().numpy(), real, primes.numpy(), rtf


def white_noise_like(real: np.ndarray, seed: int) -> np.ndarray:
    """White noise at each real clip's loudness: the ceiling every measure is read against."""
    rng = np.random.default_rng(seed)
    return np.stack(
        [
            np.clip(rng.normal(0.0, max(float(np.sqrt(np.mean(r**2))), 1e-3), r.shape), -1.0, 1.0)
            for r in real
        ]
    )


MUSIC_KEYS = ("beat", "flatness", "repeat", "loop", "copy_span")


def music_block(
    generated: np.ndarray, real: np.ndarray, primes: np.ndarray, sr: int, seed: int
) -> dict[str, dict[str, float]] | None:
    """`music_stats`' `MUSIC_KEYS` (each clip continuing its prime) and DC of the generated
    clips, the real continuations and white noise, each averaged over the clips; None for clips
    under 1 s."""
    if real.shape[1] < sr:
        return None
    block = {}
    for name, clips in (
        ("generated", generated),
        ("real", real),
        ("white_noise", white_noise_like(real, seed)),
    ):
        stats = [music_stats(clip, sr, prime) for clip, prime in zip(clips, primes, strict=True)]
        block[name] = {key: float(np.mean([s[key] for s in stats])) for key in MUSIC_KEYS}
        block[name]["max_abs_dc"] = float(max(abs(s["dc_offset"]) for s in stats))
    return block


CONTEXTS_S = (0.064, 1.0, 4.0)


def nll_by_context(module: LofiModule, audio: EvalAudio, count: int) -> dict[str, Any]:
    """Bits/sample of the same `count` target windows given 64 ms, 1 s and 4 s of past (does
    the model use its context?); a note instead where no source is long enough or count is 0."""
    sr = module.sample_rate
    contexts = [round(c * sr) for c in CONTEXTS_S]
    if count == 0:
        return {"note": "context_windows=0"}
    try:
        pairs = audio.windows(count, contexts[-1], module.chunk_len, "")
    except DataError:
        return {"note": f"no source is {(contexts[-1] + module.chunk_len) / sr:.2f} s long"}
    prev = torch.stack([pairs[i][0] for i in range(len(pairs))])
    nxt = torch.stack([pairs[i][1] for i in range(len(pairs))])
    bits = context_nll(module, prev, nxt, contexts)
    if bits is None:
        return {"note": f"a {module.family} model has no likelihood"}
    return {
        "windows": len(pairs),
        "bits_per_sample": {f"{c:g}s": bits[n] for c, n in zip(CONTEXTS_S, contexts, strict=True)},
    }


def frechet_block(
    generated: np.ndarray, real: np.ndarray, sr: int, seed: int
) -> dict[str, float | None]:
    """Generated-vs-real Frechet log-mel distance with its real-vs-real floor and noise ceiling."""
    noise = list(white_noise_like(real, seed))
    half = len(real) // 2
    floor = frechet_logmel(list(real[:half]), list(real[half:]), sr) if half else None
    return {
        "generated_vs_real": frechet_logmel(list(generated), list(real), sr),
        "real_vs_real_floor": floor,
        "noise_vs_real_ceiling": frechet_logmel(noise, list(real), sr),
    }


def mean_sanity(
    clips: np.ndarray, sr: int
) -> tuple[dict[str, float], dict[str, int], list[dict[str, Any]]]:
    """Per-clip sanity stats, their means, and how many clips got each verdict."""
    per_clip = [audio_sanity(c, sr) for c in clips]
    means = {key: float(np.mean([s[key] for s in per_clip])) for key in SANITY_KEYS}
    return means, dict(Counter(str(s["verdict"]) for s in per_clip)), per_clip


def evaluate(cfg: DictConfig) -> dict[str, Any]:
    """Run `python eval.py`; writes `<out_dir>/eval.json` and returns the same dict."""
    quiet_third_party()
    console = Console()
    n = number(cfg.get("n"), "n", kind=int, low=1)
    sampling_from(cfg)  # a bad knob stops the command before the checkpoint loads
    seed = number(cfg.get("seed"), "seed", kind=int)
    context_windows = number(cfg.get("context_windows", 8), "context_windows", kind=int, low=0)
    progress = bool(cfg.get("progress", True))
    module, ckpt, data_cfg = load_for_inference(cfg)
    sampling = check_sampling(module.net, sampling_from(cfg, module.net))
    options = longform_options(cfg)
    check_latent_keys(cfg, module)
    creativity = creativity_from(cfg)
    if isinstance(module, VSeq2SeqModule) and creativity is not None:
        options["creativity"] = creativity
    sr = module.sample_rate
    data = data_config_for(module, data_cfg)
    audio = EvalAudio.prepare(data, str(cfg.split), progress=progress)

    tf_windows = audio.windows(
        data["val_windows"], module.context_len, module.chunk_len, "add longer audio files"
    )
    loader = DataLoader(tf_windows, batch_size=data["batch_size"], collate_fn=collate_pairs)
    tf = teacher_forced(module, loader)

    seconds = prime_seconds(cfg, module, AUTO_PRIME_SECONDS)
    prime_len = round(number(seconds, "prime_seconds", low=0, low_open=True) * sr)
    gen_len = round(number(cfg.get("seconds"), "seconds", low=0, low_open=True) * sr)
    pairs = audio.windows(n, prime_len, gen_len, "lower seconds or prime_seconds")
    engine = str(cfg.get("engine") or "auto")
    carry = carry_for(cfg, module, data)
    weights = weights_choice(cfg.get("weights"))
    generated, real, primes, rtf = generated_vs_real(
        module,
        pairs,
        sampling=sampling,
        seed=seed,
        progress=progress,
        engine=engine,
        carry=carry,
        options={**options, "precision": weights},
    )
    gen_means, verdicts, per_clip = mean_sanity(generated, sr)
    real_means, _, _ = mean_sanity(real, sr)

    result = {
        "checkpoint": str(ckpt),
        "family": module.family,
        "sr": sr,
        "head": module.hparams.get("head"),
        "data": {
            "raw_dir": data.get("raw_dir"),
            "split": str(cfg.split),
            "sources": len(audio.spans),
        },
        "teacher_forced": {
            **tf,
            "windows": len(tf_windows),
            "bits_per_sample": tf["metrics"].get("bits_per_sample"),
            "mse": tf["metrics"].get("mse"),
            # vseq2seq: the negative ELBO (reconstruction + KL per sample) and the active units
            "elbo_bits_per_sample": tf["metrics"].get("elbo_bits"),
            "active_units": tf["metrics"].get("active_units"),
        },
        "generation": {
            "clips": n,
            "prime_seconds": prime_len / sr,
            "seconds": gen_len / sr,
            "temperature": sampling.temperature,
            "top_p": sampling.top_p,
            "decoding": sampling.decoding,
            "seed": seed,
            "engine": engine,
            "weights": weights,
            "carry": carry,
            "options": options,
            "rtf": rtf,
            "mean": gen_means,
            "real_mean": real_means,
            "verdicts": verdicts,
            "per_clip": per_clip,
        },
        "frechet_logmel": frechet_block(generated, real, sr, seed),
        "music": music_block(generated, real, primes, sr, seed),
        "nll_by_context": nll_by_context(module, audio, context_windows),
    }
    out_dir = Path(str(cfg.out_dir))
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "eval.json"
    path.write_text(json.dumps(result, indent=1), encoding="utf-8")
    console.print(result_table(result))
    console.print(f"wrote {path}", soft_wrap=True)
    return result


def _fmt(value: Any, spec: str = ".4f") -> str:
    return "n/a" if value is None else format(value, spec)


def result_table(result: dict[str, Any]) -> Table:
    tf, gen, fd = result["teacher_forced"], result["generation"], result["frechet_logmel"]
    table = Table(
        title=f"{result['checkpoint']} ({result['family']}, {result['sr']} Hz"
        + (f", {result['head']} head)" if result["head"] else ")")
    )
    table.add_column("metric")
    table.add_column("value", justify="right")
    table.add_column("reference", justify="right")
    table.add_row(
        f"NLL bits/sample ({tf['method']}, {tf['windows']} windows)",
        _fmt(tf["bits_per_sample"]),
        "8 = uniform",
    )
    if tf["mse"] is not None:
        table.add_row("MSE", _fmt(tf["mse"], ".6f"), "")
    if tf["elbo_bits_per_sample"] is not None:
        table.add_row("ELBO bits/sample (recon + KL)", _fmt(tf["elbo_bits_per_sample"]), "")
        table.add_row("active units of z", _fmt(tf["active_units"], ".0f"), "var(mu) > 0.01")
    table.add_row(
        f"Frechet log-mel, {gen['clips']} x {gen['seconds']:.1f} s",
        _fmt(fd["generated_vs_real"], ".1f"),
        f"floor {_fmt(fd['real_vs_real_floor'], '.1f')} / noise {_fmt(fd['noise_vs_real_ceiling'], '.1f')}",
    )
    for key in SANITY_KEYS:
        table.add_row(f"mean {key}", _fmt(gen["mean"][key]), f"real {_fmt(gen['real_mean'][key])}")
    table.add_row("verdicts", ", ".join(f"{k} {v}" for k, v in sorted(gen["verdicts"].items())), "")
    music = result["music"]
    if music is not None:
        for key, what, spec in (
            ("beat", "beat", ".4f"),
            ("flatness", "flatness 0.1-4 kHz", ".4f"),
            ("repeat", "repeat (1 = a replay)", ".4f"),
            ("loop", "loop, s", ".2f"),
            ("copy_span", "copy span, s", ".2f"),
        ):
            table.add_row(
                f"{what} (music_stats)",
                _fmt(music["generated"][key], spec),
                f"real {_fmt(music['real'][key], spec)} / noise "
                + _fmt(music["white_noise"][key], spec),
            )
    by_context = result["nll_by_context"]
    if "bits_per_sample" in by_context:
        bits = by_context["bits_per_sample"]
        table.add_row(
            f"NLL given {' / '.join(bits)} of past ({by_context['windows']} windows)",
            " / ".join(_fmt(v) for v in bits.values()),
            "lower with more past = the model uses its context",
        )
    else:
        table.add_row("NLL by context", "n/a", by_context["note"])
    table.add_row("RTF", f"{gen['rtf']:.2f}x", "")
    return table

"""What the test modules share: paths, composed configs, test audio, tiny models and checkpoints,
a quiet Trainer, and the prepare helpers. Plain functions (fixtures built on them live in conftest.py); a test
module imports them with `from helpers import ...` (tests/ is on pytest's `pythonpath`)."""

from __future__ import annotations

import math
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest
import pytorch_lightning as pl
import soundfile as sf
import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, open_dict

from lofibeats.data.manifest import Manifest
from lofibeats.data.prepare import prepare_corpus
from lofibeats.data.report import PrepareReport
from lofibeats.models.base import CHECKPOINT_FORMAT
from lofibeats.models.seq2seq import Seq2SeqModule
from lofibeats.models.vseq2seq import VSeq2SeqModule

# --------------------------------------------------------------------------- paths
TESTS = Path(__file__).resolve().parent
REPO = TESTS.parent
CONF = REPO / "conf"
LEGACY = TESTS / "data" / "legacy"  # v0.1 checkpoints and what they generated


# --------------------------------------------------------------------------- configs
def compose_config(
    config_name: str, overrides: list[str], root: Path, run: str = "run"
) -> DictConfig:
    """Compose `conf/<config_name>.yaml` like the CLI would, with outputs and data under `root`
    (the `make_cfg` fixture's; conftest registers the CLI's resolvers it needs)."""
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(
            config_name=config_name,
            overrides=[f"paths.root_dir={root.as_posix()}", *overrides],
            return_hydra_config=True,
        )
    run_dir = root / "outputs" / run
    with open_dict(cfg):
        cfg.hydra.runtime.output_dir = str(run_dir)
        cfg.hydra.job.num = 0
        cfg.hydra.job.id = "0"
    HydraConfig.instance().set_config(cfg)
    return cfg


# --------------------------------------------------------------------------- rates
SR = 8000  # the tiny models' rate (and their test audio's)
RAW_SR = 22050  # the rate prepare's test files are written at (so prepare resamples them)
# the tiny frame model with a lookback (frames of 4, lags 32..96 samples, a search every 2 frames)
LOOKBACK = dict(
    sr=SR, prev_len_max=96, next_len=32, hidden=16, layers=2, embed_dim=8, frame_size=4,
    sample_hidden=16, lookback=96, lookback_min=32, lookback_window=16, lookback_hop=8,
)  # fmt: skip


# --------------------------------------------------------------------------- audio
def sine(
    freq: float, amp: float = 1.0, seconds: float = 1.0, sr: int = SR, *, ratio: float = 1.0
) -> np.ndarray:
    """[frames] float64 `amp * sin(2 pi freq ratio t)`: `ratio` detunes (or picks a harmonic)
    with the rounding of `freq * ratio` done as each test always did it."""
    t = np.arange(round(seconds * sr)) / sr
    return amp * np.sin(2 * np.pi * freq * ratio * t)


def tone(
    seconds: float, sr: int = RAW_SR, freq: float = 440.0, amp: float = 0.3, channels: int = 1
) -> np.ndarray:
    """A [frames, channels] float32 sine (each channel a little detuned)."""
    cols = [sine(freq, amp, seconds, sr, ratio=1 + 0.01 * c) for c in range(channels)]
    return np.stack(cols, axis=1).astype(np.float32)


def write_tone(path: Path, seconds: float = 0.5, sr: int = RAW_SR, **kwargs) -> Path:
    """Write a tone; soundfile picks the format from the extension (`subtype` etc. pass through)."""
    sf_args = {k: kwargs.pop(k) for k in ("subtype", "format") if k in kwargs}
    if path.suffix.lower() == ".aif":
        sf_args.setdefault("format", "AIFF")
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, tone(seconds, sr, **kwargs), sr, **sf_args)
    return path


def write_tracks(folder: Path, count: int = 2, seconds: float = 2.0) -> Path:
    """`count` short 'tracks' (a wobbling tone plus a little noise) as wav files in `folder`."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    wobble = 0.7 + sine(1.0, 0.3, seconds)
    for i in range(count):
        track = sine(110 + 40 * i, 0.3, seconds) * wobble
        sf.write(folder / f"track{i}.wav", track + 0.01 * rng.standard_normal(track.size), SR)
    return folder


def sines(n: int, length: int, *, freq: float = 200.0, seed: int = 0) -> torch.Tensor:
    """[n, length] 0.5-amplitude sines at `SR`, at random phases."""
    gen = torch.Generator().manual_seed(seed)
    phase = torch.rand(n, 1, generator=gen) * 2 * math.pi
    return 0.5 * torch.sin(2 * math.pi * freq * torch.arange(length)[None] / SR + phase)


def sine_pairs(
    n: int, prev_len: int, next_len: int, *, freq: float = 200.0, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    """(prev, next) windows of `sines`."""
    x = sines(n, prev_len + next_len, freq=freq, seed=seed)
    return x[:, :prev_len], x[:, prev_len:]


# --------------------------------------------------------------------------- models
TINY = dict(sr=SR, prev_len_max=64, next_len=32, hidden=16, layers=1, embed_dim=8)


def tiny_seq2seq(head: str = "mulaw", **overrides) -> Seq2SeqModule:
    """A small seq2seq (64 samples of context, chunks of 32), initialised from seed 0."""
    torch.manual_seed(0)
    return Seq2SeqModule(**{**TINY, "head": head, "warmup_steps": 0, **overrides})


def tiny_vseq2seq(head: str = "mulaw", **overrides) -> VSeq2SeqModule:
    """`tiny_seq2seq` with a 4-dimensional latent z."""
    torch.manual_seed(0)
    return VSeq2SeqModule(**{**TINY, "head": head, "warmup_steps": 0, "latent_dim": 4, **overrides})


def save_checkpoint(path: Path, module: pl.LightningModule, **extra: object) -> Path:
    """`module` saved (with its parent folders) in Lightning's checkpoint format, with `extra`
    entries (e.g. `datamodule_hyper_parameters`)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(
        {
            "state_dict": module.state_dict(),
            "hyper_parameters": dict(module.hparams),
            "lofibeats_format": CHECKPOINT_FORMAT,
            "pytorch-lightning_version": pl.__version__,
            **extra,
        },
        path,
    )
    return path


def save_tiny_checkpoint(path: Path, **hparams) -> Path:
    """A real (random-weight) seq2seq of 128 samples' context, chunks of 64, as a checkpoint."""
    torch.manual_seed(0)
    module = Seq2SeqModule(
        sr=SR, prev_len_max=128, next_len=64, hidden=16, layers=1, embed_dim=8, **hparams
    )
    return save_checkpoint(path, module)


RUN_CKPT = "outputs/2026-01-01/00-00-00_1/checkpoints/last.ckpt"  # where train.py leaves it


def tiny_trainer(**overrides) -> pl.Trainer:
    """A quiet CPU Trainer for 3 steps: no logger, checkpoints, progress bar, summary or sanity
    check (`overrides` are Trainer arguments)."""
    kwargs = dict(
        max_steps=3,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        accelerator="cpu",
        num_sanity_val_steps=0,
    )
    kwargs.update(overrides)
    return pl.Trainer(**kwargs)


# --------------------------------------------------------------------------- prepare
PREPARE_OPTIONS = {
    "workers": 1,
    "shard_mb": 1.0,
    "normalize_loudness": True,
    "target_dbfs": -20.0,
    "trim_silence": False,
    "silence_dbfs": -60.0,
    "val_fraction": 0.25,
    "progress": False,
}


def prepare(raw: Path, cache: Path, rates=(8000,), **overrides) -> PrepareReport:
    return prepare_corpus(raw, cache, list(rates), **{**PREPARE_OPTIONS, **overrides})


def check_cache(sr_dir: Path) -> Manifest:
    """The manifest, after checking the folder holds exactly it and its shards, all consistent."""
    manifest = Manifest.load(sr_dir)
    assert sorted(p.name for p in sr_dir.iterdir()) == sorted(["manifest.json", *manifest.shards])
    spans = defaultdict(list)
    for source in manifest.sources:
        shard = np.load(sr_dir / source.shard, mmap_mode="r")
        assert shard.dtype == np.int16 and shard.ndim == 1
        assert source.offset >= 0 and source.offset + source.samples <= len(shard)
        assert source.seconds == pytest.approx(source.samples / manifest.sr)
        assert source.split in ("train", "val")
        spans[source.shard].append((source.offset, source.offset + source.samples))
    for ranges in spans.values():
        ranges.sort()
        assert all(a[1] <= b[0] for a, b in zip(ranges, ranges[1:], strict=False))
    assert set(spans) == set(manifest.shards)
    assert not (sr_dir.parent / ".staging").exists()
    return manifest


def source_audio(sr_dir: Path, rel: str) -> np.ndarray:
    """The int16 samples the cache at `sr_dir` holds for source `rel`."""
    manifest = Manifest.load(sr_dir)
    entry = next(s for s in manifest.sources if s.path == rel)
    return np.array(
        np.load(sr_dir / entry.shard, mmap_mode="r")[entry.offset : entry.offset + entry.samples]
    )

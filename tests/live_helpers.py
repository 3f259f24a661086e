"""Runs for the lofibeats live tests: tiny random-weight models saved as real
Lightning checkpoints in the layout train.py leaves (`outputs/<run>/checkpoints/last.ckpt`,
`status.json`, `config_resolved.yaml`), trained on a folder of short tracks so that val
clips (primes, style targets) come from real prepared data."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import numpy as np
import pytorch_lightning as pl
import soundfile as sf
import torch
import yaml
from omegaconf import OmegaConf

from lofibeats.live.player import PlayerSettings
from lofibeats.live.server import LiveSettings
from lofibeats.models.gan import GanModule
from lofibeats.models.plan import PlanModule
from lofibeats.models.seq2seq import Seq2SeqModule
from lofibeats.models.vseq2seq import VSeq2SeqModule

from helpers import LOOKBACK, compose_config, save_checkpoint

SR = 8000
SMALL = dict(sr=SR, prev_len_max=128, next_len=64, hidden=16, layers=1, embed_dim=8)


def write_tracks(folder: Path, count: int = 3, seconds: float = 3.0) -> Path:
    """`count` short tracks (chords of wobbling tones plus a little noise) as wav files."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    t = np.arange(round(seconds * SR)) / SR
    for i in range(count):
        tone = sum(np.sin(2 * np.pi * f * (1 + i / 9) * t) for f in (110, 165, 220)) / 3
        tone *= 0.3 * (0.7 + 0.3 * np.sin(2 * np.pi * 2 * t))
        sf.write(folder / f"track{i}.wav", tone + 0.01 * rng.standard_normal(t.size), SR)
    return folder


def data_config(root: Path) -> dict:
    """The data config of a run on `write_tracks` audio (what a checkpoint remembers)."""
    raw = write_tracks(root / "raw")
    overrides = [f"data.raw_dir={raw.as_posix()}", "data.prepare_workers=1"]
    cfg = compose_config("live", overrides, root)
    return OmegaConf.to_container(cfg.data, resolve=True)


def write_run(
    outputs: Path, name: str, module: pl.LightningModule, data: dict, bits: float | None = 7.5
) -> Path:
    """`outputs/<name>/` as train.py leaves it; the path of its last.ckpt."""
    run = outputs / name
    ckpt = save_checkpoint(
        run / "checkpoints" / "last.ckpt", module, datamodule_hyper_parameters=data
    )
    hparams = dict(module.hparams)
    config = {"data": {**data, "sr": hparams["sr"]}, "model": hparams}
    (run / "config_resolved.yaml").write_text(yaml.safe_dump(config), encoding="utf-8")
    metrics = {} if bits is None else {"val/loss": bits, "val/bits_per_sample": bits}
    status = {"status": "ok", "metrics": metrics, "steps": 12, "overrides": [f"model={name}"]}
    (run / "status.json").write_text(json.dumps(status), encoding="utf-8")
    return ckpt


def tiny_plan() -> PlanModule:
    """A plan model that reads 2 beats of up to 0.25 s back, its codebook and grains fitted on
    noise."""
    module = PlanModule(
        sr=SR, prev_len_max=4096, next_len=512, period_min="0.1s", period_max="0.25s",
        beats=2, render_len=256, render_hidden=16, hidden=32, layers=1, codes=16,
    )  # fmt: skip
    module.net.fit_codes([0.2 * torch.randn(4, 4096, generator=torch.Generator().manual_seed(0))])
    return module


def make_runs(root: Path) -> dict[str, Path]:
    """Runs of every kind under `root/outputs`: {kind: last.ckpt} for seq2seq, vseq2seq,
    frame (a seq2seq with the frame tier), gan and plan."""
    data = data_config(root)
    outputs = root / "outputs"
    modules = {
        "seq2seq": lambda: Seq2SeqModule(**SMALL),
        "vseq2seq": lambda: VSeq2SeqModule(**SMALL, latent_dim=4),
        "frame": lambda: Seq2SeqModule(**SMALL, frame_size=8, sample_hidden=16),
        "gan": lambda: GanModule(
            sr=SR, prev_len_max=128, next_len=64, hidden=16, layers=1, ratios=[4, 4]
        ),
        "plan": tiny_plan,
    }
    runs = {}
    for i, (kind, build) in enumerate(modules.items()):
        torch.manual_seed(0)
        bits = None if kind == "gan" else 7.25 + i / 4
        runs[kind] = write_run(outputs, f"2026-01-01/00-00-0{i}_{kind}", build(), data, bits)
    return runs


def lookback_run(root: Path, like: Path) -> Path:
    """A run of the tiny frame model with a lookback (`helpers.LOOKBACK`) under `root/outputs`,
    on the data of the run `like`."""
    data = torch.load(like)["datamodule_hyper_parameters"]
    torch.manual_seed(0)
    module = Seq2SeqModule(**LOOKBACK)
    return write_run(root / "outputs", "2026-01-01/00-00-09_lookback", module, data)


def settings(root: Path, **changes) -> LiveSettings:
    """LiveSettings for the runs under `root/outputs` (seq2seq by default)."""
    player = {k: changes.pop(k) for k in list(changes) if k in PlayerSettings.__annotations__}
    default = changes.pop("default_ckpt", None)
    return LiveSettings(
        outputs_dir=root / "outputs",
        default_ckpt=default,
        player=PlayerSettings(**{"ahead_seconds": 1.0, **player}),
        knobs={"temperature": 0.9, "top_p": None},
        **changes,
    )


def shelf(root: Path) -> Path:
    """A fresh upload shelf under the test's own temporary `root` (pytest cleans it up)."""
    return Path(tempfile.mkdtemp(prefix="shelf-", dir=root))

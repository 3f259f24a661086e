"""One training run: build data, model, callbacks, loggers and Trainer from the config; fit."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from rich.console import Console

from lofibeats.callbacks.hparams_summary import HparamsSummary
from lofibeats.cli import quiet_third_party
from lofibeats.data.datamodule import LofiDataModule
from lofibeats.runs import resolve_checkpoint


def _instantiate_group(group: DictConfig | None) -> list[Any]:
    """Instantiate every entry of a config group that has a `_target_` (null entries are off)."""
    if not group:
        return []
    return [instantiate(node) for node in group.values() if node is not None and "_target_" in node]


def train(cfg: DictConfig) -> float | None:
    """Fit the configured model; return the value of `cfg.optimized_metric` (what sweeps minimise)."""
    quiet_third_party()
    console = Console(stderr=True)
    started = time.perf_counter()
    run_dir = Path(cfg.paths.output_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    resolved = OmegaConf.to_container(cfg, resolve=True)
    (run_dir / "config_resolved.yaml").write_text(OmegaConf.to_yaml(resolved), encoding="utf-8")

    pl.seed_everything(cfg.seed, workers=True, verbose=False)
    datamodule = LofiDataModule.from_config(cfg.data)
    model = instantiate(cfg.model, _convert_="all")
    callbacks = [*_instantiate_group(cfg.get("callbacks")), HparamsSummary(resolved)]
    loggers = _instantiate_group(cfg.get("logger"))
    overrides = {}
    if not model.automatic_optimization:  # manual optimisation (gan) clips its own gradients
        overrides["gradient_clip_val"] = None
    trainer: pl.Trainer = instantiate(cfg.trainer, callbacks=callbacks, logger=loggers or False, **overrides)

    ckpt_path = None
    if cfg.get("ckpt_path"):
        ckpt_path = resolve_checkpoint(cfg.ckpt_path, Path(cfg.paths.root_dir) / "outputs")
        console.print(f"resuming from {ckpt_path}", soft_wrap=True)
    trainer.fit(model, datamodule=datamodule, ckpt_path=ckpt_path, weights_only=True)

    metric = trainer.callback_metrics.get(cfg.optimized_metric)
    value = float(metric) if isinstance(metric, torch.Tensor) else None
    if trainer.global_rank == 0:
        _print_summary(console, trainer, cfg, value, run_dir, time.perf_counter() - started)
    return value


def _print_summary(
    console: Console, trainer: pl.Trainer, cfg: DictConfig, value: float | None, run_dir: Path, seconds: float
) -> None:
    ckpt = trainer.checkpoint_callback
    best = getattr(ckpt, "best_model_path", "") or getattr(ckpt, "last_model_path", "")
    shown = "n/a" if value is None else f"{value:.4f}"
    console.print(
        f"[bold]done[/] in {seconds / 60:.1f} min, {trainer.global_step} steps, "
        f"{cfg.optimized_metric} = {shown}\n"
        f"run dir     {run_dir}\n"
        f"checkpoint  {best}\n"
        f"next        tensorboard --logdir {Path(cfg.paths.root_dir) / 'outputs'}\n"
        f"            python generate.py ckpt={best or 'last'} seconds=10",
        soft_wrap=True,
    )

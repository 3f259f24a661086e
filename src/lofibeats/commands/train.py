"""`python train.py`: one training run: build data, model, callbacks, loggers and Trainer from
the config; fit; record the job's status for the sweep summary."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.utilities import rank_zero_only
from rich.console import Console

from lofibeats.callbacks.hparams_summary import HparamsSummary
from lofibeats.cli import quiet_third_party
from lofibeats.data.datamodule import LofiDataModule
from lofibeats.errors import ConfigError, LofiError
from lofibeats.runs import resolve_checkpoint
from lofibeats.training.precision import cpu_mixed_precision
from lofibeats.training.status import OK, JobStatus, failure_reason

log = logging.getLogger(__name__)

# What a failed job of a multirun returns: the worst value for a minimising sweeper. (Optuna
# 2.10 cannot record NaN: its sweeper crashes on it; inf is a completed, hopeless trial.)
FAILED_OBJECTIVE = float("inf")


@dataclass
class FitResult:
    value: float | None  # final cfg.optimized_metric
    metrics: dict[str, float] = field(default_factory=dict)  # every final val/* metric
    steps: int = 0
    checkpoint: str = ""  # the one to generate from (the family's `generates_from`)


def _instantiate_group(group: DictConfig | None) -> list[Any]:
    """Instantiate every entry of a config group that has a `_target_` (null entries are off)."""
    if not group:
        return []
    return [instantiate(node) for node in group.values() if node is not None and "_target_" in node]


def in_multirun() -> bool:
    """Whether this job is one of a Hydra multirun (`-m`), in whatever process the launcher used."""
    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


def _task_overrides() -> list[str]:
    if not HydraConfig.initialized():
        return []
    return list(HydraConfig.get().overrides.task)


def train(cfg: DictConfig) -> float | None:
    """Fit the configured model; return the final `cfg.optimized_metric` (what sweeps minimise).

    The run dir gets a `status.json` (running -> ok | failed: <reason>) that the sweep summary
    collects. In a Hydra multirun a failing job is recorded there and returns inf instead of
    raising, so one impossible combination does not end the sweep; a single run raises.
    """
    run_dir = Path(cfg.paths.output_dir)
    status = JobStatus(
        overrides=_task_overrides(),
        metric=cfg.optimized_metric,
        started=datetime.now().astimezone().isoformat(timespec="seconds"),
    )
    started = time.perf_counter()

    def record(**changes: Any) -> None:
        if rank_zero_only.rank == 0:  # DDP: one record per run
            for key, value in changes.items():
                setattr(status, key, value)
            status.wall_s = round(time.perf_counter() - started, 2)
            status.write(run_dir)

    record()
    try:
        result = fit(cfg)
    except KeyboardInterrupt:
        record(status="interrupted")
        raise
    except Exception as exc:
        reason = failure_reason(exc)
        record(status=f"failed: {reason}")
        if not in_multirun():
            raise
        log.error("job in %s failed: %s", run_dir, reason, exc_info=not isinstance(exc, LofiError))
        return FAILED_OBJECTIVE
    record(
        status=OK,
        value=result.value,
        metrics=result.metrics,
        steps=result.steps,
        checkpoint=result.checkpoint,
    )
    return result.value


def fit(cfg: DictConfig) -> FitResult:
    """Build everything from `cfg` and fit; the final metrics, steps and best checkpoint."""
    quiet_third_party()
    console = Console(stderr=True)
    started = time.perf_counter()
    run_dir = Path(cfg.paths.output_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    resolved = OmegaConf.to_container(cfg, resolve=True)
    (run_dir / "config_resolved.yaml").write_text(OmegaConf.to_yaml(resolved), encoding="utf-8")

    pl.seed_everything(cfg.seed, workers=True, verbose=False)
    datamodule = LofiDataModule.from_config(cfg.data)
    # checkpoints keep these ("datamodule_hyper_parameters"): generate/eval read the same audio
    datamodule.save_hyperparameters(datamodule.in_samples(resolved["data"]))
    model = instantiate(cfg.model, _convert_="all")
    callbacks = [*_instantiate_group(cfg.get("callbacks")), HparamsSummary(resolved)]
    loggers = _instantiate_group(cfg.get("logger"))
    overrides = {}
    if not model.automatic_optimization:  # manual optimisation (gan) clips its own gradients
        overrides["gradient_clip_val"] = None
    trainer: pl.Trainer = instantiate(
        cfg.trainer, callbacks=callbacks, logger=loggers or False, **overrides
    )
    _check_ddp_launch(cfg, trainer)

    ckpt_path = None
    if cfg.get("ckpt_path"):
        ckpt_path = resolve_checkpoint(cfg.ckpt_path, Path(cfg.paths.root_dir) / "outputs")
        console.print(f"resuming from {ckpt_path}", soft_wrap=True)
    with cpu_mixed_precision(trainer):
        trainer.fit(model, datamodule=datamodule, ckpt_path=ckpt_path, weights_only=True)

    ckpt = trainer.checkpoint_callback
    best, last = getattr(ckpt, "best_model_path", ""), getattr(ckpt, "last_model_path", "")
    result = FitResult(
        value=_scalar(trainer.callback_metrics.get(cfg.optimized_metric)),
        metrics=_final_val_metrics(trainer),
        steps=trainer.global_step,
        checkpoint=(last or best) if model.generates_from == "last" else (best or last),
    )
    if trainer.global_rank == 0:
        _print_summary(console, cfg, result, run_dir, time.perf_counter() - started)
    return result


def _scalar(value: Any) -> float | None:
    if isinstance(value, torch.Tensor) and value.numel() == 1:
        return float(value)
    return None


def _final_val_metrics(trainer: pl.Trainer) -> dict[str, float]:
    values = {
        name: _scalar(v) for name, v in trainer.callback_metrics.items() if name.startswith("val/")
    }
    return {name: v for name, v in values.items() if v is not None}


def _check_ddp_launch(cfg: DictConfig, trainer: pl.Trainer) -> None:
    """strategy=ddp re-runs the command line once per device: in a multirun that would start the
    whole sweep again in every child, so only launchers that start the ranks themselves may."""
    if (
        in_multirun()
        and trainer.world_size > 1
        and cfg.trainer.get("strategy") == "ddp"
        and not trainer.strategy.cluster_environment.creates_processes_externally
    ):
        raise ConfigError(
            "trainer.strategy=ddp cannot start its processes inside a multirun (-m): use "
            "trainer.strategy=ddp_spawn, or hydra/launcher=slurm (one task per device)"
        )


def _print_summary(
    console: Console, cfg: DictConfig, result: FitResult, run_dir: Path, seconds: float
) -> None:
    shown = "n/a" if result.value is None else f"{result.value:.4f}"
    console.print(
        f"[bold]done[/] in {seconds / 60:.1f} min, {result.steps} steps, "
        f"{cfg.optimized_metric} = {shown}\n"
        f"run dir     {run_dir}\n"
        f"checkpoint  {result.checkpoint}\n"
        f"next        tensorboard --logdir {Path(cfg.paths.root_dir) / 'outputs'}\n"
        f"            python generate.py ckpt={result.checkpoint or 'last'} seconds=10\n"
        f"            python live.py ckpt={result.checkpoint or 'last'}",
        soft_wrap=True,
    )

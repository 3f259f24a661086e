"""TensorBoard hparams (with final metrics) and the resolved config as text."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pytorch_lightning as pl
import torch
import yaml
from pytorch_lightning.loggers import TensorBoardLogger


def flatten(config: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """`{"model": {"hidden": 8}}` -> `{"model.hidden": 8}`; lists become strings (hparams wants scalars)."""
    flat: dict[str, Any] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten(value, f"{name}."))
        elif value is None or isinstance(value, list | tuple):
            flat[name] = str(value)
        else:
            flat[name] = value
    return flat


class HparamsSummary(pl.Callback):
    """Write the resolved config as TensorBoard text at start, and hparams + final metrics at the end.

    `config` is the resolved run config as plain containers; only the groups in `keys` go to the
    hparams tab so that runs of a sweep line up by what was varied.
    """

    def __init__(
        self,
        config: Mapping[str, Any],
        keys: tuple[str, ...] = ("data", "model", "trainer", "seed"),
    ):
        self.config = dict(config)
        self.hparams = flatten({k: self.config[k] for k in keys if k in self.config})
        self.hparams = {k: v for k, v in self.hparams.items() if not k.endswith("_target_")}

    @staticmethod
    def _tensorboard(trainer: pl.Trainer) -> TensorBoardLogger | None:
        return next((lg for lg in trainer.loggers if isinstance(lg, TensorBoardLogger)), None)

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        logger = self._tensorboard(trainer)
        if logger is None or trainer.global_rank != 0:
            return
        text = yaml.safe_dump(self.config, sort_keys=False)
        logger.experiment.add_text(
            "config", "```yaml\n" + text + "\n```", global_step=trainer.global_step
        )

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        logger = self._tensorboard(trainer)
        if logger is None or trainer.global_rank != 0:
            return
        metrics = {
            f"final/{name}": float(value)
            for name, value in trainer.callback_metrics.items()
            if name.startswith("val/") and isinstance(value, torch.Tensor) and value.numel() == 1
        }
        metrics["final/steps"] = float(trainer.global_step)
        logger.log_hyperparams(self.hparams, metrics)
        logger.experiment.flush()

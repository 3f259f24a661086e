"""Stop a run whose loss went NaN/inf with one line that says where and what is left."""

from __future__ import annotations

import math
from typing import Any

import pytorch_lightning as pl

from lofibeats.errors import LofiError


class NonFiniteLossError(LofiError):
    """The training loss stopped being a finite number."""


class StopOnNonFiniteLoss(pl.Callback):
    """Raise :class:`NonFiniteLossError` naming the step and the last good checkpoint."""

    def on_train_batch_end(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
    ) -> None:
        loss = outputs.get("loss") if isinstance(outputs, dict) else outputs
        if loss is None or math.isfinite(float(loss)):
            return
        ckpt = trainer.checkpoint_callback
        last_good = getattr(ckpt, "last_model_path", "") or getattr(ckpt, "best_model_path", "")
        where = (
            f"the last good checkpoint is {last_good}"
            if last_good
            else "no checkpoint was written yet"
        )
        raise NonFiniteLossError(
            f"training loss became {float(loss)} at step {trainer.global_step}; {where}. "
            "Lower model.lr or keep trainer.gradient_clip_val, then resume with ckpt_path=<that checkpoint>"
        )

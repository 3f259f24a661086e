"""The Rich progress bar, reading well for step-based runs."""

from __future__ import annotations

from pytorch_lightning.callbacks import RichProgressBar


class LofiProgressBar(RichProgressBar):
    """Says "Epoch 3" rather than "Epoch 3/-2" when a run is bounded by steps (max_epochs=-1)."""

    def _get_train_description(self, current_epoch: int) -> str:
        max_epochs = self.trainer.max_epochs
        if max_epochs is None or max_epochs < 0:
            return f"Epoch {current_epoch:<{len(self.validation_description) - 6}}"
        return super()._get_train_description(current_epoch)

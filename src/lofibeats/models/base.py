"""What every model family's LightningModule offers to generation, eval and callbacks.

Generation never touches the Trainer: it calls :meth:`LofiModule.continue_audio` on a module in
eval mode, chunk after chunk (see `lofibeats.generation`).
"""

from __future__ import annotations

from abc import abstractmethod

import pytorch_lightning as pl
import torch


class LofiModule(pl.LightningModule):
    """Base class of the seq2seq, vseq2seq and gan LightningModules.

    Subclasses call `self.save_hyperparameters()` with plain values only (ints, floats, strings,
    lists, dicts), including `family` and `sr`, so that a checkpoint rebuilds its model and loads
    with `torch.load(weights_only=True)`.
    """

    family: str = ""

    @property
    def sample_rate(self) -> int:
        return int(self.hparams["sr"])

    @property
    def context_len(self) -> int:
        """How many samples of `prev` the model looks at when continuing (longer is cropped)."""
        return int(self.hparams["prev_len_max"])

    @property
    def chunk_len(self) -> int:
        """How many samples one call of `continue_audio` is meant to produce (the `next` length)."""
        return int(self.hparams["next_len"])

    @abstractmethod
    @torch.no_grad()
    def continue_audio(
        self,
        prev: torch.Tensor,
        n_samples: int,
        *,
        temperature: float = 1.0,
        generator: torch.Generator | None = None,
        **options,
    ) -> torch.Tensor:
        """Continue each row of `prev` ([B, T] floats in [-1, 1]) by `n_samples` samples.

        Returns [B, n_samples] floats in [-1, 1]. Deterministic given `generator`.
        Family-specific `options` (e.g. vseq2seq's `z`) are documented by the subclass.
        """

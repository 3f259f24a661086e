"""vseq2seq: what the latent z has learned, in TensorBoard after every validation.

A histogram of the mean KL per latent dimension (collapsed dimensions sit at 0) and the first
val prime continued with `n` posterior samples of z (fixed noise, so epochs compare): if the
takes differ, the decoder listens to z.
"""

from __future__ import annotations

import numpy as np
import pytorch_lightning as pl
import torch
from pytorch_lightning.loggers import TensorBoardLogger

from lofibeats.generation.engine import continue_audio
from lofibeats.models.vseq2seq import VSeq2SeqModule


class LatentSamples(pl.Callback):
    """Logs `latent/kl_per_dim` and `z_samples/<i>` (prime + `seconds` of continuation with the
    i-th posterior sample of z) for vseq2seq models; does nothing for other families."""

    def __init__(self, n: int = 4, prime_seconds: float = 0.25, seconds: float = 0.5) -> None:
        self.n, self.prime_seconds, self.seconds = n, prime_seconds, seconds

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not isinstance(pl_module, VSeq2SeqModule) or trainer.sanity_checking:
            return
        tensorboard = next(
            (lg for lg in trainer.loggers if isinstance(lg, TensorBoardLogger)), None
        )
        if tensorboard is None or trainer.global_rank != 0 or pl_module.kl_per_dim is None:
            return
        writer, step = tensorboard.experiment, trainer.global_step
        writer.add_histogram("latent/kl_per_dim", pl_module.kl_per_dim.cpu(), step)
        for i, take in enumerate(self.takes(trainer, pl_module)):
            writer.add_audio(f"z_samples/{i}", take[None], step, sample_rate=pl_module.sample_rate)

    def takes(self, trainer: pl.Trainer, module: VSeq2SeqModule) -> torch.Tensor:
        """[n, prime + continuation] on the CPU; empty without val audio or with n = 0."""
        sr = module.sample_rate
        prime_len, n_samples = round(self.prime_seconds * sr), round(self.seconds * sr)
        datamodule = getattr(trainer, "datamodule", None)
        if self.n < 1 or n_samples < 1 or prime_len < 1 or not hasattr(datamodule, "val_clip"):
            return torch.zeros(0, 0)
        clip = torch.from_numpy(np.asarray(datamodule.val_clip(0, prime_len), dtype=np.float32))
        prime = clip[None].expand(self.n, -1).to(module.device)
        was_training = module.training
        module.eval()
        try:
            continuation = continue_audio(
                module, prime, n_samples, generator=torch.Generator().manual_seed(0), creativity=1.0
            )
        finally:
            module.train(was_training)
        return torch.cat([prime, continuation], dim=1).clamp(-1.0, 1.0).cpu()

"""The vseq2seq family: the seq2seq model with a Gaussian latent z between encoder and decoder.

The network is `VSeq2SeqNet` (`vseq2seq_net.py`); this module trains it with
:class:`Seq2SeqModule`'s teacher forcing / scheduled sampling and optimiser: a reparameterised z
from q(z | prev) starts (and with `z_every_step` conditions) the decoder; input dropout / noise
corrupt the sample stream that the decoder (both tiers of a frame model) reads.

Loss per training batch, with Tn = next length, in nats per sample:

    recon + beta(step) * KL_fb / Tn

`recon` is the head's loss (mu-law: cross-entropy in nats/sample; regression: MSE or L1);
KL_fb is the KL(q(z | prev) || N(0, I)) per sequence with free bits (`latent.free_bits_kl`);
beta follows `model.kl` (`kl_schedules`). Dividing the per-sequence KL by Tn puts it on the
per-sample scale of the reconstruction term.

Validation (teacher forcing, no input corruption, one posterior sample z per window drawn from
a generator seeded with the batch index, so it is repeatable) logs:

- ``val/elbo_bits``: the negative ELBO in bits/sample, (recon_nats + KL / Tn) / ln 2 with
  recon_nats the head's NLL of the targets' mu-law classes in nats (`head.nll_bits * ln 2`) and
  KL the plain KL per sequence (no free bits, no beta). It bounds -log2 p(next | last prev
  sample) per sample under the generative model z ~ N(0, I), next ~ p(next | z): any q gives a
  valid bound, and q(z | prev) is the one the model learned.
- ``val/loss``: `val/elbo_bits` for the mu-law head; for the regression head the training
  objective at beta = 1, MSE (or L1) + KL / Tn, as seq2seq monitors its MSE.
- ``val/recon`` (the head's loss), ``val/kl`` (nats per sequence), ``val/bits_per_sample``
  (the reconstruction NLL alone, comparable with seq2seq's), ``val/active_units`` (dimensions
  whose posterior mean varies over the epoch's val windows with variance > 0.01).

`kl_per_dim` holds the last validation epoch's KL per dimension for the `LatentSamples`
callback, which logs it and the first val prime continued with several posterior samples of z
to TensorBoard.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn

from lofibeats.models.configs import VSeq2SeqConfig
from lofibeats.models.kl_schedules import KLSchedule
from lofibeats.models.latent import LatentStats, free_bits_kl, kl_per_dim, reparameterize
from lofibeats.models.seq2seq import NET_PREFIXES, Seq2SeqModule
from lofibeats.models.vseq2seq_net import VSeq2SeqNet

ACTIVE_UNIT_THRESHOLD = 0.01
_LN2 = math.log(2.0)


@dataclass
class ElboTerms:
    """One teacher-forced pass: head outputs, target tokens, posterior, KL per row and dim."""

    out: torch.Tensor
    targets: torch.Tensor
    mu: torch.Tensor
    kl_dims: torch.Tensor

    @property
    def kl(self) -> torch.Tensor:
        """Batch-mean KL per sequence, in nats."""
        return self.kl_dims.sum(dim=-1).mean()


class VSeq2SeqModule(Seq2SeqModule):
    """Trains a `VSeq2SeqNet`; plain config values only (conf/model/vseq2seq.yaml, checked by
    `VSeq2SeqConfig`): every seq2seq key plus `latent_dim`, `z_every_step` and `kl`; its
    `input_dropout` defaults to 0.1, against posterior collapse."""

    config_class: ClassVar[type[VSeq2SeqConfig]] = VSeq2SeqConfig
    v01_net_prefixes = (*NET_PREFIXES, "posterior_head.", "latent_to_state.")
    config: VSeq2SeqConfig
    net: VSeq2SeqNet

    def __init__(self, **model_config: Any) -> None:
        super().__init__(**model_config)
        kl = self.config.kl
        self.kl_schedule = KLSchedule(
            kl["schedule"],
            kl["start"],
            kl["end"],
            kl["steps"],
            kl["cycles"],
            kl["ratio"],
            kl["sharpness"],
        )
        self._val_stats = LatentStats()
        self.kl_per_dim: torch.Tensor | None = None  # the last validation epoch's, for callbacks

    def build_net(self) -> VSeq2SeqNet:
        return VSeq2SeqNet(self.config)

    # ----------------------------------------------------------------- training
    def elbo_terms(
        self,
        prev: torch.Tensor,
        nxt: torch.Tensor,
        ratio: float = 1.0,
        generator: torch.Generator | None = None,
        reset: torch.Tensor | None = None,
    ) -> ElboTerms:
        """Encode `prev` (data.mode=stream, `reset` given: going on from each row's carried
        encoder state), sample z (eps from `generator`), decode `next` teacher-forced."""
        net = self.net
        prev_tokens, targets = net.head.tokens(prev), net.head.tokens(nxt)
        mu, logvar = net.posterior_head(self.encode_carried(prev_tokens, reset))
        z = reparameterize(mu, logvar, 1.0, generator)
        inputs = self.corrupt_inputs(net.decoder_inputs(prev_tokens, targets))
        recall = net.recall(prev_tokens, targets)
        out = self.teacher_forced(inputs, net.latent_state(z), ratio, net.cond(z), recall)
        return ElboTerms(out, targets, mu, kl_per_dim(mu, logvar))

    def training_step(self, batch: tuple[torch.Tensor, ...], batch_idx: int):
        """A (prev, next) batch, or (prev, next, reset) in data.mode=stream (see seq2seq)."""
        prev, nxt, *stream = batch
        ratio, beta = self.tf_schedule.value(), self.kl_schedule.value()
        terms = self.elbo_terms(prev, nxt, ratio, reset=stream[0] if stream else None)
        recon = self.net.head.loss(terms.out, terms.targets)
        kl_loss = free_bits_kl(terms.kl_dims, self.config.kl["free_bits"])
        loss = recon + beta * kl_loss / nxt.shape[1]
        self.tf_schedule.advance()
        self.kl_schedule.advance()
        self.log("train/loss", loss, prog_bar=True)
        self.log("train/recon", recon)
        self.log("train/kl", terms.kl)
        self.log("train/beta", beta)
        self.log("train/tf_ratio", ratio)
        return loss

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int):
        prev, nxt = batch
        generator = torch.Generator().manual_seed(batch_idx)
        terms = self.elbo_terms(prev, nxt, 1.0, generator)
        recon = self.net.head.loss(terms.out, terms.targets)
        bits = self.net.head.nll_bits(terms.out, terms.targets)
        kl_per_sample = terms.kl / nxt.shape[1]
        elbo_bits = bits + kl_per_sample / _LN2
        if self.config.head == "mulaw":
            loss = elbo_bits
        else:
            loss = recon + kl_per_sample
            self.log("val/mse", nn.functional.mse_loss(terms.out, terms.targets), sync_dist=True)
        self._val_stats.update(terms.mu, terms.kl_dims)
        self.log("val/loss", loss, prog_bar=True, sync_dist=True)
        self.log("val/elbo_bits", elbo_bits, sync_dist=True)
        self.log("val/recon", recon, sync_dist=True)
        self.log("val/kl", terms.kl, sync_dist=True)
        self.log("val/bits_per_sample", bits, sync_dist=True)
        return loss

    def on_validation_epoch_start(self) -> None:
        self._val_stats.reset()

    def on_validation_epoch_end(self) -> None:
        if self._val_stats.count == 0:
            return
        packed = self._val_stats.packed()
        if self.trainer.world_size > 1:
            packed = self.trainer.strategy.reduce(packed, reduce_op="sum")
        active, self.kl_per_dim = LatentStats.summary(packed, ACTIVE_UNIT_THRESHOLD)
        self.log("val/active_units", float(active))

"""The vseq2seq family: the seq2seq model with a Gaussian latent z between encoder and decoder.

Built on :class:`Seq2SeqModule` (same embedding, encoder, heads, teacher forcing / scheduled
sampling, optimiser): the encoder's final (h, c) give the posterior q(z | prev) = N(mu, sigma^2)
(`latent.PosteriorHead`); a reparameterised z sets the decoder's initial state through a
learned projection and, with `z_every_step`, is concatenated to the decoder input at every step,
so that changing z in the middle of generation changes what follows ("style change"). With
`frame_size` > 1 (`frame_tier`) z conditions the frame-level LSTM, each frame step reading the z
of its first sample; input dropout / noise corrupt the sample stream that both tiers read.

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

TensorBoard (rank 0, when a TensorBoardLogger is attached): a histogram of the mean KL per
dimension, and the first val prime continued with `log_z_samples` posterior samples of z.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from pytorch_lightning.loggers import TensorBoardLogger
from torch import nn

from lofibeats.errors import ConfigError
from lofibeats.models.hparams import merge_options, number
from lofibeats.models.kl_schedules import KLSchedule
from lofibeats.models.latent import (
    LatentPath,
    LatentState,
    LatentStats,
    LatentToState,
    PosteriorHead,
    free_bits_kl,
    kl_per_dim,
    reparameterize,
    standard_normal,
)
from lofibeats.models.networks import Decoder
from lofibeats.models.seq2seq import Seq2SeqModule

KL_DEFAULTS: dict[str, Any] = {
    "schedule": "linear",  # constant | linear | logistic | cyclical (see kl_schedules)
    "start": 0.0,
    "end": 1.0,  # beta max
    "steps": 2000,
    "cycles": 4,  # cyclical
    "ratio": 0.5,  # cyclical: share of each cycle spent ramping
    "sharpness": 10.0,  # logistic slope over `steps`
    "free_bits": 0.05,  # nats per dimension (0 = off)
}
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
    """Variational seq2seq LightningModule; plain config values only (conf/model/vseq2seq.yaml).

    Takes every argument of :class:`Seq2SeqModule` (passed through `seq2seq_options`) plus:
    `latent_dim`, `z_every_step`, `kl` (keys of `KL_DEFAULTS`), `input_dropout` (probability of
    replacing a teacher-forced decoder input with silence, against posterior collapse),
    `input_noise` (std of gaussian noise added to teacher-forced inputs, in audio units; mu-law
    inputs are re-quantised), `creativity` (the default of `continue_audio`'s), and the
    TensorBoard z-sample logging `log_z_samples` (0 = off) and `log_z_seconds`.
    """

    family = "vseq2seq"

    def __init__(
        self,
        family: str = "vseq2seq",
        latent_dim: int = 16,
        z_every_step: bool = True,
        kl: dict[str, Any] | None = None,
        input_dropout: float = 0.1,
        input_noise: float = 0.0,
        creativity: float = 1.0,
        log_z_samples: int = 4,
        log_z_seconds: float = 1.0,
        **seq2seq_options: Any,
    ) -> None:
        super().__init__(family=family, **seq2seq_options)
        kl = merge_options(kl, KL_DEFAULTS, "model.kl")
        for name in ("start", "end", "free_bits"):
            kl[name] = number(kl[name], f"model.kl.{name}", low=0.0)
        for name in ("ratio", "sharpness"):
            kl[name] = number(kl[name], f"model.kl.{name}")
        for name in ("steps", "cycles"):
            kl[name] = number(kl[name], f"model.kl.{name}", kind=int, low=1)
        dropout = number(input_dropout, "model.input_dropout", low=0.0)
        if dropout >= 1.0:
            raise ConfigError(
                f"model.input_dropout={input_dropout!r}: give a probability in [0, 1)"
            )
        self.save_hyperparameters(
            {
                **self.hparams,
                "latent_dim": number(latent_dim, "model.latent_dim", kind=int, low=1),
                "z_every_step": bool(z_every_step),
                "kl": kl,
                "input_dropout": dropout,
                "input_noise": number(input_noise, "model.input_noise", low=0.0),
                "creativity": number(creativity, "model.creativity", low=0.0),
                "log_z_samples": number(log_z_samples, "model.log_z_samples", kind=int, low=0),
                "log_z_seconds": number(log_z_seconds, "model.log_z_seconds", low=0.0),
            }
        )
        hp = self.hparams
        self.posterior_head = PosteriorHead(hp.hidden, hp.layers, hp.latent_dim)
        self.latent_to_state = LatentToState(hp.latent_dim, hp.hidden, hp.layers)
        # seq2seq's decoder, rebuilt to take z as an extra input at every step
        self.decoder = Decoder(
            self.lstm_input_dim,
            hp.hidden,
            hp.layers,
            hp.dropout,
            cond_dim=hp.latent_dim if hp.z_every_step else 0,
            forget_bias=hp.forget_bias,
        )
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
        self._val_prime: torch.Tensor | None = None

    # ----------------------------------------------------------------- latent
    def posterior(self, prev_tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """prev tokens [B, Tp] -> (mu, logvar) of q(z | prev), each [B, latent_dim]."""
        return self.posterior_head(self.encoder_state(prev_tokens))

    def latent_state(self, z: torch.Tensor) -> LatentState:
        """The decoder's initial state for latent z [B, D] (z is kept to condition each step)."""
        h, c = self.latent_to_state(z)
        return LatentState(h, c, z)

    def encode(self, prev_tokens: torch.Tensor) -> LatentState:
        """Seq2seq's contract (prev tokens -> the decoder's initial state), at the posterior mean."""
        return self.latent_state(self.posterior(prev_tokens)[0])

    @torch.no_grad()
    def latent_from_audio(
        self,
        prev: torch.Tensor | None,
        *,
        creativity: float = 0.0,
        generator: torch.Generator | None = None,
        batch: int = 1,
    ) -> torch.Tensor:
        """z [B, D] for continuing `prev` ([B, T] audio in [-1, 1], cropped to `context_len`):
        mu + creativity * sigma * eps. With no prime (None, or T = 0) z is drawn from the prior,
        creativity * N(0, I), for `batch` rows (None) or B rows. eps comes from `generator`."""
        creativity = number(creativity, "creativity", low=0.0)
        if prev is None or prev.shape[1] == 0:
            rows = batch if prev is None else prev.shape[0]
            eps = standard_normal((rows, self.hparams.latent_dim), self.device, generator)
            return creativity * eps
        prev = prev[:, -self.context_len :].to(self.device, torch.float32)
        mu, logvar = self.posterior(self.head.tokens(prev))
        return reparameterize(mu, logvar, creativity, generator)

    def _cond(self, z: torch.Tensor) -> torch.Tensor | None:
        return z if self.hparams.z_every_step else None

    # ----------------------------------------------------------------- network pieces
    def run_decoder(self, x: torch.Tensor, state: LatentState) -> tuple[torch.Tensor, LatentState]:
        """The decoder LSTM over x [B, T, ...] from `state`; z is `state.z`, [B, D] or one per
        step [B, T, D]."""
        h, (h_n, c_n) = self.decoder(x, (state.h, state.c), self._cond(state.z))
        return h, LatentState(h_n, c_n, state.z)

    def decoder_step(
        self, x_t: torch.Tensor, state: LatentState
    ) -> tuple[torch.Tensor, LatentState]:
        """One decoder LSTM step; z is `state.z` [B, D]."""
        h, (h_n, c_n) = self.decoder.step(x_t, (state.h, state.c), self._cond(state.z))
        return h, LatentState(h_n, c_n, state.z)

    def with_cond(self, state: LatentState, cond_t: torch.Tensor) -> LatentState:
        """`state` conditioned on the latent `cond_t` [B, D] from this step on."""
        return state._replace(z=cond_t)

    # ----------------------------------------------------------------- training
    def corrupt_inputs(self, inputs: torch.Tensor) -> torch.Tensor:
        """In training mode: gaussian noise (`input_noise`, audio units) on the teacher-forced
        inputs, then each replaced by silence with probability `input_dropout` (the decoder
        must lean on z instead of copying its inputs). Identity in eval mode."""
        noise, dropout = self.hparams.input_noise, self.hparams.input_dropout
        if not self.training or (noise == 0 and dropout == 0):
            return inputs
        audio = self.head.audio(inputs)
        if noise > 0:
            audio = (audio + noise * torch.randn_like(audio)).clamp(-1.0, 1.0)
        if dropout > 0:
            audio = audio.masked_fill(torch.rand_like(audio) < dropout, 0.0)
        return self.head.tokens(audio)

    def elbo_terms(
        self,
        prev: torch.Tensor,
        nxt: torch.Tensor,
        ratio: float = 1.0,
        generator: torch.Generator | None = None,
    ) -> ElboTerms:
        """Encode `prev`, sample z (eps from `generator`), decode `next` teacher-forced."""
        prev_tokens, targets = self.head.tokens(prev), self.head.tokens(nxt)
        mu, logvar = self.posterior(prev_tokens)
        state = self.latent_state(reparameterize(mu, logvar, 1.0, generator))
        inputs = self.corrupt_inputs(self.decoder_inputs(prev_tokens, targets))
        out = self.teacher_forced(inputs, state, ratio)
        return ElboTerms(out, targets, mu, kl_per_dim(mu, logvar))

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int):
        prev, nxt = batch
        ratio, beta = self.tf_schedule.value(), self.kl_schedule.value()
        terms = self.elbo_terms(prev, nxt, ratio)
        recon = self.head.loss(terms.out, terms.targets)
        kl_loss = free_bits_kl(terms.kl_dims, self.hparams.kl["free_bits"])
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
        recon = self.head.loss(terms.out, terms.targets)
        bits = self.head.nll_bits(terms.out, terms.targets)
        kl_per_sample = terms.kl / nxt.shape[1]
        elbo_bits = bits + kl_per_sample / _LN2
        if self.hparams.head == "mulaw":
            loss = elbo_bits
        else:
            loss = recon + kl_per_sample
            self.log("val/mse", nn.functional.mse_loss(terms.out, terms.targets), sync_dist=True)
        self._val_stats.update(terms.mu, terms.kl_dims)
        if batch_idx == 0:
            self._val_prime = prev[:1].detach()
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
        active, kl_dims = LatentStats.summary(packed, ACTIVE_UNIT_THRESHOLD)
        self.log("val/active_units", float(active))
        tensorboard = next((lg for lg in self.loggers if isinstance(lg, TensorBoardLogger)), None)
        if tensorboard is None or not self.trainer.is_global_zero or self.trainer.sanity_checking:
            return
        writer, step = tensorboard.experiment, self.global_step
        writer.add_histogram("latent/kl_per_dim", kl_dims.cpu(), step)
        for i, take in enumerate(self._z_sample_takes()):
            writer.add_audio(f"z_samples/{i}", take[None], step, sample_rate=self.sample_rate)

    def _z_sample_takes(self) -> torch.Tensor:
        """The first val prime followed by `log_z_samples` continuations, each with its own
        posterior sample of z (fixed noise, so epochs compare): [K, Tp + n] on the CPU."""
        count, n = self.hparams.log_z_samples, round(self.hparams.log_z_seconds * self.sample_rate)
        if count == 0 or n == 0 or self._val_prime is None:
            return torch.zeros(0, 0)
        prime = self._val_prime.expand(count, -1)
        continuation = self.continue_audio(
            prime, n, creativity=1.0, generator=torch.Generator().manual_seed(0)
        )
        return torch.cat([prime, continuation], dim=1).clamp(-1.0, 1.0).cpu()

    # ----------------------------------------------------------------- generation
    def latent_path(
        self,
        prev: torch.Tensor,
        n_samples: int,
        z: torch.Tensor | LatentPath | None,
        creativity: float,
        generator: torch.Generator | None,
    ) -> torch.Tensor:
        """The z of each of the `n_samples` outputs, [B, n, D] (a broadcast view for one z)."""
        if z is None:
            z = self.latent_from_audio(prev, creativity=creativity, generator=generator)
        path = z if isinstance(z, torch.Tensor) else z.take(n_samples)
        path = path.to(self.device, torch.float32)
        if path.dim() == 2:
            path = path[:, None].expand(-1, n_samples, -1)
        expected = (prev.shape[0], n_samples, self.hparams.latent_dim)
        if tuple(path.shape) != expected:
            raise ValueError(
                f"z must be [batch, latent_dim] or [batch, n_samples, latent_dim] = {expected}, "
                f"got {tuple(path.shape)}"
            )
        return path

    @torch.no_grad()
    def continue_audio(
        self,
        prev: torch.Tensor,
        n_samples: int,
        *,
        temperature: float | None = None,
        generator: torch.Generator | None = None,
        decoding: str | None = None,
        top_p: float | None = None,
        creativity: float | None = None,
        z: torch.Tensor | LatentPath | None = None,
    ) -> torch.Tensor:
        """Continue each row of `prev` ([B, T] in [-1, 1], cropped to the last `context_len`
        samples) by `n_samples`, autoregressively; sampling options as in seq2seq.

        The latent: `z` given as [B, D] (one z), [B, n_samples, D] (one per output sample), or a
        `LatentPath` (its next `n_samples` z: style changes over long-form generation, see
        `lofibeats.generation.style`). Otherwise z is inferred from `prev`: mu + `creativity` *
        sigma * eps (0 = the posterior mean, 1 = a posterior sample, > 1 wilder; unset = the
        model.creativity hparam), eps from `generator`; an empty `prev` draws from the prior.
        The decoder starts from the first output's z; with `z_every_step` each step reads its own
        (frame models: each frame step reads its first sample's).
        """
        sampling = self.sampling_options(temperature, decoding, top_p)
        creativity = self.hparams.creativity if creativity is None else creativity
        prev = self.crop_prev(prev)
        path = self.latent_path(prev, n_samples, z, creativity, generator)
        if n_samples == 0:
            return prev.new_zeros(prev.shape[0], 0)
        prev_tokens = self.head.tokens(prev)
        state = self.latent_state(path[:, 0])
        tokens = self.generate_tokens(prev_tokens, state, n_samples, sampling, generator, path)
        return self.head.audio(tokens)

"""The gan family: a conditional continuation GAN, G(prev, noise) -> next in one pass.

Batches are `(prev, next)` float tensors in [-1, 1], [B, Tp] and [B, Tn]; `next` follows `prev`.
The generator and discriminators are in `gan_networks`, the losses in `gan_losses`. D judges
[prev | next]: the last `d_context` samples of prev followed by a real or generated next.

Training (manual optimisation, two Adam optimisers with their own learning rates, TTUR):

1. Warm-up: for the first `adv_warmup_steps` generator steps G is trained on the
   multi-resolution STFT loss (+ dc_weight * the L1 between segment means) alone and D is not
   touched (one optimizer step per batch).
2. Adversarial: every batch makes one D step; every `n_critic`-th batch (by D's own step count)
   also makes one G step on stft_weight * STFT + dc_weight * DC + adv_weight * adversarial +
   fm_weight * feature matching. wgan_gp adds gp_weight * gradient penalty to D's loss.

The generator/discriminator step counts live in the state_dict (`steps`), so the switch happens
at the configured generator step even across a resume, and never depends on `global_step`.

**What `trainer.max_steps` means here.** Lightning counts every `optimizer.step()` (of either
optimiser) as a step. A warm-up batch is 1 step; an adversarial batch is 1 (D only) or 2
(D + G) steps: with n_critic = 1 every adversarial batch is 2 steps. So with W =
adv_warmup_steps and S = max_steps >= W: G makes W + (S - W) / (n_critic + 1) steps and D makes
(S - W) * n_critic / (n_critic + 1). E.g. S = 3000, W = 1000, n_critic = 1: 1000 warm-up
batches, then 1000 adversarial batches (2000 G steps, 1000 D steps in all).
`trainer.val_check_interval` counts batches, not optimizer steps.

Gradient clipping is done here (model.grad_clip, by norm). Lightning refuses
`trainer.gradient_clip_val` under manual optimisation, so train.py passes null for this family.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from lofibeats.errors import ConfigError
from lofibeats.models.base import LofiModule
from lofibeats.models.gan_losses import (
    ADV_LOSSES,
    MultiResolutionSTFTLoss,
    critic_score,
    discriminator_loss,
    feature_matching,
    generator_loss,
    gradient_penalty,
)
from lofibeats.models.gan_networks import DiscriminatorOutput, Discriminators, Generator, fit_left
from lofibeats.models.hparams import choice, number
from lofibeats.units import to_samples


class StepCounts(nn.Module):
    """Generator and discriminator optimizer steps taken, kept in the state_dict as plain ints
    ("extra state": loads with weights_only=True, restored by resume and by load_module)."""

    def __init__(self) -> None:
        super().__init__()
        self.g = 0
        self.d = 0

    def get_extra_state(self) -> dict[str, int]:
        return {"g": self.g, "d": self.d}

    def set_extra_state(self, state: dict[str, int]) -> None:
        self.g, self.d = int(state["g"]), int(state["d"])

    def extra_repr(self) -> str:
        return f"g={self.g}, d={self.d}"


def _ints(values: Any, key: str, low: int) -> list[int]:
    if isinstance(values, (str, bytes)) or not isinstance(values, Sequence):
        raise ConfigError(f"{key}={values!r}: give a list of integers, e.g. [4, 4, 4]")
    return [number(v, f"{key}[{i}]", kind=int, low=low) for i, v in enumerate(values)]


def _betas(values: Any) -> list[float]:
    betas = [number(v, f"model.betas[{i}]", low=0.0) for i, v in enumerate(values or [])]
    if len(betas) != 2 or not all(b < 1.0 for b in betas):
        raise ConfigError(f"model.betas={values!r}: give two Adam betas in [0, 1), e.g. [0.5, 0.9]")
    return betas


class GanModule(LofiModule):
    """Conditional continuation GAN LightningModule; every argument is a plain config value (see
    conf/model/gan.yaml). `prev_len_max`, `next_len` and `d_context` may be samples or durations
    ("0.25s"); they are stored as samples (`d_context` null = next_len)."""

    family = "gan"

    def __init__(
        self,
        family: str = "gan",
        sr: int = 8000,
        prev_len_max: int | str = 2048,
        next_len: int | str = 512,
        hidden: int = 64,
        layers: int = 3,
        ratios: Sequence[int] = (4, 4, 4),
        noise_dim: int = 32,
        d_context: int | str | None = None,
        d_channels: int = 16,
        d_max_channels: int = 128,
        d_layers: int = 3,
        d_scales: int = 3,
        mpd_periods: Sequence[int] = (),
        phase_shuffle: int = 2,
        spectral_norm: bool = False,
        adv_loss: str = "hinge",
        adv_weight: float = 1.0,
        fm_weight: float = 2.0,
        stft_weight: float = 2.0,
        dc_weight: float = 10.0,
        gp_weight: float = 10.0,
        adv_warmup_steps: int = 1000,
        n_critic: int = 1,
        lr_g: float = 1e-4,
        lr_d: float = 4e-4,
        betas: Sequence[float] = (0.5, 0.9),
        grad_clip: float | None = 1.0,
    ) -> None:
        super().__init__()
        if family != self.family:
            raise ConfigError(f"model.family={family!r}: this module is {self.family!r}")
        sr = number(sr, "data.sr", kind=int, low=1)
        next_len = to_samples(next_len, sr, "data.next_len")
        d_scales = number(d_scales, "model.d_scales", kind=int, low=0)
        mpd_periods = _ints(mpd_periods, "model.mpd_periods", low=2)
        ratios = _ints(ratios, "model.ratios", low=2)
        if not ratios:
            raise ConfigError("model.ratios=[]: give at least one factor, e.g. [4, 4, 4]")
        if d_scales == 0 and not mpd_periods:
            raise ConfigError("model.d_scales=0 and model.mpd_periods=[]: D needs at least one")
        self.save_hyperparameters(
            {
                "family": self.family,
                "sr": sr,
                "prev_len_max": to_samples(prev_len_max, sr, "data.prev_len_max"),
                "next_len": next_len,
                "hidden": number(hidden, "model.hidden", kind=int, low=1),
                "layers": number(layers, "model.layers", kind=int, low=1),
                "ratios": ratios,
                "noise_dim": number(noise_dim, "model.noise_dim", kind=int, low=1),
                "d_context": (
                    next_len if d_context is None else to_samples(d_context, sr, "model.d_context")
                ),
                "d_channels": number(d_channels, "model.d_channels", kind=int, low=4),
                "d_max_channels": number(d_max_channels, "model.d_max_channels", kind=int, low=4),
                "d_layers": number(d_layers, "model.d_layers", kind=int, low=1),
                "d_scales": d_scales,
                "mpd_periods": mpd_periods,
                "phase_shuffle": number(phase_shuffle, "model.phase_shuffle", kind=int, low=0),
                "spectral_norm": bool(spectral_norm),
                "adv_loss": choice(adv_loss, ADV_LOSSES, "model.adv_loss"),
                "adv_weight": number(adv_weight, "model.adv_weight", low=0.0),
                "fm_weight": number(fm_weight, "model.fm_weight", low=0.0),
                "stft_weight": number(stft_weight, "model.stft_weight", low=0.0),
                "dc_weight": number(dc_weight, "model.dc_weight", low=0.0),
                "gp_weight": number(gp_weight, "model.gp_weight", low=0.0),
                "adv_warmup_steps": number(
                    adv_warmup_steps, "model.adv_warmup_steps", kind=int, low=0
                ),
                "n_critic": number(n_critic, "model.n_critic", kind=int, low=1),
                "lr_g": number(lr_g, "model.lr_g", low=0.0),
                "lr_d": number(lr_d, "model.lr_d", low=0.0),
                "betas": _betas(betas),
                "grad_clip": (
                    None if grad_clip is None else number(grad_clip, "model.grad_clip", low=0.0)
                ),
            }
        )
        hp = self.hparams
        self.automatic_optimization = False
        self.generator = Generator(
            hp.prev_len_max, hp.next_len, hp.hidden, hp.layers, hp.ratios, hp.noise_dim
        )
        self.discriminator = Discriminators(
            hp.d_scales,
            hp.mpd_periods,
            hp.d_channels,
            hp.d_max_channels,
            hp.d_layers,
            hp.phase_shuffle,
            hp.spectral_norm,
        )
        self.stft_loss = MultiResolutionSTFTLoss(hp.next_len)
        self.steps = StepCounts()

    # ----------------------------------------------------------------- pieces
    @property
    def adversarial(self) -> bool:
        """Whether the warm-up is over (D trains, G gets the adversarial terms)."""
        return self.steps.g >= self.hparams.adv_warmup_steps

    @property
    def default_crossfade(self) -> int:
        """Overlap-add samples between chunks that generate_long should use for this model."""
        return self.chunk_len // 8

    def noise(
        self, batch: int, temperature: float = 1.0, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """z [B, noise_dim, frames_out] ~ N(0, temperature^2), drawn on `generator`'s device."""
        shape = (batch, self.generator.noise_dim, self.generator.frames_out)
        device = generator.device if generator is not None else self.device
        z = torch.randn(shape, generator=generator, device=device).to(self.device)
        return z * temperature

    def d_input(self, prev: torch.Tensor, nxt: torch.Tensor) -> torch.Tensor:
        """What D judges: [last d_context samples of prev (left-padded) | next], [B, Tc + Tn]."""
        return torch.cat([fit_left(prev, self.hparams.d_context), nxt], dim=1)

    def _split(
        self, outputs: list[DiscriminatorOutput], batch: int
    ) -> tuple[list[DiscriminatorOutput], list[DiscriminatorOutput]]:
        """D outputs on cat([a, b]) -> (outputs on a, outputs on b)."""

        def part(sl: slice) -> list[DiscriminatorOutput]:
            return [DiscriminatorOutput(o.logits[sl], [f[sl] for f in o.features]) for o in outputs]

        return part(slice(None, batch)), part(slice(batch, None))

    def _clip_and_step(self, optimizer) -> None:
        if self.hparams.grad_clip:
            self.clip_gradients(
                optimizer, gradient_clip_val=self.hparams.grad_clip, gradient_clip_algorithm="norm"
            )
        optimizer.step()

    # ----------------------------------------------------------------- training
    def discriminator_step(self, optimizer, prev: torch.Tensor, nxt: torch.Tensor) -> torch.Tensor:
        """One D update on real vs freshly generated continuations; returns D's loss."""
        hp = self.hparams
        with torch.no_grad():
            fake = self.generator(prev, self.noise(prev.shape[0]))
        real_x, fake_x = self.d_input(prev, nxt), self.d_input(prev, fake)
        real, generated = self._split(self.discriminator(torch.cat([real_x, fake_x])), len(prev))
        real_logits = [o.logits for o in real]
        fake_logits = [o.logits for o in generated]
        loss = discriminator_loss(hp.adv_loss, real_logits, fake_logits)
        if hp.adv_loss == "wgan_gp":

            def critic(x: torch.Tensor) -> torch.Tensor:
                return critic_score([o.logits for o in self.discriminator(x)])

            gp = gradient_penalty(critic, real_x, fake_x)
            loss = loss + hp.gp_weight * gp
            self.log("train/gp", gp)
        optimizer.zero_grad(set_to_none=True)
        self.manual_backward(loss)
        self._clip_and_step(optimizer)
        self.steps.d += 1
        self.log("train/d_loss", loss)
        self.log("train/d_real", critic_score(real_logits).mean().detach())
        self.log("train/d_fake", critic_score(fake_logits).mean().detach())
        return loss.detach()

    def generator_step(
        self, optimizer, prev: torch.Tensor, nxt: torch.Tensor, adversarial: bool
    ) -> torch.Tensor:
        """One G update: the STFT loss, plus the adversarial and feature-matching terms once
        `adversarial`; D's parameters are frozen meanwhile. Returns G's loss."""
        hp = self.hparams
        with self.toggled_optimizer(optimizer):
            fake = self.generator(prev, self.noise(prev.shape[0]))
            stft = self.stft_loss(fake, nxt)
            # magnitude spectra barely see a constant offset: match each segment's mean directly
            dc = (fake.mean(-1) - nxt.mean(-1)).abs().mean()
            adv = fm = torch.zeros((), device=self.device)
            if adversarial:
                fake_x = self.d_input(prev, fake)
                if hp.fm_weight > 0:
                    both = self.discriminator(torch.cat([self.d_input(prev, nxt), fake_x]))
                    real, generated = self._split(both, len(prev))
                    fm = feature_matching(
                        [o.features for o in real], [o.features for o in generated]
                    )
                else:
                    generated = self.discriminator(fake_x)
                adv = generator_loss(hp.adv_loss, [o.logits for o in generated])
            loss = (
                hp.stft_weight * stft + hp.dc_weight * dc + hp.adv_weight * adv + hp.fm_weight * fm
            )
            optimizer.zero_grad(set_to_none=True)
            self.manual_backward(loss)
            self._clip_and_step(optimizer)
        self.steps.g += 1
        self.log("train/g_loss", loss)
        self.log("train/stft", stft)
        self.log("train/dc", dc)
        self.log("train/adv_g", adv)
        self.log("train/fm", fm)
        return loss.detach()

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int):
        """Warm-up: a G step. Then: a D step, and a G step every n_critic-th D step.

        Returns {"loss": D loss + G loss of this batch} (for the non-finite-loss check only).
        """
        prev, nxt = batch
        opt_g, opt_d = self.optimizers()
        adversarial = self.adversarial
        total = torch.zeros((), device=self.device)
        if adversarial:
            total = total + self.discriminator_step(opt_d, prev, nxt)
        if not adversarial or self.steps.d % self.hparams.n_critic == 0:
            total = total + self.generator_step(opt_g, prev, nxt, adversarial)
        self.log("train/adversarial", float(adversarial))
        return {"loss": total}

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int):
        """val/loss = val/stft: the multi-resolution STFT loss of a continuation from fixed noise
        (seeded by the batch index, so the monitor does not jitter with the draw)."""
        prev, nxt = batch
        generator = torch.Generator(device=self.device).manual_seed(batch_idx)
        fake = self.generator(prev, self.noise(prev.shape[0], generator=generator))
        stft = self.stft_loss(fake, nxt)
        self.log("val/loss", stft, prog_bar=True, sync_dist=True)
        self.log("val/stft", stft, sync_dist=True)
        return stft

    def configure_optimizers(self):
        """[G's Adam, D's Adam], each with its own learning rate (TTUR) and model.betas."""
        hp = self.hparams
        betas = tuple(hp.betas)
        opt_g = torch.optim.Adam(self.generator.parameters(), lr=hp.lr_g, betas=betas)
        opt_d = torch.optim.Adam(self.discriminator.parameters(), lr=hp.lr_d, betas=betas)
        return [opt_g, opt_d]

    # ----------------------------------------------------------------- generation
    @torch.no_grad()
    def continue_audio(
        self,
        prev: torch.Tensor,
        n_samples: int,
        *,
        temperature: float = 1.0,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """Continue each row of `prev` ([B, T] in [-1, 1]; the last `context_len` samples are
        used, shorter is left-padded with silence) by `n_samples`.

        Makes ceil(n_samples / chunk_len) generator passes, each conditioned on the last context
        of prev + what was generated so far; the noise is scaled by `temperature` (0 gives the
        same continuation for every draw). Deterministic given `generator`.
        """
        if prev.dim() != 2:
            raise ValueError(f"prev must be [batch, time], got shape {tuple(prev.shape)}")
        temperature = number(temperature, "temperature", low=0.0)
        history = fit_left(prev.to(self.device, torch.float32), self.context_len)
        pieces = []
        for _ in range(math.ceil(n_samples / self.chunk_len)):
            z = self.noise(history.shape[0], temperature, generator)
            piece = self.generator(history, z)
            pieces.append(piece)
            history = torch.cat([history, piece], dim=1)[:, -self.context_len :]
        if not pieces:
            return history.new_zeros(history.shape[0], 0)
        return torch.cat(pieces, dim=1)[:, :n_samples]

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

from typing import Any, ClassVar

import torch
from torch import nn

from lofibeats.errors import ConfigError
from lofibeats.models.base import LofiModule
from lofibeats.models.configs import GanConfig
from lofibeats.models.gan_losses import (
    MultiResolutionSTFTLoss,
    critic_score,
    discriminator_loss,
    feature_matching,
    generator_loss,
    gradient_penalty,
)
from lofibeats.models.gan_networks import DiscriminatorOutput, Discriminators, Generator, fit_left


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


class GanModule(LofiModule):
    """Trains the conditional continuation GAN; every argument is a plain config value (see
    conf/model/gan.yaml, checked by `GanConfig`). The network generation runs is the generator
    (`self.net`); the discriminators and losses are training's."""

    config_class: ClassVar[type[GanConfig]] = GanConfig
    config: GanConfig

    def __init__(self, **model_config: Any) -> None:
        super().__init__(**model_config)
        c = self.config
        self.automatic_optimization = False
        self.generator = Generator(
            c.prev_len_max, c.next_len, c.hidden, c.layers, c.ratios, c.noise_dim
        )
        self.discriminator = Discriminators(
            c.d_scales,
            c.mpd_periods,
            c.d_channels,
            c.d_max_channels,
            c.d_layers,
            c.phase_shuffle,
            c.spectral_norm,
        )
        self.stft_loss = MultiResolutionSTFTLoss(c.next_len)
        self.steps = StepCounts()

    @property
    def net(self) -> Generator:
        return self.generator

    # ----------------------------------------------------------------- pieces
    @property
    def adversarial(self) -> bool:
        """Whether the warm-up is over (D trains, G gets the adversarial terms)."""
        return self.steps.g >= self.config.adv_warmup_steps

    @property
    def default_crossfade(self) -> int:
        """One pass per chunk leaves seams: long-form generation blends 1/8 chunk across them."""
        return self.chunk_len // 8

    def d_input(self, prev: torch.Tensor, nxt: torch.Tensor) -> torch.Tensor:
        """What D judges: [last d_context samples of prev (left-padded) | next], [B, Tc + Tn]."""
        return torch.cat([fit_left(prev, self.config.d_context), nxt], dim=1)

    def _split(
        self, outputs: list[DiscriminatorOutput], batch: int
    ) -> tuple[list[DiscriminatorOutput], list[DiscriminatorOutput]]:
        """D outputs on cat([a, b]) -> (outputs on a, outputs on b)."""

        def part(sl: slice) -> list[DiscriminatorOutput]:
            return [DiscriminatorOutput(o.logits[sl], [f[sl] for f in o.features]) for o in outputs]

        return part(slice(None, batch)), part(slice(batch, None))

    def _clip_and_step(self, optimizer) -> None:
        if self.config.grad_clip:
            self.clip_gradients(
                optimizer, gradient_clip_val=self.config.grad_clip, gradient_clip_algorithm="norm"
            )
        optimizer.step()

    # ----------------------------------------------------------------- training
    def discriminator_step(self, optimizer, prev: torch.Tensor, nxt: torch.Tensor) -> torch.Tensor:
        """One D update on real vs freshly generated continuations; returns D's loss."""
        hp = self.config
        with torch.no_grad():
            fake = self.generator(prev, self.generator.noise(prev.shape[0]))
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
        hp = self.config
        with self.toggled_optimizer(optimizer):
            fake = self.generator(prev, self.generator.noise(prev.shape[0]))
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
        if len(batch) != 2:
            raise ConfigError(
                "data.mode=stream: the gan hears its past through a long data.prev_len_max, not "
                "a carried state; train it with data.mode=windows"
            )
        prev, nxt = batch
        opt_g, opt_d = self.optimizers()
        adversarial = self.adversarial
        total = torch.zeros((), device=self.device)
        if adversarial:
            total = total + self.discriminator_step(opt_d, prev, nxt)
        if not adversarial or self.steps.d % self.config.n_critic == 0:
            total = total + self.generator_step(opt_g, prev, nxt, adversarial)
        self.log("train/adversarial", float(adversarial))
        return {"loss": total}

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int):
        """val/loss = val/stft: the multi-resolution STFT loss of a continuation from fixed noise
        (seeded by the batch index, so the monitor does not jitter with the draw)."""
        prev, nxt = batch
        generator = torch.Generator(device=self.device).manual_seed(batch_idx)
        fake = self.generator(prev, self.generator.noise(prev.shape[0], generator=generator))
        stft = self.stft_loss(fake, nxt)
        self.log("val/loss", stft, prog_bar=True, sync_dist=True)
        self.log("val/stft", stft, sync_dist=True)
        return stft

    def configure_optimizers(self):
        """[G's Adam, D's Adam], each with its own learning rate (TTUR) and model.betas."""
        hp = self.config
        betas = tuple(hp.betas)
        opt_g = torch.optim.Adam(self.generator.parameters(), lr=hp.lr_g, betas=betas)
        opt_d = torch.optim.Adam(self.discriminator.parameters(), lr=hp.lr_d, betas=betas)
        return [opt_g, opt_d]

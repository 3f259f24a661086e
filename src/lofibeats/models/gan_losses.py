"""Losses of the conditional continuation GAN.

Every discriminator function takes one logits tensor per sub-discriminator (the multi-scale and
multi-period discriminators each give a [B, N] map of patch logits) and averages over them, so
the adversarial terms keep their scale whatever the number of sub-discriminators.

- hinge (SAGAN, MelGAN): D: relu(1 - D(real)) + relu(1 + D(fake)); G: -D(fake).
- lsgan (Mao et al.; HiFi-GAN): D: (D(real) - 1)^2 + D(fake)^2; G: (D(fake) - 1)^2.
- wgan_gp (Gulrajani et al.): D: D(fake) - D(real) + gp_weight * GP; G: -D(fake).
- feature matching (MelGAN): L1 between D's hidden activations on real and generated audio.
- multi-resolution STFT loss (Parallel WaveGAN): spectral convergence + log-magnitude L1.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from lofibeats.errors import ConfigError

ADV_LOSSES = ("hinge", "wgan_gp", "lsgan")
MIN_FFT = 8
_MAG_FLOOR = 1e-7  # power floor: keeps sqrt and log differentiable on silent bins


def _check(kind: str) -> None:
    if kind not in ADV_LOSSES:
        raise ConfigError(f"model.adv_loss={kind!r}: choose one of {', '.join(ADV_LOSSES)}")


def critic_score(logits: Sequence[torch.Tensor]) -> torch.Tensor:
    """One number per example [B]: the patch logits averaged over positions, then over
    sub-discriminators (what the Wasserstein critic and its gradient penalty use)."""
    return torch.stack([x.flatten(1).mean(dim=1) for x in logits]).mean(dim=0)


def discriminator_loss(
    kind: str, real: Sequence[torch.Tensor], fake: Sequence[torch.Tensor]
) -> torch.Tensor:
    """D's adversarial loss (without the gradient penalty) for `kind` in ADV_LOSSES."""
    _check(kind)
    if kind == "wgan_gp":
        return critic_score(fake).mean() - critic_score(real).mean()
    terms = []
    for r, f in zip(real, fake, strict=True):
        if kind == "hinge":
            terms.append(F.relu(1.0 - r).mean() + F.relu(1.0 + f).mean())
        else:
            terms.append((r - 1.0).pow(2).mean() + f.pow(2).mean())
    return torch.stack(terms).mean()


def generator_loss(kind: str, fake: Sequence[torch.Tensor]) -> torch.Tensor:
    """G's adversarial loss for `kind` in ADV_LOSSES, given D's logits on generated audio."""
    _check(kind)
    if kind == "lsgan":
        return torch.stack([(f - 1.0).pow(2).mean() for f in fake]).mean()
    return -torch.stack([f.mean() for f in fake]).mean()


def gradient_penalty(
    critic: Callable[[torch.Tensor], torch.Tensor], real: torch.Tensor, fake: torch.Tensor
) -> torch.Tensor:
    """WGAN-GP: mean over the batch of (||grad_x critic(x)|| - 1)^2 at random points x on the
    lines between real and fake inputs ([B, T]); `critic` maps [B, T] to scores [B].

    The graph is kept (create_graph) so the penalty trains D. The mixing weights come from the
    global RNG (this runs inside a training step).
    """
    eps = torch.rand(real.shape[0], 1, device=real.device, dtype=real.dtype)
    mixed = (real.detach() + eps * (fake.detach() - real.detach())).requires_grad_(True)
    (grad,) = torch.autograd.grad(critic(mixed).sum(), mixed, create_graph=True)
    return (grad.flatten(1).norm(dim=1) - 1.0).pow(2).mean()


def feature_matching(
    real: Sequence[Sequence[torch.Tensor]], fake: Sequence[Sequence[torch.Tensor]]
) -> torch.Tensor:
    """Mean L1 distance between D's feature maps on real (treated as constants) and fake audio,
    averaged over every layer of every sub-discriminator."""
    terms = [
        F.l1_loss(f, r.detach())
        for real_maps, fake_maps in zip(real, fake, strict=True)
        for r, f in zip(real_maps, fake_maps, strict=True)
    ]
    return torch.stack(terms).mean()


def stft_resolutions(length: int) -> list[int]:
    """FFT sizes for a segment of `length` samples: the largest power of two <= length / 2, and
    its halves and quarters (not below MIN_FFT): e.g. 512 -> [256, 128, 64], 64 -> [32, 16, 8]."""
    base = MIN_FFT
    while base * 4 <= length:
        base *= 2
    return sorted({max(base >> i, MIN_FFT) for i in range(3)}, reverse=True)


class MultiResolutionSTFTLoss(nn.Module):
    """Spectral convergence + log-magnitude L1, averaged over `stft_resolutions(length)`.

    Each resolution uses a Hann window of the FFT size and a hop of a quarter of it; frames are
    centred with zero padding, so any length works. Spectral convergence is
    ||S_real - S_fake||_F / ||S_real||_F over the whole batch (a batch-level norm stays finite
    when a single real segment is silent).
    """

    def __init__(self, length: int) -> None:
        super().__init__()
        self.ffts = stft_resolutions(length)
        for n_fft in self.ffts:
            self.register_buffer(f"window{n_fft}", torch.hann_window(n_fft), persistent=False)

    def magnitude(self, x: torch.Tensor, n_fft: int) -> torch.Tensor:
        """|STFT| of [B, T] audio at one resolution: [B, n_fft // 2 + 1, frames]."""
        spec = torch.stft(
            x.float(),
            n_fft,
            hop_length=n_fft // 4,
            window=getattr(self, f"window{n_fft}"),
            center=True,
            pad_mode="constant",
            return_complex=True,
        )
        return torch.view_as_real(spec).pow(2).sum(-1).clamp_min(_MAG_FLOOR).sqrt()

    def forward(self, fake: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
        total = fake.new_zeros((), dtype=torch.float32)
        for n_fft in self.ffts:
            mag_fake, mag_real = self.magnitude(fake, n_fft), self.magnitude(real, n_fft)
            convergence = torch.linalg.vector_norm(mag_real - mag_fake) / torch.linalg.vector_norm(
                mag_real
            )
            log_mag = F.l1_loss(mag_fake.log(), mag_real.log())
            total = total + convergence + log_mag
        return total / len(self.ffts)

"""The latent variable of the vseq2seq family: posterior head, z -> decoder state, KL terms.

Shapes: B = batch, D = latent size, L = LSTM layers, H = hidden size. The posterior is a diagonal
Gaussian q(z | prev) = N(mu, exp(logvar)); the prior is N(0, I). KL values are in nats.
"""

from __future__ import annotations

from typing import Protocol

import torch
from torch import nn

from lofibeats.models.networks import LSTMState


class LatentPath(Protocol):
    """A z trajectory consumed chunk by chunk (see `lofibeats.generation.style`): each call
    returns the z of the next `n` output samples, [B, n, D], and moves past them."""

    def take(self, n: int) -> torch.Tensor: ...


class PosteriorHead(nn.Module):
    """The encoder's final (h, c) of every layer -> (mu, logvar) of z, each [B, D]."""

    def __init__(self, hidden: int, layers: int, latent_dim: int) -> None:
        super().__init__()
        self.proj = nn.Linear(2 * layers * hidden, 2 * latent_dim)

    def forward(self, state: LSTMState) -> tuple[torch.Tensor, torch.Tensor]:
        h, c = state
        features = torch.cat([h, c], dim=0).transpose(0, 1).reshape(h.shape[1], -1)
        mu, logvar = self.proj(features).chunk(2, dim=-1)
        return mu, logvar


class LatentToState(nn.Module):
    """z [B, D] -> the decoder's initial (h, c), each [L, B, H]; h is tanh-bounded like an
    LSTM output, c is left free like a cell state."""

    def __init__(self, latent_dim: int, hidden: int, layers: int) -> None:
        super().__init__()
        self.layers, self.hidden = layers, hidden
        self.proj = nn.Linear(latent_dim, 2 * layers * hidden)

    def forward(self, z: torch.Tensor) -> LSTMState:
        h, c = self.proj(z).view(z.shape[0], 2, self.layers, self.hidden).permute(1, 2, 0, 3)
        return torch.tanh(h).contiguous(), c.contiguous()


def standard_normal(
    shape: torch.Size | tuple[int, ...],
    device: torch.device,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """N(0, 1) draws from `generator` (on its own device; the global RNG if None), on `device`."""
    gen_device = generator.device if generator is not None else device
    return torch.randn(shape, generator=generator, device=gen_device).to(device)


def reparameterize(
    mu: torch.Tensor,
    logvar: torch.Tensor,
    scale: float = 1.0,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """z = mu + scale * sigma * eps, eps ~ N(0, I): scale 0 is the posterior mean, 1 a posterior
    sample, > 1 wider than the posterior. Differentiable in mu and logvar."""
    if scale == 0:
        return mu
    eps = standard_normal(mu.shape, mu.device, generator)
    return mu + scale * torch.exp(0.5 * logvar) * eps


def kl_per_dim(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(mu, exp(logvar)) || N(0, 1)) per row and dimension, [B, D], in nats."""
    return 0.5 * (mu.pow(2) + logvar.exp() - 1.0 - logvar)


def free_bits_kl(kl_dims: torch.Tensor, free_bits: float) -> torch.Tensor:
    """The KL term to minimise with free bits (Kingma et al. 2016, per dimension): each
    dimension's batch-mean KL clamped below at `free_bits` nats, summed over dimensions.

    A dimension already under the floor gets no gradient from the KL, so the optimiser has no
    reason to push it all the way to the prior (posterior collapse). 0 is the plain KL.
    """
    per_dim = kl_dims.mean(dim=0)
    return per_dim.clamp_min(free_bits).sum() if free_bits > 0 else per_dim.sum()


class LatentStats:
    """Running per-dimension sums over a validation epoch, for the mean KL per dimension and the
    active units: the dimensions of z the posterior actually uses (Burda et al. 2016), those
    whose mean varies across inputs, Var_x[mu(x)] > threshold (over all windows of the epoch,
    not one batch)."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.count = 0
        self.mu_sum: torch.Tensor | None = None
        self.mu_sq_sum: torch.Tensor | None = None
        self.kl_sum: torch.Tensor | None = None

    def update(self, mu: torch.Tensor, kl_dims: torch.Tensor) -> None:
        mu, kl_dims = mu.detach().double(), kl_dims.detach().double()
        sums = (mu.sum(0), mu.pow(2).sum(0), kl_dims.sum(0))
        if self.mu_sum is None:
            self.mu_sum, self.mu_sq_sum, self.kl_sum = sums
        else:
            self.mu_sum += sums[0]
            self.mu_sq_sum += sums[1]
            self.kl_sum += sums[2]
        self.count += mu.shape[0]

    def packed(self) -> torch.Tensor:
        """[3, D] sums (mu, mu^2, KL) plus the count, as one tensor to all-reduce across ranks."""
        assert self.mu_sum is not None and self.mu_sq_sum is not None and self.kl_sum is not None
        count = torch.full_like(self.mu_sum, float(self.count))
        return torch.stack([self.mu_sum, self.mu_sq_sum, self.kl_sum, count])

    @staticmethod
    def summary(packed: torch.Tensor, threshold: float = 0.01) -> tuple[int, torch.Tensor]:
        """(active units, mean KL per dimension [D]) from (possibly all-reduced) `packed()` sums."""
        mu_sum, mu_sq_sum, kl_sum, count = packed
        mean = mu_sum / count
        variance = (mu_sq_sum / count - mean.pow(2)).clamp_min(0.0)
        return int((variance > threshold).sum()), (kl_sum / count).float()

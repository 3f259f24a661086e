"""Output heads: map decoder features to the next sample, score it, and draw it.

A head also fixes the model's *token* representation of audio: int64 mu-law classes for
:class:`MulawHead`, float samples for :class:`RegressionHead`. Models feed tokens back as inputs,
so `tokens()` / `audio()` convert between audio floats in [-1, 1] and tokens.

Why mu-law is the default: a sample-level regression head trained with MSE predicts the
conditional *mean* of the next sample. Audio is multi-modal sample to sample, and when decoding
feeds its own means back (greedy, as in the original design), the means shrink toward each other
and the output drifts to silence / DC. A 256-way softmax over mu-law classes keeps the whole
distribution, and sampling from it (with temperature) keeps the texture alive.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod

import torch
import torch.nn.functional as F
from torch import nn

from lofibeats.audio.mulaw import N_CLASSES, class_edges, dequantize, quantize
from lofibeats.errors import ConfigError
from lofibeats.models.sampling import Sampling

HEADS = ("mulaw", "regression")
_LN2 = math.log(2.0)


def _uniforms(shape: torch.Size, device: torch.device, generator: torch.Generator | None):
    """Uniform [0, 1) draws from `generator` (on its own device), moved to `device`."""
    gen_device = generator.device if generator is not None else device
    return torch.rand(shape, generator=generator, device=gen_device).to(device)


def sample_classes(
    logits: torch.Tensor, sampling: Sampling, generator: torch.Generator | None = None
) -> torch.Tensor:
    """One class per position of `logits` [..., C]: argmax (greedy), else inverse-CDF sampling
    of softmax(logits / T), optionally restricted to the smallest set of classes whose
    probability reaches `top_p`; deterministic given `generator`."""
    if sampling.is_greedy:
        return logits.argmax(-1)
    top_p = sampling.top_p
    probs = torch.softmax(logits.float() / sampling.temperature, dim=-1)
    order = None
    if top_p is not None and top_p < 1.0:
        probs, order = probs.sort(dim=-1, descending=True)
        keep = (probs.cumsum(-1) - probs) < top_p  # the most likely class is always kept
        probs = probs * keep
    cdf = probs.cumsum(-1)
    u = _uniforms(cdf.shape[:-1], cdf.device, generator) * cdf[..., -1]
    idx = torch.searchsorted(cdf, u.unsqueeze(-1), right=True).clamp_max(cdf.shape[-1] - 1)
    if order is not None:
        idx = order.gather(-1, idx)
    return idx.squeeze(-1)


class Head(nn.Module, ABC):
    """Common interface of the output heads."""

    #: number of input classes for `InputEmbedding` (None: inputs are float samples)
    n_classes: int | None = None

    @abstractmethod
    def tokens(self, audio: torch.Tensor) -> torch.Tensor:
        """Audio floats in [-1, 1] -> tokens (what the model reads and predicts)."""

    @abstractmethod
    def audio(self, tokens: torch.Tensor) -> torch.Tensor:
        """Tokens -> audio floats in [-1, 1]."""

    @abstractmethod
    def loss(self, out: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Mean training loss of head outputs `out` against target tokens."""

    @abstractmethod
    def nll_bits(self, out: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Mean negative log2-likelihood of the targets' mu-law classes, in bits/sample."""

    @abstractmethod
    def sample(
        self, out: torch.Tensor, sampling: Sampling, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """Draw one token per position; deterministic given `generator`."""


class MulawHead(Head):
    """A 256-way softmax over mu-law classes; loss = cross-entropy (nats)."""

    def __init__(self, hidden: int, n_classes: int = N_CLASSES) -> None:
        super().__init__()
        self.n_classes = n_classes
        self.proj = nn.Linear(hidden, n_classes)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        """[..., H] -> logits [..., n_classes]."""
        return self.proj(h)

    def tokens(self, audio: torch.Tensor) -> torch.Tensor:
        return quantize(audio, self.n_classes)

    def audio(self, tokens: torch.Tensor) -> torch.Tensor:
        return dequantize(tokens, self.n_classes)

    def loss(self, out: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(out.reshape(-1, out.shape[-1]), target.reshape(-1))

    def nll_bits(self, out: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return self.loss(out, target) / _LN2

    def sample(
        self, out: torch.Tensor, sampling: Sampling, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        return sample_classes(out, sampling, generator)


class RegressionHead(Head):
    """One float per sample, tanh-bounded to [-1, 1]; loss = MSE or L1.

    Its predictive distribution is Gaussian around the output with std `noise_std`, a buffer
    that tracks the training residual RMS (EMA, updated by `loss()` in training mode).
    `sample()` draws from it (greedy = the mean, which drifts to silence/DC when fed back:
    see the module docstring) and `nll_bits()` scores the target's mu-law class under it,
    so its bits/sample compare directly with the mu-law head's.
    """

    def __init__(self, hidden: int, loss: str = "mse", momentum: float = 0.01) -> None:
        super().__init__()
        if loss not in ("mse", "l1"):
            raise ConfigError(f"model.regression_loss={loss!r}: choose mse or l1")
        self.loss_kind = loss
        self.momentum = momentum
        self.proj = nn.Linear(hidden, 1)
        self.register_buffer("noise_std", torch.tensor(0.1))
        self.register_buffer("edges", class_edges(), persistent=False)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        """[..., H] -> values [...] in [-1, 1]."""
        return torch.tanh(self.proj(h)).squeeze(-1)

    def tokens(self, audio: torch.Tensor) -> torch.Tensor:
        return audio.float().clamp(-1.0, 1.0)

    def audio(self, tokens: torch.Tensor) -> torch.Tensor:
        return tokens.clamp(-1.0, 1.0)

    def loss(self, out: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if self.training:
            with torch.no_grad():
                rms = (out - target).pow(2).mean().sqrt()
                if torch.isfinite(rms):
                    self.noise_std.lerp_(rms.clamp_min(1e-4), self.momentum)
        if self.loss_kind == "l1":
            return F.l1_loss(out, target)
        return F.mse_loss(out, target)

    def nll_bits(self, out: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        q = quantize(target, N_CLASSES)
        std = self.noise_std.clamp_min(1e-4)
        hi = torch.special.ndtr((self.edges[q + 1] - out) / std)
        lo = torch.special.ndtr((self.edges[q] - out) / std)
        return -torch.log2((hi - lo).clamp_min(1e-12)).mean()

    def sample(
        self, out: torch.Tensor, sampling: Sampling, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """The mean (greedy), else mean + temperature * noise_std * N(0, 1), clamped to
        [-1, 1]. `top_p` does not apply to a Gaussian and is ignored."""
        if sampling.is_greedy:
            return out
        u = _uniforms(out.shape, out.device, generator).clamp(1e-7, 1.0 - 1e-7)
        noise = torch.special.ndtri(u)  # inverse-CDF of the standard normal
        return (out + sampling.temperature * self.noise_std * noise).clamp(-1.0, 1.0)


def build_head(kind: str, hidden: int, regression_loss: str = "mse") -> Head:
    if kind == "mulaw":
        return MulawHead(hidden)
    if kind == "regression":
        return RegressionHead(hidden, regression_loss)
    raise ConfigError(f"model.head={kind!r}: choose one of {', '.join(HEADS)}")

"""Mu-law companding and 8-bit quantisation (ITU-T G.711 style, as in WaveNet).

`quantize` maps floats in [-1, 1] to integer classes 0..n_classes-1 and `dequantize` maps them
back to the class centres; `quantize(dequantize(q)) == q` for every class, so a model can feed its
own predicted classes back as inputs without drift.
"""

from __future__ import annotations

import math

import torch

MU = 255
N_CLASSES = MU + 1


def mulaw_encode(x: torch.Tensor, mu: int = MU) -> torch.Tensor:
    """Compand linear samples in [-1, 1] (clamped) to mu-law values in [-1, 1]."""
    x = x.clamp(-1.0, 1.0)
    return torch.sign(x) * torch.log1p(mu * x.abs()) / math.log1p(mu)


def mulaw_decode(y: torch.Tensor, mu: int = MU) -> torch.Tensor:
    """Inverse of :func:`mulaw_encode`: mu-law values in [-1, 1] to linear samples in [-1, 1]."""
    y = y.clamp(-1.0, 1.0)
    return torch.sign(y) * torch.expm1(y.abs() * math.log1p(mu)) / mu


def quantize(x: torch.Tensor, n_classes: int = N_CLASSES) -> torch.Tensor:
    """Linear samples in [-1, 1] to int64 mu-law classes in [0, n_classes)."""
    y = mulaw_encode(x, n_classes - 1)
    return torch.round((y + 1.0) * 0.5 * (n_classes - 1)).long()


def dequantize(q: torch.Tensor, n_classes: int = N_CLASSES) -> torch.Tensor:
    """Mu-law classes to float32 linear samples in [-1, 1] (the centre of each class)."""
    y = q.float() * (2.0 / (n_classes - 1)) - 1.0
    return mulaw_decode(y, n_classes - 1)


def class_edges(n_classes: int = N_CLASSES) -> torch.Tensor:
    """The n_classes + 1 linear-domain boundaries of the classes; the outer two are -inf and +inf.

    Class q holds the samples in [edges[q], edges[q + 1]); used to turn a continuous density
    into a probability per class (see the regression head's `nll_bits`).
    """
    mid = (torch.arange(1, n_classes, dtype=torch.float64) - 0.5) * (2.0 / (n_classes - 1)) - 1.0
    inner = mulaw_decode(mid, n_classes - 1).float()
    inf = torch.tensor([math.inf])
    return torch.cat([-inf, inner, inf])

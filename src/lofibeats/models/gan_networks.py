"""The GAN's networks: a conditional generator and multi-scale / multi-period discriminators.

Shapes: B = batch, T = time, C = channels. A "frame" is `prod(ratios)` samples (the generator's
lowest time resolution).

Audio enters and leaves the networks *folded* (space-to-depth): [B, T] -> [B, r, T / r], the r
phases of each group of r samples as channels (`fold` / `unfold`). A convolution with one input
channel over every sample is the slowest case on CPU (tens of times slower per MAC than the
same work on r channels at rate 1/r), and the first/last layers are where the time goes.

Generator (a U-Net over time, non-autoregressive): the folded context (`prev`, cropped /
left-padded to a whole number of frames) is encoded by strided convs down to frames;
`frames_out` future frames made from noise, a learned position embedding and the pooled context
are appended; residual dilated convs at frame rate mix past and future; transposed convs
upsample the last `past_frames` + the future frames, the past part receiving the encoder's
activations at each resolution (skip connections), so the output layer sees the real audio
right before the boundary and can continue it without a seam. A conv to r channels, tanh and
`unfold` (a sub-pixel upsampling) give the samples; the future part is `next`.

Discriminators (MelGAN / HiFi-GAN): each sub-discriminator returns its patch logits and its
hidden activations (for feature matching).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from itertools import pairwise
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm, weight_norm

from lofibeats.models.sampling import Sampling

SLOPE = 0.2  # LeakyReLU negative slope everywhere
MIN_CHANNELS = 8
PAST_FRAMES = 2  # context frames the generator's decoder continues from
FOLD = 4  # the scale discriminators' fold factor


def fit_left(x: torch.Tensor, length: int) -> torch.Tensor:
    """The last `length` samples of [B, T] `x`, left-padded with zeros when T < length."""
    x = x[:, -length:]
    return F.pad(x, (length - x.shape[1], 0))


def fold(x: torch.Tensor, r: int) -> torch.Tensor:
    """[B, T] -> [B, r, ceil(T / r)]: channel j holds samples j, j + r, ... (zero-padded right)."""
    x = F.pad(x, (0, -x.shape[-1] % r))
    return x.view(x.shape[0], -1, r).transpose(1, 2)


def unfold(x: torch.Tensor) -> torch.Tensor:
    """The inverse of `fold`: [B, r, L] -> [B, r * L]."""
    return x.transpose(1, 2).reshape(x.shape[0], -1)


def _act(x: torch.Tensor) -> torch.Tensor:
    return F.leaky_relu(x, SLOPE)


class ResidualStack(nn.Module):
    """x + conv1x1(act(conv_k3_dilated(act(x)))) for each dilation (MelGAN's residual stack)."""

    def __init__(self, channels: int, dilations: Sequence[int]) -> None:
        super().__init__()
        self.dilated = nn.ModuleList(
            nn.Conv1d(channels, channels, 3, dilation=d, padding=d) for d in dilations
        )
        self.mix = nn.ModuleList(nn.Conv1d(channels, channels, 1) for _ in dilations)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for dilated, mix in zip(self.dilated, self.mix, strict=True):
            x = x + mix(_act(dilated(_act(x))))
        return x


class Downsample(nn.Module):
    """Conv with kernel 2r and stride r: T -> T / r (T a multiple of r)."""

    def __init__(self, c_in: int, c_out: int, ratio: int) -> None:
        super().__init__()
        self.pad = (ratio // 2, ratio - ratio // 2)
        self.conv = nn.Conv1d(c_in, c_out, 2 * ratio, stride=ratio)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.pad(_act(x), self.pad))


class Upsample(nn.Module):
    """Transposed conv with kernel 2r and stride r: T -> T * r."""

    def __init__(self, c_in: int, c_out: int, ratio: int) -> None:
        super().__init__()
        self.ratio = ratio
        self.conv = nn.ConvTranspose1d(c_in, c_out, 2 * ratio, stride=ratio, padding=ratio // 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(_act(x))[..., : x.shape[-1] * self.ratio]


class Generator(nn.Module):
    """G(prev, z) -> next: [B, T] context + [B, noise_dim, frames_out] noise -> [B, next_len].

    `ratios[0]` is the fold factor, the other ratios strided convs. `hidden` channels at frame
    rate (halved at each finer resolution, at least MIN_CHANNELS), `layers` residual dilated
    blocks (dilations 1, 2, 4, ...) at frame rate.
    """

    def __init__(
        self,
        context_len: int,
        next_len: int,
        hidden: int,
        layers: int,
        ratios: Sequence[int],
        noise_dim: int,
    ) -> None:
        super().__init__()
        self.fold, *strides = ratios
        self.hop = math.prod(ratios)
        self.context_len, self.next_len, self.noise_dim = context_len, next_len, noise_dim
        self.frames_in = math.ceil(context_len / self.hop)
        self.frames_out = math.ceil(next_len / self.hop)
        self.past_frames = min(PAST_FRAMES, self.frames_in)
        n = len(strides)
        # chans[i]: channels at resolution i (0 = folded samples, n = frames)
        chans = [max(hidden >> (n - i), MIN_CHANNELS) for i in range(n)] + [hidden]

        self.inp = nn.Conv1d(self.fold, chans[0], 7, padding=3)
        self.down = nn.ModuleList(
            Downsample(chans[i], chans[i + 1], r) for i, r in enumerate(strides)
        )
        self.noise_proj = nn.Conv1d(noise_dim, hidden, 1)
        self.context_proj = nn.Linear(hidden, hidden)
        self.position = nn.Parameter(torch.randn(hidden, self.frames_out) * 0.02)
        self.body = ResidualStack(hidden, [2**i for i in range(layers)])
        self.up = nn.ModuleList(
            Upsample(chans[i + 1], chans[i], r) for i, r in reversed(list(enumerate(strides)))
        )
        self.refine = nn.ModuleList(ResidualStack(chans[i], (1, 3)) for i in reversed(range(n)))
        self.out = nn.Conv1d(chans[0], self.fold, 7, padding=3)

    def forward(self, prev: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """`prev` [B, T] (cropped to context_len, left-padded), `z` [B, noise_dim, frames_out]."""
        x = fit_left(fit_left(prev, self.context_len), self.frames_in * self.hop)
        h = self.inp(fold(x, self.fold))
        skips = [h]
        for down in self.down:
            h = down(h)
            skips.append(h)
        summary = self.context_proj(h.mean(dim=2))[:, :, None]
        future = self.noise_proj(z) + self.position + summary
        h = self.body(torch.cat([h, future], dim=2))[:, :, -(self.past_frames + self.frames_out) :]
        # decode past tail + future; the past part gets the encoder's activations (skips)
        past_share = self.past_frames / (self.past_frames + self.frames_out)
        for level, (up, refine) in enumerate(zip(self.up, self.refine, strict=True)):
            h = up(h)
            skip = skips[len(self.down) - 1 - level]
            past = round(h.shape[2] * past_share)
            h = refine(h + F.pad(skip[:, :, skip.shape[2] - past :], (0, h.shape[2] - past)))
        y = unfold(torch.tanh(self.out(_act(h))))
        start = self.past_frames * self.hop
        return y[:, start : start + self.next_len]

    def noise(
        self, batch: int, temperature: float = 1.0, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """z [B, noise_dim, frames_out] ~ N(0, temperature^2), drawn on `generator`'s device."""
        device = self.position.device
        shape = (batch, self.noise_dim, self.frames_out)
        gen_device = generator.device if generator is not None else device
        z = torch.randn(shape, generator=generator, device=gen_device).to(device)
        return z * temperature

    @torch.no_grad()
    def continue_audio(
        self,
        prev: torch.Tensor,
        n_samples: int,
        sampling: Sampling,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """Continue each row of `prev` ([B, T] in [-1, 1]; the last `context_len` samples are
        used, shorter is left-padded with silence) by `n_samples`, in ceil(n / next_len) passes,
        each conditioned on the last context of prev + what was generated so far. The noise is
        scaled by the temperature (greedy: zero noise, the same continuation for every draw).
        Deterministic given `generator`."""
        temperature = 0.0 if sampling.is_greedy else sampling.temperature
        history = fit_left(prev.to(self.position.device, torch.float32), self.context_len)
        pieces = []
        for _ in range(math.ceil(n_samples / self.next_len)):
            piece = self(history, self.noise(history.shape[0], temperature, generator))
            pieces.append(piece)
            history = torch.cat([history, piece], dim=1)[:, -self.context_len :]
        if not pieces:
            return history.new_zeros(history.shape[0], 0)
        return torch.cat(pieces, dim=1)[:, :n_samples]


def _normed(module: nn.Module, spectral: bool) -> nn.Module:
    return spectral_norm(module) if spectral else weight_norm(module)


def _widths(first: int, most: int, n: int) -> list[int]:
    """first, 2 * first, 4 * first, ... (n + 1 widths), capped at `most`."""
    return [min(first * 2**i, most) for i in range(n + 1)]


class PhaseShuffle(nn.Module):
    """WaveGAN's phase shuffle: in training, shift each example's activations by a random
    whole number of steps in [-shift, shift] (reflect-padded), so D cannot key on the exact phase
    of upsampling artefacts. Identity in eval mode or with shift 0. Uses the global RNG."""

    def __init__(self, shift: int) -> None:
        super().__init__()
        self.shift = shift

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.shift == 0:
            return x
        b, c, t = x.shape
        s = self.shift
        k = torch.randint(-s, s + 1, (b, 1), device=x.device)
        padded = F.pad(x, (s, s), mode="reflect" if t > s else "replicate")
        index = torch.arange(t, device=x.device)[None] + s - k  # out[t] = x[t - k]
        return padded.gather(2, index[:, None, :].expand(b, c, t))


class DiscriminatorOutput(NamedTuple):
    logits: torch.Tensor  # [B, N] patch logits
    features: list[torch.Tensor]  # hidden activations, for feature matching


class ScaleDiscriminator(nn.Module):
    """A MelGAN-style discriminator over [B, T], folded by FOLD: a k=7 conv, `layers` convs with
    stride 4, a k=3 conv (all with LeakyReLU, phase shuffle between them), a k=3 conv to
    logits. Widths double per strided layer from `channels` up to `max_channels`."""

    def __init__(
        self, channels: int, max_channels: int, layers: int, phase_shuffle: int, spectral: bool
    ) -> None:
        super().__init__()
        widths = _widths(channels, max_channels, layers)
        convs = [nn.Conv1d(FOLD, widths[0], 7, padding=3)]
        convs += [nn.Conv1d(a, b, 9, stride=4, padding=4) for a, b in pairwise(widths)]
        convs.append(nn.Conv1d(widths[-1], widths[-1], 3, padding=1))
        self.convs = nn.ModuleList(_normed(conv, spectral) for conv in convs)
        self.post = _normed(nn.Conv1d(widths[-1], 1, 3, padding=1), spectral)
        self.shuffle = PhaseShuffle(phase_shuffle)

    def forward(self, x: torch.Tensor) -> DiscriminatorOutput:
        x = fold(x, FOLD)
        features = []
        for i, conv in enumerate(self.convs):
            x = _act(conv(x))
            features.append(x)
            if i < len(self.convs) - 1:
                x = self.shuffle(x)
        return DiscriminatorOutput(self.post(x).flatten(1), features)


class PeriodDiscriminator(nn.Module):
    """HiFi-GAN's period discriminator: [B, T] folded to [B, 1, T / p, p] (zero-padded to a
    multiple of p), `layers` (5, 1) convs with stride (3, 1), a stride-1 one, then logits."""

    def __init__(
        self, period: int, channels: int, max_channels: int, layers: int, spectral: bool
    ) -> None:
        super().__init__()
        self.period = period
        widths = [1, *_widths(channels, max_channels, layers - 1)]
        convs = [
            nn.Conv2d(c_in, c_out, (5, 1), stride=(3, 1), padding=(2, 0))
            for c_in, c_out in pairwise(widths)
        ]
        convs.append(nn.Conv2d(widths[-1], widths[-1], (5, 1), padding=(2, 0)))
        self.convs = nn.ModuleList(_normed(conv, spectral) for conv in convs)
        self.post = _normed(nn.Conv2d(widths[-1], 1, (3, 1), padding=(1, 0)), spectral)

    def forward(self, x: torch.Tensor) -> DiscriminatorOutput:
        x = F.pad(x, (0, -x.shape[1] % self.period))
        x = x.view(x.shape[0], 1, -1, self.period)
        features = []
        for conv in self.convs:
            x = _act(conv(x))
            features.append(x)
        return DiscriminatorOutput(self.post(x).flatten(1), features)


class Discriminators(nn.Module):
    """`scales` ScaleDiscriminators on the raw, 2x, 4x, ... average-pooled input (MelGAN) and
    one PeriodDiscriminator per entry of `periods` (HiFi-GAN). Input [B, T] -> one
    DiscriminatorOutput per sub-discriminator (scales first, then periods)."""

    def __init__(
        self,
        scales: int,
        periods: Sequence[int],
        channels: int,
        max_channels: int,
        layers: int,
        phase_shuffle: int,
        spectral: bool,
    ) -> None:
        super().__init__()
        self.scales = nn.ModuleList(
            ScaleDiscriminator(channels, max_channels, layers, phase_shuffle, spectral)
            for _ in range(scales)
        )
        self.pool = nn.AvgPool1d(4, stride=2, padding=1, count_include_pad=False)
        self.periods = nn.ModuleList(
            PeriodDiscriminator(p, channels, max_channels, layers, spectral) for p in periods
        )

    def forward(self, x: torch.Tensor) -> list[DiscriminatorOutput]:
        outputs, pooled = [], x
        for i, disc in enumerate(self.scales):
            if i:
                pooled = self.pool(pooled[:, None])[:, 0]
            outputs.append(disc(pooled))
        outputs.extend(disc(x) for disc in self.periods)
        return outputs

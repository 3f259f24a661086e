"""SampleRNN's two-tier design for the seq2seq families: `model.frame_size` = k > 1.

The encoder and decoder LSTMs step once per *frame* of k samples; their input at frame j is the
previous frame's k samples as values in [-1, 1] (`frame_values`: the mu-law-domain value of a
class, or the regression float), one linear input per sample. A small sample-level tier then
predicts the k samples of a frame autoregressively:

    p(x_t | frame context, x_{t-k}, ..., x_{t-1})
    features_t = relu(U_p h_j + sum_i W_i e(x_{t-k+i}) + b),   p = t - j k

with h_j the frame's decoder output, U_p its projection for position p (`SampleTier.upsample`)
and e the model's per-sample input embedding; W is a width-k causal convolution
(`SampleTier.window`). The model's head reads `features_t` (width `sample_hidden`).

Training is fully parallel: one LSTM pass over the frames, one convolution over the
ground-truth samples (teacher forcing inside the frame). Generation (`FrameSampler`) runs one
LSTM step per frame, then k cheap sample steps in NumPy: the frame projection is computed once
per frame, and since the window is a sum over lags, each drawn sample adds its own precomputed
contribution (a table row per mu-law class) to the next k positions' pre-activations. This
NumPy loop is the reference (and the fallback without a C compiler) of
`lofibeats.generation.engine.FrameEngine`, which runs it in the C kernel from the same folds
and the same draws (`FrameSampler.noise`).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import torch
from torch import nn

from lofibeats.errors import ConfigError
from lofibeats.models.heads import Head, MulawHead
from lofibeats.models.lookback import CopyHead
from lofibeats.models.networks import InputEmbedding
from lofibeats.models.sampling import Sampling


def check_frame_size(frame_size: int, next_len: int) -> None:
    """A frame model decodes whole frames: `next_len` must be a multiple of `frame_size`."""
    if next_len % frame_size:
        raise ConfigError(
            f"model.frame_size={frame_size} does not divide data.next_len={next_len}: "
            "make data.next_len a multiple of model.frame_size"
        )


def frame_values(tokens: torch.Tensor, n_classes: int | None) -> torch.Tensor:
    """Tokens -> float inputs of the frame LSTM in [-1, 1]: mu-law classes map linearly onto
    [-1, 1] (the companded value, evenly spread unlike raw audio); floats pass through."""
    if n_classes:
        return tokens.to(torch.float32) * (2.0 / (n_classes - 1)) - 1.0
    return tokens.to(torch.float32)


def left_pad(tokens: torch.Tensor, multiple: int, silence: torch.Tensor) -> torch.Tensor:
    """`tokens` [B, T] left-padded with the `silence` token to a multiple of `multiple` (at least
    one multiple, so an empty `prev` gives one silent frame)."""
    length = max(multiple, -(-tokens.shape[1] // multiple) * multiple)
    pad = length - tokens.shape[1]
    if pad == 0:
        return tokens
    fill = silence.to(tokens.dtype).expand(tokens.shape[0], pad)
    return torch.cat([fill, tokens], dim=1)


class SampleTier(nn.Module):
    """The sample-level tier: frame outputs [B, F, H] and the embedded sample stream -> the
    head's input features [B, F k, M] (see the module docstring)."""

    def __init__(self, frame_size: int, hidden: int, embed_dim: int, sample_hidden: int) -> None:
        super().__init__()
        self.frame_size, self.sample_hidden = frame_size, sample_hidden
        self.upsample = nn.Linear(hidden, frame_size * sample_hidden, bias=False)
        self.window = nn.Conv1d(embed_dim, sample_hidden, frame_size)

    def frame_bias(self, h: torch.Tensor) -> torch.Tensor:
        """Frame outputs [B, F, H] -> per-position pre-activations [B, F k, M] (window bias in)."""
        batch, frames, _ = h.shape
        out = self.upsample(h).view(batch, frames * self.frame_size, self.sample_hidden)
        return out + self.window.bias

    def forward(self, h: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        """`emb` [B, F k + k - 1, E] embeds the sample stream whose k-windows precede each
        target (the decoder inputs); returns relu features [B, F k, M]."""
        window = nn.functional.conv1d(emb.transpose(1, 2), self.window.weight)
        return torch.relu(self.frame_bias(h) + window.transpose(1, 2))


def _np(x: torch.Tensor) -> np.ndarray:
    return np.ascontiguousarray(x.detach().to("cpu", torch.float32).numpy())


def _logsumexp(x: np.ndarray) -> np.ndarray:
    top = x.max(-1, keepdims=True)
    return top + np.log(np.exp(x - top).sum(-1, keepdims=True))


class FoldedCopy:
    """A lookback model's `CopyHead` in NumPy for `FrameSampler`: per sample, the head's logits
    (without their bias) -> log p of the mixture with the recalled sample. The recalled values
    of a frame are `offset`..`offset + k` of what the frame step returns."""

    def __init__(self, copy: CopyHead, out_bias: np.ndarray, offset: int, k: int) -> None:
        self.gate_weight = _np(copy.gate.weight[0])
        self.gate_bias = float(copy.gate.bias.detach())
        self.width = float(copy.log_width.detach().exp())
        self.levels = _np(copy.levels)
        self.bias, self.offset, self.k = out_bias, offset, k

    def copies(self, frame_output: torch.Tensor) -> np.ndarray:
        """The frame step's output [B, H + R] -> the copy log-probabilities of each of its
        positions [B, k, V] (once per frame: they depend on the recall only)."""
        centres = _np(frame_output[:, self.offset : self.offset + self.k])
        bump = -np.abs(self.levels - centres[..., None]) / self.width
        return bump - _logsumexp(bump)

    def mix(
        self, out: np.ndarray, act: np.ndarray, copy: np.ndarray, loop: float = 0.0
    ) -> np.ndarray:
        """Head logits without bias, sample-tier features, copy log-probs -> log p. `loop`
        (`Sampling.loop`) raises the copy's share g to loop + (1 - loop) g."""
        logits = out + self.bias
        own = logits - _logsumexp(logits)
        gate = act @ self.gate_weight + self.gate_bias
        keep, take = -np.logaddexp(0.0, gate), -np.logaddexp(0.0, -gate)  # log(1-g), log g
        if loop > 0:
            stay = math.log1p(-loop) if loop < 1 else -math.inf
            keep, take = keep + stay, np.logaddexp(math.log(loop), take + stay)
        return np.logaddexp(keep[..., None] + own, take[..., None] + copy)


class FrameSampler:
    """Frame-by-frame generation with the sample tier folded into NumPy arrays (built per call
    from the current weights: about a millisecond).

    Per sample: relu, one [M] x [M, V] product, the draw, and one [k, M] add of the drawn
    sample's window contribution. Draws: greedy = argmax (or the regression mean); sampling =
    Gumbel-max on the logits (exactly softmax(logits / T)) or the regression mean plus Gaussian
    noise, all drawn up front from `generator`; with `top_p` each step calls `head.sample`.
    """

    def __init__(
        self,
        tier: SampleTier,
        embed: InputEmbedding,
        head: Head,
        copy: CopyHead | None = None,
        recall_offset: int = 0,
    ) -> None:
        self.tier, self.head, self.k = tier, head, tier.frame_size
        weight = tier.window.weight.detach().double()  # [M, E, k]
        self.mulaw = isinstance(head, MulawHead)
        proj = embed.proj
        if self.mulaw:  # the contribution of class c at lag d = W[:, :, k - d] e(c)
            per_lag = torch.einsum("mei,ce->cim", weight, proj.weight.detach().double())
            self.table = _np(per_lag.flip(1))  # [V, k, M], row d - 1 for lag d
        else:  # e(x) = a x + b: contribution = x * slope + const
            a, b = proj.weight.detach().double()[:, 0], proj.bias.detach().double()
            self.slope = _np(torch.einsum("mei,e->im", weight, a).flip(0))  # [k, M]
            self.const = _np(torch.einsum("mei,e->im", weight, b).flip(0))
        self.out_weight = _np(head.proj.weight.T)  # [M, V] (regression: [M, 1])
        self.out_bias = _np(head.proj.bias)
        # a copy model adds the bias inside the mixture, so its draws' offsets leave it out
        self.copy = None if copy is None else FoldedCopy(copy, self.out_bias, recall_offset, self.k)
        self.offset_bias = self.out_bias if copy is None else np.zeros_like(self.out_bias)

    def noise(
        self, n: int, batch: int, sampling: Sampling, generator: torch.Generator | None
    ) -> np.ndarray | None:
        """Everything random, drawn up front: the logit offsets for mu-law (the output bias,
        plus T * Gumbel noise when sampling without top_p), the additive Gaussian noise for
        regression (None when greedy)."""
        greedy = sampling.is_greedy
        if self.mulaw:
            if greedy or sampling.top_p is not None:
                return np.broadcast_to(self.offset_bias, (n, batch, self.out_bias.shape[0]))
            shape = (n, batch, self.out_bias.shape[0])
            u = torch.rand(shape, generator=generator).clamp_(min=1e-30)
            gumbel_t = u.log_().neg_().log_().mul_(-sampling.temperature)  # T * -log(-log u)
            return _np(gumbel_t) + self.offset_bias
        if greedy:
            return None
        u = torch.rand((n, batch), generator=generator).clamp_(1e-7, 1.0 - 1e-7)
        std = float(self.head.noise_std)
        return _np(sampling.temperature * std * torch.special.ndtri(u))

    def _drawer(
        self, n: int, batch: int, sampling: Sampling, generator: torch.Generator | None
    ) -> Callable[[np.ndarray, int], np.ndarray]:
        """draw(out [B, V] head pre-activations without bias, t) -> tokens [B], chosen once per
        call so the per-sample loop does no dispatch. One stream drops the batch axis."""
        noise = self.noise(n, batch, sampling, generator)
        if noise is not None and batch == 1:
            noise = noise[:, 0]
        if not self.mulaw:
            bias = self.out_bias[0]

            def regression(out: np.ndarray, t: int) -> np.ndarray:
                value = np.tanh(out[..., 0] + bias)
                return value if noise is None else np.clip(value + noise[t], -1.0, 1.0)

            return regression
        if sampling.top_p is None or sampling.is_greedy:
            return lambda out, t: np.add(out, noise[t], out=out).argmax(-1)

        def nucleus(out: np.ndarray, t: int) -> np.ndarray:
            logits = torch.from_numpy(out + noise[t])
            drawn = self.head.sample(logits, sampling, generator)
            return drawn.numpy()

        return nucleus

    @torch.no_grad()
    def generate(
        self,
        context: torch.Tensor,
        step: Callable[[torch.Tensor, int], torch.Tensor],
        n_samples: int,
        sampling: Sampling,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """Tokens [B, n_samples] after `context` (the last k tokens before them, [B, k]).

        `step(frame_tokens [B, k], j)` runs the frame LSTM one step on frame j's input (the
        previous frame) and returns its output [B, H]."""
        k, batch = self.k, context.shape[0]
        frames = -(-n_samples // k)
        draw = self._drawer(frames * k, batch, sampling, generator)
        if self.mulaw:
            table = self.table

            def contribution(x: np.ndarray) -> np.ndarray:
                return table[x]  # one stream: a view of one row, no copy
        else:
            slope, const = self.slope, self.const

            def contribution(x: np.ndarray) -> np.ndarray:
                return x[..., None, None] * slope + const

        tokens = np.empty((batch, frames * k), dtype=np.int64 if self.mulaw else np.float32)
        buf = np.zeros((batch, 3 * k, self.tier.sample_hidden), dtype=np.float32)
        ctx = context.cpu().numpy()
        for s in range(k):  # the context's window contributions to the first frame
            buf[:, s + 1 : s + k + 1] += contribution(ctx[:, s])
        rows = 0 if batch == 1 else slice(None)  # one stream: rank-1 arrays, cheaper per call
        act = np.empty((batch, self.tier.sample_hidden), dtype=np.float32)[rows]
        out = np.empty((batch, self.out_weight.shape[1]), dtype=np.float32)[rows]
        weight = self.out_weight
        # views of buf for each position of a frame (buf is shifted in place, so they stay valid)
        pre = [buf[rows, k + p] for p in range(k)]
        ahead = [buf[rows, k + p + 1 : 2 * k + p + 1] for p in range(k)]
        frame_tokens, copy, loop = context, self.copy, sampling.loop
        for j in range(frames):
            h = step(frame_tokens, j)
            buf[:, k : 2 * k] += _np(self.tier.frame_bias(h[:, None]))
            copies = None if copy is None else copy.copies(h)[rows]
            for p in range(k):
                np.maximum(pre[p], 0.0, out=act)
                np.matmul(act, weight, out=out)
                logits = out if copy is None else copy.mix(out, act, copies[..., p, :], loop)
                x = draw(logits, j * k + p)
                tokens[rows, j * k + p] = x
                ahead[p] += contribution(x)
            buf[:, : 2 * k] = buf[:, k:]
            buf[:, 2 * k :] = 0.0
            frame_tokens = torch.from_numpy(tokens[:, j * k : (j + 1) * k]).to(context.device)
        return torch.from_numpy(tokens[:, :n_samples]).to(context.device)

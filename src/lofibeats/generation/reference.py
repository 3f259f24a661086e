"""The reference decoding backend: the model's own modules, one step at a time.

It is the oracle the fused backends are tested against: per sample it runs the embedding, the
decoder's `step` (torch's LSTM cell per layer), the head and `Head.sample` as separate PyTorch
calls; frame models run one decoder step per frame and `FrameSampler`'s per-sample loop (with a
lookback, each frame step first recalls from the frames before it: `LookbackReader`).
Random draws come from `generator` in a fixed order (one [B] uniform vector per sample for the
sample-level head; `FrameSampler`'s up-front draws for frame models), which the fused backends
reproduce. A fused decode with float16 weights (`fused.PRECISIONS`) has as its oracle this
backend on the weights of `fused.round_net(net, "float16")` (tests/test_fused_speedpath.py).
"""

from __future__ import annotations

import torch

from lofibeats.models.decoding import DecoderWeights, DecodeStart
from lofibeats.models.frame_tier import FrameSampler, frame_values
from lofibeats.models.networks import LSTMState
from lofibeats.models.sampling import Sampling


def step_cond(cond: torch.Tensor | None, t: int) -> torch.Tensor | None:
    """The conditioning of output sample `t`: a constant [B, C] or row t of [B, n, C]."""
    return cond if cond is None or cond.dim() == 2 else cond[:, t]


class ReferenceBackend:
    """Decodes with the networks of `weights` themselves (no folding, no copies)."""

    name = "reference"

    def __init__(self, weights: DecoderWeights) -> None:
        self.weights = weights

    @torch.no_grad()
    def decode(
        self,
        start: DecodeStart,
        n_samples: int,
        sampling: Sampling,
        generator: torch.Generator | None = None,
    ) -> tuple[torch.Tensor, LSTMState]:
        """(tokens [B, n_samples], the decoder state after them)."""
        if self.weights.sample_tier is not None:
            return self._frames(start, n_samples, sampling, generator)
        embed, decoder, head = self.weights.embed, self.weights.decoder, self.weights.head
        x_t, state = start.context[:, -1], start.state
        tokens = []
        for t in range(n_samples):
            h, state = decoder.step(embed(x_t), state, step_cond(start.cond, t))
            x_t = head.sample(head(h), sampling, generator)
            tokens.append(x_t)
        return torch.stack(tokens, dim=1), state

    def _frames(
        self,
        start: DecodeStart,
        n_samples: int,
        sampling: Sampling,
        generator: torch.Generator | None,
    ) -> tuple[torch.Tensor, LSTMState]:
        weights = self.weights
        tier, k = weights.sample_tier, weights.frame_size
        assert tier is not None
        state = start.state
        frames = -(-n_samples // k)
        reader = None
        if weights.lookback is not None:
            reader = weights.lookback.reader(start.past, frames)

        def frame_step(frame_tokens: torch.Tensor, j: int) -> torch.Tensor:
            nonlocal state
            frame = frame_values(frame_tokens, weights.head.n_classes)
            if reader is None:
                h, state = weights.decoder.step(frame, state, step_cond(start.cond, j * k))
                return h
            if j > 0:  # frame 0 reads the context frame, which ends `start.past`
                reader.push(frame)
            recall = reader.read()
            x = torch.cat([frame, recall], dim=-1)
            h, state = weights.decoder.step(x, state, step_cond(start.cond, j * k))
            return torch.cat([h, recall], dim=-1)

        offset = weights.decoder.lstm.hidden_size  # a lookback frame step returns (h, recall)
        sampler = FrameSampler(tier, weights.embed, weights.head, weights.copy, offset)
        tokens = sampler.generate(start.context, frame_step, n_samples, sampling, generator)
        return tokens, state

"""The vseq2seq network: the seq2seq network with a Gaussian latent z between encoder and decoder.

The encoder's final (h, c) give the posterior q(z | prev) = N(mu, sigma^2) (`PosteriorHead`); z
sets the decoder's initial state through a learned projection and, with `z_every_step`, is an
input at every decoder step, so that changing z in the middle of generation changes what follows
("style change"). With `frame_size` > 1 z conditions the frame-level LSTM, each frame step
reading the z of its first sample.
"""

from __future__ import annotations

import torch

from lofibeats.models.configs import VSeq2SeqConfig
from lofibeats.models.decoding import DecodeStart
from lofibeats.models.latent import (
    LatentPath,
    LatentToState,
    PosteriorHead,
    reparameterize,
    standard_normal,
)
from lofibeats.models.networks import LSTMState
from lofibeats.models.seq2seq_net import Seq2SeqNet
from lofibeats.validate import number

DEFAULT_CREATIVITY = 1.0  # z = mu + creativity * sigma * eps: a posterior sample


class VSeq2SeqNet(Seq2SeqNet):
    """`Seq2SeqNet` plus the posterior head and the z -> decoder-state projection."""

    config: VSeq2SeqConfig

    def __init__(self, config: VSeq2SeqConfig) -> None:
        super().__init__(config, cond_dim=config.latent_dim if config.z_every_step else 0)
        self.posterior_head = PosteriorHead(config.hidden, config.layers, config.latent_dim)
        self.latent_to_state = LatentToState(config.latent_dim, config.hidden, config.layers)

    def posterior(self, prev_tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """prev tokens [B, Tp] -> (mu, logvar) of q(z | prev), each [B, latent_dim]."""
        return self.posterior_head(self.encoder_state(prev_tokens))

    def latent_state(self, z: torch.Tensor) -> LSTMState:
        """The decoder's initial state for latent z [B, D]."""
        return self.latent_to_state(z)

    def cond(self, z: torch.Tensor) -> torch.Tensor | None:
        """What the decoder reads besides its inputs: z, with `z_every_step`."""
        return z if self.config.z_every_step else None

    @torch.no_grad()
    def latent_from_audio(
        self,
        prev: torch.Tensor | None,
        *,
        creativity: float = 0.0,
        generator: torch.Generator | None = None,
        batch: int = 1,
    ) -> torch.Tensor:
        """z [B, D] for continuing `prev` ([B, T] audio in [-1, 1], the model's context):
        mu + creativity * sigma * eps. With no prime (None, or T = 0) z is drawn from the prior,
        creativity * N(0, I), for `batch` rows (None) or B rows. eps comes from `generator`."""
        creativity = number(creativity, "creativity", low=0.0)
        device = next(self.parameters()).device
        if prev is None or prev.shape[1] == 0:
            rows = batch if prev is None else prev.shape[0]
            eps = standard_normal((rows, self.config.latent_dim), device, generator)
            return creativity * eps
        mu, logvar = self.posterior(self.head.tokens(prev.to(device, torch.float32)))
        return reparameterize(mu, logvar, creativity, generator)

    def latent_path(
        self,
        n_samples: int,
        z: torch.Tensor | LatentPath,
        batch: int,
        device: torch.device,
    ) -> torch.Tensor:
        """The z of each of the `n_samples` outputs, [B, n, D] (a broadcast view for one z)."""
        path = z if isinstance(z, torch.Tensor) else z.take(n_samples)
        path = path.to(device, torch.float32)
        if path.dim() == 2:
            path = path[:, None].expand(-1, n_samples, -1)
        expected = (batch, n_samples, self.config.latent_dim)
        if tuple(path.shape) != expected:
            raise ValueError(
                f"z must be [batch, latent_dim] or [batch, n_samples, latent_dim] = {expected}, "
                f"got {tuple(path.shape)}"
            )
        return path

    def _start_from(
        self,
        memory: LSTMState,
        tokens: torch.Tensor,
        n_samples: int,
        z: torch.Tensor | LatentPath | torch.Tensor,
        past: torch.Tensor | None,
    ) -> DecodeStart:
        path = self.latent_path(n_samples, z, tokens.shape[0], tokens.device)
        cond = None
        if self.config.z_every_step:  # one z for every step: a constant [B, D], no [B, n, D]
            cond = path[:, 0] if path.stride(1) == 0 else path
        state = self.latent_state(path[:, 0])
        return DecodeStart(state, self.context(tokens), cond, memory, past)

    def start(
        self,
        prev: torch.Tensor,
        n_samples: int,
        generator: torch.Generator | None = None,
        *,
        z: torch.Tensor | LatentPath | None = None,
        creativity: float = DEFAULT_CREATIVITY,
    ) -> DecodeStart:
        """Continue `prev` [B, T] with latent `z`: [B, D] (one z), [B, n_samples, D] (one per
        output sample) or a `LatentPath` (its next `n_samples` z: style changes, see
        `lofibeats.generation.style`). Without `z` it is inferred from `prev`: mu + `creativity`
        * sigma * eps (0 = the posterior mean, 1 = a posterior sample, > 1 wilder), eps from
        `generator`; an empty `prev` draws from the prior. The decoder starts from the first
        output's z; with `z_every_step` each step reads its own."""
        tokens = self.head.tokens(prev)
        memory = self.encoder_state(tokens)
        if z is None:
            if prev.shape[1] == 0:
                z = self.latent_from_audio(prev, creativity=creativity, generator=generator)
            else:
                mu, logvar = self.posterior_head(memory)
                z = reparameterize(mu, logvar, number(creativity, "creativity", low=0.0), generator)
        past = self.lookback_history(self.past_frames(tokens))
        return self._start_from(memory, tokens, n_samples, z, past)

    def follow(
        self,
        start: DecodeStart,
        tokens: torch.Tensor,
        n_samples: int,
        generator: torch.Generator | None = None,
        *,
        z: torch.Tensor | LatentPath | None = None,
        creativity: float = DEFAULT_CREATIVITY,
        memory: LSTMState | None = None,
    ) -> DecodeStart:
        """The next block of a stream: the encoder's running state moves on over `tokens` (or
        is `memory`, moved by a fused encoder); z comes from `z` (a path or a fixed z), else is
        drawn anew from the posterior of that state (as training on consecutive windows draws
        one z per window)."""
        if memory is None:
            memory = self.encoder_state(tokens, start.memory)
        if z is None:
            mu, logvar = self.posterior_head(memory)
            z = reparameterize(mu, logvar, number(creativity, "creativity", low=0.0), generator)
        past = self.lookback_history(start.past, tokens)
        return self._start_from(memory, tokens, n_samples, z, past)

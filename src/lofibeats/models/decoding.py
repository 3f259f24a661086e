"""The one interface between a model family and the decoding backends.

A sample-level (or frame-level) family *describes* a decode; a backend (`lofibeats.generation`)
*consumes* the description and never looks inside the family's network:

- `DecoderWeights`: what every decode step runs (input embedding, decoder LSTM, output head and,
  for frame models, the sample tier). It does not change between chunks, so a backend may fold
  or compile it once.
- `DecodeStart`: where one decode begins: the decoder state, the tokens just before the first
  output (1 for a sample-level model, one frame of k for a frame model) and any per-step
  conditioning (vseq2seq's z path).
- `EncoderWeights`: the encoder whose running state a stream moves on over every block it
  generates (`follow`), so that a backend can run that move fused too.

With the `Sampling` knobs, that is everything a decode needs: the reference loop, the fused
torch loop and the C kernel all take the same three values. A family that continues audio in
one pass instead (the GAN) implements `OnePassNet`; one that carries a state of its own from
block to block (the plan family) implements `PlannedNet`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import torch
from torch import nn

from lofibeats.models.frame_tier import SampleTier
from lofibeats.models.heads import Head
from lofibeats.models.lookback import CopyHead, Lookback
from lofibeats.models.networks import Decoder, InputEmbedding, LSTMState
from lofibeats.models.sampling import Sampling


@dataclass(frozen=True)
class DecoderWeights:
    """The networks one decode step runs; `sample_tier` is None for a sample-level model,
    `lookback` and `copy` for a frame model without one (with a lookback, the frame LSTM and
    the sample tier also read its recall of each frame and `copy` mixes the recalled samples
    into the head's distribution, see `lofibeats.models.lookback`)."""

    embed: InputEmbedding
    decoder: Decoder
    head: Head
    sample_tier: SampleTier | None = None
    lookback: Lookback | None = None
    copy: CopyHead | None = None

    @property
    def frame_size(self) -> int:
        """Samples per decoder LSTM step (1: sample-level)."""
        return 1 if self.sample_tier is None else self.sample_tier.frame_size


@dataclass(frozen=True)
class EncoderWeights:
    """A sample-level encoder: `lstm` reads `embed(token)` per sample; no head, no sampling.
    Its move over tokens from a state is `nn.LSTM`'s (the family's `encoder_state`, the
    reference); a fused backend folds it like the decoder's layer 0 (a table per token)."""

    embed: InputEmbedding
    lstm: nn.LSTM


@dataclass(frozen=True)
class DecodeStart:
    """Where a decode begins.

    `context` [B, k]: the k tokens before the first output (k = the frame size; a sample-level
    decoder reads the last one). `cond`: the decoder's conditioning input, [B, C] for every
    step or [B, n, C] for each output sample (a frame step reads its first sample's); None for
    an unconditioned decoder. `memory`: what the family carries from block to block in a
    stream (seq2seq: the encoder's running state); backends never read it. `past` [B, F, k]:
    the frames a lookback decoder recalls from (None without a lookback), ending with the
    context frame.
    """

    state: LSTMState
    context: torch.Tensor
    cond: torch.Tensor | None = None
    memory: Any = None  # the family's running summary of what was heard (see `follow`)
    past: torch.Tensor | None = None

    @property
    def batch(self) -> int:
        return self.context.shape[0]


@runtime_checkable
class AutoregressiveNet(Protocol):
    """A family that decodes sample by sample (or frame by frame): seq2seq, vseq2seq."""

    head: Head

    def decoder_weights(self) -> DecoderWeights: ...

    def encoder_weights(self) -> EncoderWeights | None:
        """The encoder `follow` moves over each block, or None where it reads frames (a slow
        top tier: a few steps per block, left to the family)."""
        ...

    def start(
        self,
        prev: torch.Tensor,
        n_samples: int,
        generator: torch.Generator | None = None,
        **options: Any,
    ) -> DecodeStart:
        """Describe continuing `prev` ([B, T] audio in [-1, 1], already cropped to the model's
        context) by `n_samples`; family `options` (vseq2seq: `z`, `creativity`) shape the
        start. Anything random is drawn from `generator` here, before the decode's own draws."""
        ...

    def follow(
        self,
        start: DecodeStart,
        tokens: torch.Tensor,
        n_samples: int,
        generator: torch.Generator | None = None,
        *,
        memory: LSTMState | None = None,
        **options: Any,
    ) -> DecodeStart:
        """The start of the next block of a stream, after `start` decoded `tokens` [B, n]: the
        running summary of everything heard moves on over `tokens`; nothing is re-encoded.
        `memory`: that summary already moved by the caller (a fused run of `encoder_weights()`
        from `start.memory`); None: the family's own encoder moves it."""
        ...


def has_lookback(net: object) -> bool:
    """Whether `net` decodes with a lookback: it takes `Sampling.loop`, and streams carry its
    state by default."""
    return isinstance(net, AutoregressiveNet) and net.decoder_weights().lookback is not None


def auto_temperature(net: object) -> float | None:
    """What `temperature=auto` gives a take of `net` that does not loop: its family's measured
    best (a `auto_temperature` attribute), or None for the shared default."""
    return getattr(net, "auto_temperature", None)


def auto_beat_prior(net: object) -> float | None:
    """What `beat_prior=auto` gives a take of `net`: its family's measured pull towards the last
    beats (a `auto_beat_prior` attribute: the plan's), or None (no plan to pull)."""
    return getattr(net, "auto_beat_prior", None)


@runtime_checkable
class OnePassNet(Protocol):
    """A family that continues audio without a decode loop (the GAN's generator)."""

    def continue_audio(
        self,
        prev: torch.Tensor,
        n_samples: int,
        sampling: Sampling,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor: ...


@runtime_checkable
class PlannedNet(Protocol):
    """A family that carries its own state from block to block and decodes it itself (the
    plan family: its plan of frame codes, the beat period, the last samples). States are
    values: a block returns a new one and never changes the one it was given. `renderer` is
    the network whose sample loop a backend may run instead (`render=`); None where the
    family plays its plan another way (grains)."""

    renderer: nn.Module | None

    def begin(self, prime: torch.Tensor) -> Any:
        """The state after `prime` ([B, T] audio in [-1, 1])."""
        ...

    def block(
        self,
        state: Any,
        n_samples: int,
        sampling: Sampling,
        generator: torch.Generator | None = None,
        render: Any = None,
    ) -> tuple[torch.Tensor, Any]:
        """The next `n_samples` of every row ([B, n] in [-1, 1]) and the state after them;
        `render` runs the renderer's sample loop (None: the family's reference loop)."""
        ...

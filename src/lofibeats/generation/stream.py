"""One endless take: a `Stream` returns the next n samples of a continuation, forever.

A stream decodes whole blocks of `module.chunk_len` samples and serves reads from what it has
decoded, so the samples do not depend on how they are read (chunk sizes 1, 37 and 4096 give the
same audio for the same seed) and every block costs the same. Knobs set between reads
(`sampling`, and for vseq2seq `set_creativity` / `change_style`) apply from the next block.

Two ways to carry what was heard from one block to the next (`carry`):

- ``"window"`` (any family): each block continues the last `context_len` samples of prime +
  generated audio, re-encoding them, as the model was trained on (prev, next) windows. One-pass
  models (the GAN) can blend block seams with a crossfade: each block still makes one native
  chunk, keeps its first `chunk_len - crossfade` samples and holds the rest as a tail that the
  next block's head is faded into (equal-power or linear).
- ``"state"`` (autoregressive families): the prime is encoded once; after each block the
  family's running summary moves on over just that block (`net.follow`: seq2seq's encoder
  state, as models trained on consecutive windows with `data.mode=stream` carry it), so a block
  costs its decode plus one encoder pass over itself, whatever came before. Where the decode is
  fused, that pass is too (`engine.encoder_for`: a sample-level encoder in the C kernel).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch

from lofibeats.errors import ConfigError
from lofibeats.generation.engine import Continuation, encoder_for
from lofibeats.generation.style import StyleChange, StylePath
from lofibeats.models.base import LofiModule
from lofibeats.models.decoding import AutoregressiveNet, PlannedNet, has_lookback
from lofibeats.models.sampling import DEFAULT_SAMPLING, Sampling
from lofibeats.validate import choice

CARRY = ("window", "state")
CARRY_CHOICES = ("auto", *CARRY)
FADES = ("equal_power", "linear")
SILENCE_NOISE_STD = 1e-3  # the "no prime" start: -60 dBFS noise, so the model sees a live signal


def fade_curves(length: int, fade: str = "equal_power") -> tuple[torch.Tensor, torch.Tensor]:
    """(fade_out, fade_in) of `length` samples.

    "equal_power" (cos/sin, constant power for uncorrelated signals: what two sampled guesses
    are) or "linear" (constant amplitude for correlated signals).
    """
    t = (torch.arange(length, dtype=torch.float32) + 0.5) / length
    if fade == "equal_power":
        return torch.cos(t * math.pi / 2), torch.sin(t * math.pi / 2)
    if fade == "linear":
        return 1.0 - t, t
    raise ConfigError(f"options.fade={fade!r}: use one of {', '.join(FADES)}")


def silence_prime(
    batch: int, length: int, generator: torch.Generator, device: torch.device
) -> torch.Tensor:
    """The start when there is no prime: `length` samples of near-silence (-60 dBFS noise).

    Pure zeros would put the model in a state it never saw in training; a whisper of noise keeps
    it on real-audio statistics without audibly colouring the start.
    """
    noise = torch.randn(batch, length, generator=generator, device=device)
    return noise * SILENCE_NOISE_STD


@dataclass(frozen=True)
class StreamMark:
    """Where a stream stood between two reads (`Stream.mark`); tensors are shared, never copied:
    a stream only ever rebinds its tensors, it does not write into them."""

    history: torch.Tensor
    generator_state: torch.Tensor
    buffer: torch.Tensor
    tail: torch.Tensor | None
    start: Any  # a DecodeStart, a PlannedNet state, or None before the first block
    sampling: Sampling
    style: tuple[int, list[StyleChange]] | None


def carries_state(net: object) -> bool:
    """Whether a stream of `net` can carry its state from block to block (carry="state")."""
    return isinstance(net, (AutoregressiveNet, PlannedNet))


def resolve_carry(carry: str, module: LofiModule, data_mode: str | None) -> str:
    """`carry` (auto | window | state, checked); auto means "state" for an autoregressive model
    trained with data.mode=stream (`data_mode`: it learned to carry its encoder state) or with
    a lookback (its past rides along in the stream instead of being re-encoded every block:
    2.40x against 1.64x real time, `benchmarks/stream.py`), and "window" otherwise."""
    carry = choice(carry, CARRY_CHOICES, "carry")
    if carry != "auto":
        return carry
    if isinstance(module.net, PlannedNet):
        return "state"
    if not isinstance(module.net, AutoregressiveNet):
        return "window"
    return "state" if data_mode == "stream" or has_lookback(module.net) else "window"


class Stream:
    """The continuation of `prime` ([B, T] floats in [-1, 1]; None or T = 0: `batch_size` rows
    from near-silence) by `module`, read block by block.

    `engine` picks the decoding backend (`lofibeats.generation.engine`), `seed` every random
    draw, `carry` how blocks connect (see the module doc), `crossfade` (samples, < chunk_len;
    None = the module's `default_crossfade`) and `fade` the seams of window carry. Family
    `options` go to the model (vseq2seq: `z`, a `StylePath`, or `creativity`).
    """

    def __init__(
        self,
        module: LofiModule,
        prime: torch.Tensor | None = None,
        *,
        sampling: Sampling = DEFAULT_SAMPLING,
        seed: int = 0,
        engine: str = "auto",
        carry: str = "window",
        crossfade: int | None = None,
        fade: str = "equal_power",
        batch_size: int = 1,
        precision: str = "float32",
        **options: Any,
    ) -> None:
        self.carry = choice(carry, CARRY, "carry")
        self.module, self.sampling, self.options = module, sampling, options
        self.chunk_len, self.context_len = int(module.chunk_len), int(module.context_len)
        self.crossfade = int(module.default_crossfade if crossfade is None else crossfade)
        if not 0 <= self.crossfade < self.chunk_len:
            raise ConfigError(
                f"options.crossfade={self.crossfade}: use 0 to {self.chunk_len - 1} samples "
                f"(less than the model's chunk length)"
            )
        if prime is not None and prime.ndim != 2:
            raise ValueError(f"prime must be [batch, samples], got shape {tuple(prime.shape)}")
        device = module.device
        self.generator = torch.Generator(device=device).manual_seed(seed)
        if prime is None or prime.shape[1] == 0:
            rows = batch_size if prime is None else prime.shape[0]
            prime = silence_prime(rows, self.context_len, self.generator, device)
        self.history = prime[:, -self.context_len :].to(device=device, dtype=torch.float32)
        self.continuation = Continuation(module, engine, precision)
        # a planned net's render loop (C kernel or reference), its weights packed once per take
        self._render_loop = self.continuation.render
        self.encoder = None  # a fused encoder for carry=state (None: the family's own)
        self.fades = (
            tuple(c.to(device) for c in fade_curves(self.crossfade, fade))
            if self.crossfade
            else None
        )
        self._tail: torch.Tensor | None = None
        self._start: Any = None  # DecodeStart (autoregressive) or the PlannedNet state
        self._buffer = self.history.new_zeros(self.history.shape[0], 0)
        planned = isinstance(module.net, PlannedNet)
        if planned and self.carry == "window":
            raise ConfigError(
                f"carry=window: the {module.family} model carries its plan from block to "
                "block; use carry=auto or carry=state"
            )
        if self.carry == "state" and not planned:
            if not isinstance(module.net, AutoregressiveNet):
                raise ConfigError(
                    f"carry=state: the {module.family} model has no decoder state to carry; "
                    "use carry=window"
                )
            if self.crossfade:
                raise ConfigError("options.crossfade: carry=state has no seams; use 0")
            self.encoder = encoder_for(module.net, engine, device, precision)

    @property
    def engine(self) -> str:
        """What decodes, for messages: "reference", "fused (C kernel)" or "fused (torch)" (a
        planned net: what runs its renderer's loop)."""
        return self.continuation.name

    @property
    def batch(self) -> int:
        return self.history.shape[0]

    @torch.inference_mode()
    def read(self, n: int) -> torch.Tensor:
        """The next `n` samples of every row, [B, n] floats in [-1, 1]."""
        if n < 0:
            raise ValueError(f"read({n}): give a number of samples >= 0")
        module = self.module
        was_training = module.training
        module.eval()
        try:
            pieces, have = [self._buffer], self._buffer.shape[1]
            while have < n:
                block = self._next_block()
                pieces.append(block)
                have += block.shape[1]
            audio = torch.cat(pieces, dim=1)
        finally:
            module.train(was_training)
        self._buffer = audio[:, n:]
        return audio[:, :n].clamp(-1.0, 1.0)

    def mark(self) -> StreamMark:
        """Where the stream stands now. `rewind(mark)` returns it there: the reads after it give
        the same samples again, or, with a knob changed after the rewind, the samples that knob
        would have given from that point on (how a live player applies a knob to audio it has
        generated ahead but not yet played)."""
        path = self.options.get("z")
        style = (path.position, list(path.changes)) if isinstance(path, StylePath) else None
        return StreamMark(
            self.history,
            self.generator.get_state(),
            self._buffer,
            self._tail,
            self._start,
            self.sampling,
            style,
        )

    def rewind(self, mark: StreamMark) -> None:
        """Go back to `mark` (taken from this stream); the knobs return to what they were then."""
        self.history, self._buffer, self._tail = mark.history, mark.buffer, mark.tail
        self._start, self.sampling = mark.start, mark.sampling
        self.generator.set_state(mark.generator_state)
        path = self.options.get("z")
        if isinstance(path, StylePath) and mark.style is not None:
            path.position, path.changes = mark.style[0], list(mark.style[1])

    @property
    def style(self) -> StylePath:
        """The take's latent path (vseq2seq): its `change_to` / `set_creativity` are the style
        and creativity knobs, applied from the next block."""
        path = self.options.get("z")
        if not isinstance(path, StylePath):
            raise ConfigError("this take has no latent path: only vseq2seq takes style knobs")
        return path

    # ----------------------------------------------------------------- blocks
    def _next_block(self) -> torch.Tensor:
        block = self._window_block() if self.carry == "window" else self._state_block()
        self.history = torch.cat([self.history, block], dim=1)[:, -self.context_len :]
        return block

    def _window_block(self) -> torch.Tensor:
        new = self.continuation(
            self.history,
            self.chunk_len,
            sampling=self.sampling,
            generator=self.generator,
            **self.options,
        )
        if not self.crossfade:
            return new
        if self._tail is not None:
            fade_out, fade_in = self.fades
            head = self._tail * fade_out + new[:, : self.crossfade] * fade_in
            new = torch.cat([head, new[:, self.crossfade :]], dim=1)
        keep = self.chunk_len - self.crossfade
        self._tail = new[:, keep:]
        return new[:, :keep]

    def _state_block(self) -> torch.Tensor:
        net, n = self.module.net, self.chunk_len
        if isinstance(net, PlannedNet):
            if self._start is None:
                self._start = net.begin(self.history)
            sampling = self.continuation.check(self.sampling)
            block, self._start = net.block(
                self._start, n, sampling, self.generator, render=self._render_loop
            )
            return block
        self.continuation.check(self.sampling)
        if self._start is None:
            self._start = net.start(self.history, n, self.generator, **self.options)
        tokens, _ = self.continuation.backend.decode(self._start, n, self.sampling, self.generator)
        memory = None if self.encoder is None else self.encoder.advance(self._start.memory, tokens)
        self._start = net.follow(
            self._start, tokens, n, self.generator, memory=memory, **self.options
        )
        return net.head.audio(tokens)

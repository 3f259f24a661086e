"""Decoding backends, and the one function that continues audio with a model.

A model family describes a decode (`lofibeats.models.decoding`: `DecoderWeights`, `DecodeStart`
and the `Sampling` knobs); a backend consumes the description and never looks inside the
family. Backends, all giving the same samples for the same random draws:

- `ReferenceBackend` (`reference.py`): the networks themselves, one PyTorch call per piece per
  sample; the oracle.
- `FusedBackend`: sample-level decoding with fused weights (`fused.py`: a table lookup for layer
  0's input, one matmul per layer), every uniform drawn up front in the reference's order and
  inverse-CDF sampling, B streams sharing every weight load; the loop runs in a small C kernel
  (`kernel.py` builds it at first use) or, where that cannot be built or the model is not on the
  CPU, in PyTorch (`backend_torch.py`). Per-sample latency, not arithmetic, bounds the reference
  (about 1.7 MFLOP per sample for a 2 x 256 LSTM), which is what fusing removes.
- `FusedFrameBackend`: a frame model's two-tier loop (frame LSTM + sample tier) in the C kernel,
  with `FrameSampler`'s draws; a conditioned frame LSTM (vseq2seq's z) reads each frame's
  first sample's cond, projected to gate width up front as `FusedBackend` does per sample.
  With a lookback the kernel runs one search hop per call (each frame's recall and the copy
  head's mix in C) and the search itself (`Lookback.search`, one FFT) runs in torch between
  calls, on the samples the kernel has written into the decode's signal.
- The plan family (`PlannedNet`) decodes its blocks itself; its renderer's sample loop runs in
  the C kernel (`backend_render.render_loop_for`, built by `Continuation` and run by `Stream`),
  or `plan_net.render_reference` (engine=reference, off the CPU, or no kernel with auto).

A stream that carries state also moves the family's encoder over every block it generates
(`follow`); `encoder_for` runs that move in the C kernel too (`CEncoder`) where the family
describes a sample-level encoder (`EncoderWeights`), the torch encoder being its reference.

Outputs match the reference up to fp32 summation order: greedy decoding gives the same classes,
sampling the same classes except where a uniform lands within rounding of a CDF step.

`Continuation(module, engine)` is what long-form generation calls: it crops `prev`, asks the
family for its `DecodeStart` and runs the chosen backend ("reference", "fused", or "auto":
fused wherever a fused backend runs the description). A family without a decode loop (the GAN,
`OnePassNet`) continues audio itself.
"""

from __future__ import annotations

import ctypes
from typing import Any, Protocol

import torch

from lofibeats.errors import ConfigError
from lofibeats.generation.backend_c import CBackend, CEncoder, CFrameBackend, Hop
from lofibeats.generation.backend_render import render_loop_for, render_loop_name
from lofibeats.generation.backend_torch import TorchBackend
from lofibeats.generation.fused import fuse_frame_lstm, fuse_head, fuse_lstm
from lofibeats.generation.kernel import load_kernel
from lofibeats.generation.reference import ReferenceBackend
from lofibeats.models.base import LofiModule
from lofibeats.models.decoding import (
    AutoregressiveNet,
    DecoderWeights,
    DecodeStart,
    PlannedNet,
    auto_beat_prior,
    has_lookback,
)
from lofibeats.models.frame_tier import FrameSampler
from lofibeats.models.networks import LSTMState
from lofibeats.models.plan_net import RenderLoop
from lofibeats.models.sampling import DEFAULT_SAMPLING, Sampling
from lofibeats.validate import choice

ENGINES = ("auto", "fused", "reference")


class Backend(Protocol):
    """Runs a described decode: (tokens [B, n_samples], the decoder state after them)."""

    name: str

    def decode(
        self,
        start: DecodeStart,
        n_samples: int,
        sampling: Sampling,
        generator: torch.Generator | None = None,
    ) -> tuple[torch.Tensor, LSTMState]: ...


class FusedBackend:
    """Sample-level decoding with fused weights, copied at construction (build a new backend
    after the weights change): in the C kernel when `lib` is given, else in PyTorch; the
    per-step matrices at `precision` (`fused.PRECISIONS`)."""

    def __init__(
        self,
        weights: DecoderWeights,
        lib: ctypes.CDLL | None,
        precision: str = "float32",
    ) -> None:
        if weights.sample_tier is not None:
            raise ValueError("FusedBackend decodes sample-level models; use FusedFrameBackend")
        head = fuse_head(weights.head, precision)
        self.decoder = fuse_lstm(
            weights.decoder.lstm, weights.embed, weights.decoder.cond_dim, precision
        )
        self.noise_std = head.noise_std
        self.impl: CBackend | TorchBackend = (
            TorchBackend(self.decoder, head) if lib is None else CBackend(lib, self.decoder, head)
        )
        self.name = "fused (torch)" if lib is None else "fused (C kernel)"
        if precision != "float32":
            self.name += f", {precision} weights"

    def draws(
        self,
        n_samples: int,
        batch: int,
        temperature: float,
        device: torch.device,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """[n_samples, batch] random draws for sampled decoding, in the order the reference
        draws them (one [batch] uniform vector per step): uniforms for the mu-law head, the
        Gaussian noise `RegressionHead.sample` adds for the regression head."""
        gen_device = generator.device if generator is not None else device
        u = torch.rand(n_samples, batch, generator=generator, device=gen_device).to(device)
        if self.noise_std is None:
            return u
        noise = torch.special.ndtri(u.clamp(1e-7, 1.0 - 1e-7))
        return temperature * self.noise_std.to(device) * noise

    @torch.no_grad()
    def decode(
        self,
        start: DecodeStart,
        n_samples: int,
        sampling: Sampling,
        generator: torch.Generator | None = None,
    ) -> tuple[torch.Tensor, LSTMState]:
        first = start.context[:, -1]
        draws = None
        if not sampling.is_greedy:
            draws = self.draws(
                n_samples, start.batch, sampling.temperature, first.device, generator
            )
        tokens, state = self.impl.decode(
            start.state,
            first,
            n_samples,
            draws=draws,
            temperature=sampling.temperature,
            top_p=sampling.top_p,
            cond_gates=self.decoder.cond_gates(start.cond),
        )
        return tokens.to(first.device), state


class FusedFrameBackend:
    """A frame model's loop (frame LSTM + sample tier) for whole chunks in the C kernel, with the
    random draws `FrameSampler` makes (same generator use); a lookback model's chunk one search
    hop per kernel call, the search in torch between them."""

    name = "fused (C kernel)"

    def __init__(self, weights: DecoderWeights, lib: ctypes.CDLL) -> None:
        tier = weights.sample_tier
        if tier is None:
            raise ValueError("FusedFrameBackend runs frame models only; use FusedBackend")
        self.k, self.lookback = tier.frame_size, weights.lookback
        offset = weights.decoder.lstm.hidden_size  # where a frame's recall starts, as reference.py
        with torch.no_grad():  # the folds read parameters
            self.sampler = FrameSampler(tier, weights.embed, weights.head, weights.copy, offset)
        self.lstm = fuse_frame_lstm(weights.decoder.lstm, weights.decoder.cond_dim)
        self.impl = CFrameBackend(lib, self.lstm, tier, self.sampler)

    def _draws(
        self, n: int, batch: int, sampling: Sampling, generator: torch.Generator | None
    ) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """(offsets, draws) of `CFrameBackend.generate` for n samples, drawn as `FrameSampler`
        draws them."""
        noise = self.sampler.noise(n, batch, sampling, generator)
        if not self.sampler.mulaw:
            return None, None if noise is None else torch.from_numpy(noise)
        if sampling.is_greedy:  # argmax of logits + bias (a copy model's mix adds the bias)
            return torch.from_numpy(self.sampler.offset_bias).expand(n, batch, -1), None
        if sampling.top_p is None:  # ... + T Gumbel
            return torch.from_numpy(noise), None
        # nucleus: the reference's head draws one uniform per stream and step
        return None, torch.rand(n, batch, generator=generator)

    @torch.no_grad()
    def decode(
        self,
        start: DecodeStart,
        n_samples: int,
        sampling: Sampling,
        generator: torch.Generator | None = None,
    ) -> tuple[torch.Tensor, LSTMState]:
        batch, k = start.batch, self.k
        frames = -(-n_samples // k)
        offsets, draws = self._draws(frames * k, batch, sampling, generator)
        cond = start.cond
        if cond is not None and cond.dim() == 3:  # per sample: a frame reads its first sample's
            cond = cond[:, ::k]
        cond_gates = self.lstm.cond_gates(cond)
        if self.lookback is not None:
            tokens, state = self._hops(start, frames, offsets, draws, cond_gates, sampling)
        else:
            tokens, state = self.impl.generate(
                start.state,
                start.context,
                frames,
                offsets=offsets,
                draws=draws,
                temperature=sampling.temperature,
                top_p=sampling.top_p,
                cond_gates=cond_gates,
            )
        return tokens[:, :n_samples].to(start.context.device), state

    def _hops(
        self,
        start: DecodeStart,
        frames: int,
        offsets: torch.Tensor | None,
        draws: torch.Tensor | None,
        cond_gates: torch.Tensor | None,
        sampling: Sampling,
    ) -> tuple[torch.Tensor, LSTMState]:
        """A lookback model's decode, one kernel call per search hop: the signal (the past
        frames, then what the kernel writes) and the searches as `LookbackReader` has them."""
        lookback, k = self.lookback, self.k
        assert lookback is not None and start.past is not None
        signal, begin = lookback.decode_signal(start.past, frames)
        state, context, pieces = start.state, start.context, [start.context[:, :0]]
        for first in range(0, frames, lookback.hop_frames):
            count, end = min(lookback.hop_frames, frames - first), begin + first * k
            lags, scores = lookback.search(signal[:, end - lookback.span : end])
            window = slice(first * k, (first + count) * k)
            tokens, state = self.impl.generate(
                state,
                context,
                count,
                offsets=None if offsets is None else offsets[window],
                draws=None if draws is None else draws[window],
                temperature=sampling.temperature,
                top_p=sampling.top_p,
                cond_gates=_frames_of(cond_gates, first, count),
                hop=Hop(signal, end, lags, scores, sampling.loop),
            )
            pieces.append(tokens)
            context = tokens[:, -k:]
        return torch.cat(pieces, dim=1), state


def _frames_of(cond_gates: torch.Tensor | None, first: int, count: int) -> torch.Tensor | None:
    """The conditioning gates of frames first .. first + count ([B, G] is every frame's)."""
    if cond_gates is None or cond_gates.dim() == 2:
        return cond_gates
    return cond_gates[:, first : first + count]


def encoder_for(
    net: AutoregressiveNet,
    engine: str,
    device: torch.device,
    precision: str = "float32",
) -> CEncoder | None:
    """What moves a stream's encoder state over each generated block: the C kernel unless
    `engine` is "reference", the encoder reads frames (a slow top tier) or the kernel cannot run
    here; None means the family's torch encoder (inside `net.follow`)."""
    weights = net.encoder_weights()
    if choice(engine, ENGINES, "engine") == "reference" or weights is None or device.type != "cpu":
        return None
    lib = load_kernel()
    if lib is None:
        return None
    return CEncoder(lib, fuse_lstm(weights.lstm, weights.embed, precision=precision))


def backend_for(
    weights: DecoderWeights,
    engine: str,
    device: torch.device,
    precision: str = "float32",
) -> Backend:
    """The backend `engine` asks for: "reference", "fused" or "auto" (fused where one runs this
    description; a frame model without the C kernel runs the reference loop)."""
    engine = choice(engine, ENGINES, "engine")
    if engine == "reference":
        return ReferenceBackend(weights)
    lib = load_kernel() if device.type == "cpu" else None
    if weights.sample_tier is None:
        return FusedBackend(weights, lib, precision)
    return ReferenceBackend(weights) if lib is None else FusedFrameBackend(weights, lib)


def check_sampling(net: object, sampling: Sampling) -> Sampling:
    """`sampling`, or a ConfigError where it asks `net` for what it cannot do (`loop` without
    a lookback, `beat_prior` without a plan), so commands can refuse before they start."""
    if sampling.looping and not has_lookback(net):
        raise ConfigError(
            f"loop={sampling.loop}: only a model with a lookback can loop what it recalls "
            "(train one with model.lookback, e.g. experiment=music_16k); use loop=0"
        )
    if sampling.beat_prior and auto_beat_prior(net) is None:
        raise ConfigError(
            f"beat_prior={sampling.beat_prior:g}: only plan models draw a plan to pull towards "
            "the last beats; use beat_prior=auto or 0"
        )
    return sampling


class Continuation:
    """Continue audio with `module`'s network through the backend `engine` picks; built once per
    take (fused backends copy the weights), called chunk after chunk."""

    def __init__(
        self, module: LofiModule, engine: str = "auto", precision: str = "float32"
    ) -> None:
        engine = choice(engine, ENGINES, "engine")
        self.net, self.context_len = module.net, module.context_len
        self.device = module.device
        self.backend: Backend | None = None
        self.render: RenderLoop | None = None  # a planned net's render loop (Stream runs it)
        if isinstance(self.net, AutoregressiveNet):
            self.backend = backend_for(self.net.decoder_weights(), engine, self.device, precision)
        elif isinstance(self.net, PlannedNet):  # grains (no renderer) need no loop
            if self.net.renderer is not None:
                self.render = render_loop_for(self.net.renderer, engine, self.device)
        elif engine == "fused":
            raise ConfigError(
                f"engine=fused: the {module.family} model has no fused engine; "
                "use engine=auto or reference"
            )

    @property
    def name(self) -> str:
        """What runs, for messages: "reference", "fused (C kernel)", "fused (torch)" or (a plan
        played by grains) "grains"."""
        if self.render is not None:
            return render_loop_name(self.render)
        if isinstance(self.net, PlannedNet) and self.net.renderer is None:
            return "grains"
        return "reference" if self.backend is None else self.backend.name

    def check(self, sampling: Sampling) -> Sampling:
        """`sampling`, or a ConfigError where it asks for what this model cannot do."""
        return check_sampling(self.net, sampling)

    @torch.no_grad()
    def __call__(
        self,
        prev: torch.Tensor,
        n_samples: int,
        *,
        sampling: Sampling = DEFAULT_SAMPLING,
        generator: torch.Generator | None = None,
        **options: Any,
    ) -> torch.Tensor:
        """Continue each row of `prev` ([B, T] floats in [-1, 1]; the last `context_len`
        samples are used) by `n_samples`: [B, n_samples] floats in [-1, 1], deterministic given
        `generator`. Family `options` (vseq2seq: `z`, `creativity`) go to the family's start."""
        if prev.dim() != 2:
            raise ValueError(f"prev must be [batch, time], got shape {tuple(prev.shape)}")
        self.check(sampling)
        prev = prev[:, -self.context_len :].to(self.device, torch.float32)
        if self.backend is None:
            return self.net.continue_audio(prev, n_samples, sampling, generator, **options)
        if n_samples == 0:
            return prev.new_zeros(prev.shape[0], 0)
        start = self.net.start(prev, n_samples, generator, **options)
        tokens, _ = self.backend.decode(start, n_samples, sampling, generator)
        return self.net.head.audio(tokens)


def continue_audio(
    module: LofiModule,
    prev: torch.Tensor,
    n_samples: int,
    *,
    sampling: Sampling = DEFAULT_SAMPLING,
    generator: torch.Generator | None = None,
    engine: str = "auto",
    **options: Any,
) -> torch.Tensor:
    """One chunk: `Continuation(module, engine)(prev, n_samples, ...)`."""
    return Continuation(module, engine)(
        prev, n_samples, sampling=sampling, generator=generator, **options
    )


def describe(module: LofiModule, engine: str = "auto", precision: str = "float32") -> str:
    """What `Continuation(module, engine, precision)` runs, for messages."""
    return Continuation(module, engine, precision).name

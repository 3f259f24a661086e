"""The fast sample-level generation engine for seq2seq checkpoints.

`Seq2SeqModule.continue_audio` is the reference: per sample it runs embedding, one
`torch.lstm_cell` per layer, the head and a sampler as separate PyTorch calls, and per-call
framework overhead, not arithmetic, bounds it (about 1.7 MFLOP per sample for a 2 x 256 LSTM).
`FusedEngine` produces the same samples from the same random draws, faster:

- fused weights (`fused.py`): a table lookup for layer 0's input, one matmul per layer;
- every uniform drawn up front, in the order the reference draws them, so a seed gives the
  same audio either way; inverse-CDF sampling (temperature, nucleus) or greedy;
- B streams at once, their rows sharing every weight load;
- the whole chunk (encoder included) in one call of a small C kernel (`kernel.py` builds it at
  first use), or, where that cannot be built or the model is not on the CPU, the same fused
  loop in PyTorch (`backend_torch.py`).

Frame models (`model.frame_size` > 1) have their own reference loop (`FrameSampler`: the frame
LSTM in torch, then k per-sample NumPy steps); `FrameEngine` runs that whole loop in the C
kernel from the same folded arrays and the same random draws, and falls back to the module's
own loop where the kernel cannot run. `LatentEngine` runs a sample-level vseq2seq: the decoder
starts from `latent_state(z)` and (with `z_every_step`) reads each step's z as `cond`.

Outputs match the reference up to fp32 summation order: greedy decoding gives the same classes,
sampling the same classes except where a uniform lands within rounding of a CDF step.
`continuation(module, engine)` is what long-form generation calls: "reference", "fused" or
"auto" (fused wherever it applies).
"""

from __future__ import annotations

import ctypes
from collections.abc import Callable

import torch

from lofibeats.errors import ConfigError
from lofibeats.generation.backend_c import CBackend, CFrameBackend
from lofibeats.generation.backend_torch import TorchBackend
from lofibeats.generation.fused import fuse_frame_lstm, fuse_head, fuse_lstm
from lofibeats.generation.kernel import load_kernel
from lofibeats.models.base import LofiModule
from lofibeats.models.frame_tier import FrameSampler
from lofibeats.models.heads import MulawHead, RegressionHead
from lofibeats.models.hparams import choice
from lofibeats.models.latent import LatentPath
from lofibeats.models.networks import LSTMState
from lofibeats.models.seq2seq import Seq2SeqModule
from lofibeats.models.vseq2seq import VSeq2SeqModule

ENGINES = ("auto", "fused", "reference")
BACKENDS = ("auto", "c", "torch")


def _kernel_for(module: LofiModule) -> ctypes.CDLL | None:
    """The C kernel where it can run this module (built, and the module on the CPU)."""
    return load_kernel() if module.device.type == "cpu" else None


def _plain_seq2seq(module: LofiModule) -> bool:
    """A seq2seq module (not a subclass with its own generation), an unconditioned decoder and a
    known head."""
    return (
        isinstance(module, Seq2SeqModule)
        and type(module).continue_audio is Seq2SeqModule.continue_audio
        and module.decoder.cond_dim == 0
        and isinstance(module.head, (MulawHead, RegressionHead))
    )


def supports_latent(module: LofiModule) -> bool:
    """Whether `LatentEngine` reproduces `module.continue_audio`: a sample-level vseq2seq (not
    a subclass with its own generation) with a known head."""
    return (
        isinstance(module, VSeq2SeqModule)
        and type(module).continue_audio is VSeq2SeqModule.continue_audio
        and module.supports_fused_engine
        and isinstance(module.head, (MulawHead, RegressionHead))
    )


def supports_frames(module: LofiModule) -> bool:
    """Whether `FrameEngine` reproduces `module.continue_audio`: a plain seq2seq frame model."""
    return _plain_seq2seq(module) and module.sample_tier is not None


def supports(module: LofiModule) -> bool:
    """Whether the engine reproduces `module.continue_audio`: a plain seq2seq module, either
    sample-level (`FusedEngine`) or a frame model (`FrameEngine`), or a sample-level vseq2seq
    (`LatentEngine`)."""
    plain = _plain_seq2seq(module)
    return (
        (plain and module.supports_fused_engine)
        or supports_frames(module)
        or supports_latent(module)
    )


class FusedEngine:
    """Generation for one seq2seq module with fused weights, copied at construction (build a
    new engine after the weights change). `backend`: "c" (the compiled kernel, CPU only),
    "torch" or "auto" (C where it is available and the model is on the CPU)."""

    def __init__(self, module: Seq2SeqModule, backend: str = "auto") -> None:
        backend = choice(backend, BACKENDS, "backend")
        self.module = module
        head = fuse_head(module.head)
        decoder = fuse_lstm(module.decoder.lstm, module.embed, module.decoder.cond_dim)
        self.decoder = decoder
        lib = _kernel_for(module) if backend != "torch" else None
        if backend == "c" and lib is None:
            raise ConfigError(
                "backend=c: the C kernel is unavailable here (no compiler, or a model not on "
                "the CPU); use backend=auto or torch"
            )
        if lib is not None:
            encoder = fuse_lstm(module.encoder.lstm, module.embed)
            self.backend: CBackend | TorchBackend = CBackend(lib, encoder, decoder, head)
        else:
            self.backend = TorchBackend(module.encoder.lstm, module.embed, decoder, head)
        self.noise_std = head.noise_std

    # ----------------------------------------------------------------- building blocks
    def encode(self, prev_tokens: torch.Tensor) -> LSTMState:
        """prev tokens [B, T] (see `head.tokens`) -> the decoder's initial state, as
        `Seq2SeqModule.encode` computes it."""
        initial = self.module.encoder.initial_state(prev_tokens.shape[0])
        return self.backend.encode(prev_tokens, initial)

    def draws(
        self,
        n_samples: int,
        batch: int,
        temperature: float,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """[n_samples, batch] random draws for sampled decoding, in the order the reference
        draws them (one [batch] uniform vector per step): uniforms for the mu-law head, the
        Gaussian noise `RegressionHead.sample` adds for the regression head."""
        device = self.module.device
        gen_device = generator.device if generator is not None else device
        u = torch.rand(n_samples, batch, generator=generator, device=gen_device).to(device)
        if self.noise_std is None:
            return u
        noise = torch.special.ndtri(u.clamp(1e-7, 1.0 - 1e-7))
        return temperature * self.noise_std.to(device) * noise

    def decode(
        self,
        state: LSTMState,
        first: torch.Tensor,
        n_samples: int,
        *,
        draws: torch.Tensor | None = None,
        temperature: float = 1.0,
        top_p: float | None = None,
        cond: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, LSTMState]:
        """Decode `n_samples` tokens for each row of `first` ([B] input tokens) from `state`.

        `draws` ([n_samples, B], see `draws()`) samples; None decodes greedily. `cond` is the
        decoder's conditioning input ([B, C] for every step, or [B, T >= n_samples, C]), for
        decoders built with `cond_dim` > 0. Returns (tokens [B, n_samples], the final state).
        """
        cond_gates = self.decoder.cond_gates(cond)
        return self.backend.decode(
            state,
            first,
            n_samples,
            draws=draws,
            temperature=temperature,
            top_p=top_p,
            cond_gates=cond_gates,
        )

    # ----------------------------------------------------------------- generation
    @torch.no_grad()
    def continue_audio(
        self,
        prev: torch.Tensor,
        n_samples: int,
        *,
        temperature: float | None = None,
        generator: torch.Generator | None = None,
        decoding: str | None = None,
        top_p: float | None = None,
    ) -> torch.Tensor:
        """`Seq2SeqModule.continue_audio`, same arguments and defaults, same draws."""
        module = self.module
        sampling = module.sampling_options(temperature, decoding, top_p)
        prev = module.crop_prev(prev)
        if n_samples == 0:
            return prev.new_zeros(prev.shape[0], 0)
        prev_tokens = module.head.tokens(prev)
        state = self.encode(prev_tokens)
        greedy = sampling.greedy or sampling.temperature == 0
        draws = (
            None
            if greedy
            else self.draws(n_samples, prev.shape[0], sampling.temperature, generator)
        )
        tokens, _ = self.decode(
            state,
            module.first_input(prev_tokens),
            n_samples,
            draws=draws,
            temperature=sampling.temperature,
            top_p=sampling.top_p,
        )
        return module.head.audio(tokens.to(module.device))


class LatentEngine(FusedEngine):
    """`FusedEngine` for a sample-level vseq2seq (`VSeq2SeqModule.continue_audio`'s arguments,
    `creativity` and `z` included, and its draws): the decoder starts from `latent_state(z)`
    of the first output's z and, with `z_every_step`, reads each step's z as its `cond`."""

    module: VSeq2SeqModule

    @torch.no_grad()
    def continue_audio(
        self,
        prev: torch.Tensor,
        n_samples: int,
        *,
        temperature: float | None = None,
        generator: torch.Generator | None = None,
        decoding: str | None = None,
        top_p: float | None = None,
        creativity: float | None = None,
        z: torch.Tensor | LatentPath | None = None,
    ) -> torch.Tensor:
        module = self.module
        sampling = module.sampling_options(temperature, decoding, top_p)
        creativity = module.hparams.creativity if creativity is None else creativity
        prev = module.crop_prev(prev)
        path = module.latent_path(prev, n_samples, z, creativity, generator)
        if n_samples == 0:
            return prev.new_zeros(prev.shape[0], 0)
        state = module.latent_state(path[:, 0])
        greedy = sampling.greedy or sampling.temperature == 0
        batch = prev.shape[0]
        draws = None if greedy else self.draws(n_samples, batch, sampling.temperature, generator)
        cond = None
        if module.hparams.z_every_step:  # one z for every step: a constant cond, no [B, n, 4H]
            cond = path[:, 0] if path.stride(1) == 0 else path
        tokens, _ = self.decode(
            (state.h, state.c),
            module.first_input(module.head.tokens(prev)),
            n_samples,
            draws=draws,
            temperature=sampling.temperature,
            top_p=sampling.top_p,
            cond=cond,
        )
        return module.head.audio(tokens.to(module.device))


class FrameEngine:
    """Generation for one frame model (`model.frame_size` > 1): the encoder in torch (one
    `nn.LSTM` call over the prime's frames), then the frame LSTM and the sample tier for the
    whole chunk in one kernel call, with the random draws `FrameSampler` makes (same generator
    use). Weights are copied at construction. `backend`: "c" (raises where the kernel is
    unavailable), "torch" (the module's own NumPy loop) or "auto" (C where it can run)."""

    def __init__(self, module: Seq2SeqModule, backend: str = "auto") -> None:
        backend = choice(backend, BACKENDS, "backend")
        if module.sample_tier is None:
            raise ValueError("FrameEngine runs frame models (model.frame_size > 1) only")
        self.module = module
        self.sampler = FrameSampler(module.sample_tier, module.embed, module.head)
        lib = _kernel_for(module) if backend != "torch" else None
        if backend == "c" and lib is None:
            raise ConfigError(
                "backend=c: the C kernel is unavailable here (no compiler, or a model not on "
                "the CPU); use backend=auto or torch"
            )
        self.backend = (
            None
            if lib is None
            else CFrameBackend(
                lib, fuse_frame_lstm(module.decoder.lstm), module.sample_tier, self.sampler
            )
        )

    @torch.no_grad()
    def continue_audio(
        self,
        prev: torch.Tensor,
        n_samples: int,
        *,
        temperature: float | None = None,
        generator: torch.Generator | None = None,
        decoding: str | None = None,
        top_p: float | None = None,
    ) -> torch.Tensor:
        """`Seq2SeqModule.continue_audio`, same arguments and defaults, same draws."""
        module = self.module
        options = dict(temperature=temperature, decoding=decoding, top_p=top_p)
        if self.backend is None:
            return module.continue_audio(prev, n_samples, generator=generator, **options)
        sampling = module.sampling_options(temperature, decoding, top_p)
        prev = module.crop_prev(prev)
        if n_samples == 0:
            return prev.new_zeros(prev.shape[0], 0)
        prev_tokens = module.head.tokens(prev)
        state = module.encode(prev_tokens)
        batch, k = prev.shape[0], module.frame_size
        frames = -(-n_samples // k)
        n = frames * k
        noise = self.sampler.noise(n, batch, sampling, generator)
        greedy = sampling.greedy or sampling.temperature == 0
        offsets = draws = None
        if not self.sampler.mulaw:
            draws = None if noise is None else torch.from_numpy(noise)
        elif greedy or sampling.top_p is None:  # argmax over logits + bias (+ T * Gumbel)
            bias = torch.from_numpy(self.sampler.out_bias)
            offsets = bias.expand(n, batch, -1) if greedy else torch.from_numpy(noise)
        else:  # nucleus: the reference's head draws one uniform per stream and step
            draws = torch.rand(n, batch, generator=generator)
        tokens, _ = self.backend.generate(
            state,
            module.context(prev_tokens),
            frames,
            offsets=offsets,
            draws=draws,
            temperature=sampling.temperature,
            top_p=sampling.top_p,
        )
        return module.head.audio(tokens[:, :n_samples])


def describe(module: LofiModule, engine: str = "auto") -> str:
    """What `continuation(module, engine)` runs, for messages: "reference", "fused (C kernel)"
    or "fused (torch)" (frame models without the kernel run their own loop: "reference")."""
    if choice(engine, ENGINES, "engine") == "reference" or not supports(module):
        return "reference"
    if _kernel_for(module) is not None:
        return "fused (C kernel)"
    return "reference" if supports_frames(module) else "fused (torch)"


def continuation(module: LofiModule, engine: str = "auto") -> Callable[..., torch.Tensor]:
    """What long-form generation calls to continue audio (`LofiModule.continue_audio`'s
    signature): the module's own loop ("reference"), the fused engine ("fused"), or the fused
    engine wherever it reproduces the module ("auto", see `supports`). Frame models get
    `FrameEngine`, whose fallback without the kernel is the module's own loop."""
    engine = choice(engine, ENGINES, "engine")
    if engine == "reference":
        return module.continue_audio
    if supports_frames(module):
        assert isinstance(module, Seq2SeqModule)
        return FrameEngine(module).continue_audio
    if supports_latent(module):
        assert isinstance(module, VSeq2SeqModule)
        return LatentEngine(module).continue_audio
    if supports(module):
        assert isinstance(module, Seq2SeqModule)
        return FusedEngine(module).continue_audio
    if engine == "fused":
        raise ConfigError(
            f"engine=fused: the {module.family} model has no fused engine; use engine=auto or reference"
        )
    return module.continue_audio

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
from lofibeats.generation.backend_c import CBackend
from lofibeats.generation.backend_torch import TorchBackend
from lofibeats.generation.fused import fuse_head, fuse_lstm
from lofibeats.generation.kernel import load_kernel
from lofibeats.models.base import LofiModule
from lofibeats.models.heads import MulawHead, RegressionHead
from lofibeats.models.hparams import choice, number
from lofibeats.models.networks import LSTMState
from lofibeats.models.seq2seq import DECODINGS, Seq2SeqModule

ENGINES = ("auto", "fused", "reference")
BACKENDS = ("auto", "c", "torch")


def _kernel_for(module: LofiModule) -> ctypes.CDLL | None:
    """The C kernel where it can run this module (built, and the module on the CPU)."""
    return load_kernel() if module.device.type == "cpu" else None


def supports(module: LofiModule) -> bool:
    """Whether `FusedEngine` reproduces `module.continue_audio`: a seq2seq module (not a
    subclass with its own generation), sample-level (frame_size 1), an unconditioned decoder and a
    known head."""
    return (
        isinstance(module, Seq2SeqModule)
        and type(module).continue_audio is Seq2SeqModule.continue_audio
        and module.supports_fused_engine
        and module.decoder.cond_dim == 0
        and isinstance(module.head, (MulawHead, RegressionHead))
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
        module, hp = self.module, self.module.hparams
        greedy = choice(decoding or hp.decoding, DECODINGS, "decoding") == "greedy"
        temperature = number(
            hp.temperature if temperature is None else temperature, "temperature", low=0.0
        )
        if top_p is None:
            top_p = hp.top_p
        elif not 0.0 < (top_p := number(top_p, "top_p")) <= 1.0:
            raise ConfigError(f"top_p={top_p!r}: give a probability in (0, 1], or null")
        if prev.dim() != 2:
            raise ValueError(f"prev must be [batch, time], got shape {tuple(prev.shape)}")
        prev = prev[:, -module.context_len :].to(module.device, torch.float32)
        if n_samples == 0:
            return prev.new_zeros(prev.shape[0], 0)
        prev_tokens = module.head.tokens(prev)
        state = self.encode(prev_tokens)
        greedy = greedy or temperature == 0
        draws = None if greedy else self.draws(n_samples, prev.shape[0], temperature, generator)
        tokens, _ = self.decode(
            state,
            module.first_input(prev_tokens),
            n_samples,
            draws=draws,
            temperature=temperature,
            top_p=top_p,
        )
        return module.head.audio(tokens.to(module.device))


def describe(module: LofiModule, engine: str = "auto") -> str:
    """What `continuation(module, engine)` runs, for messages: "reference", "fused (C kernel)"
    or "fused (torch)"."""
    if choice(engine, ENGINES, "engine") == "reference" or not supports(module):
        return "reference"
    return "fused (C kernel)" if _kernel_for(module) is not None else "fused (torch)"


def continuation(module: LofiModule, engine: str = "auto") -> Callable[..., torch.Tensor]:
    """What long-form generation calls to continue audio (`LofiModule.continue_audio`'s
    signature): the module's own loop ("reference"), the fused engine ("fused"), or the fused
    engine wherever it reproduces the module ("auto", see `supports`)."""
    engine = choice(engine, ENGINES, "engine")
    if engine == "reference":
        return module.continue_audio
    if supports(module):
        assert isinstance(module, Seq2SeqModule)
        return FusedEngine(module).continue_audio
    if engine == "fused":
        raise ConfigError(
            f"engine=fused: the {module.family} model has no fused engine; use engine=auto or reference"
        )
    return module.continue_audio

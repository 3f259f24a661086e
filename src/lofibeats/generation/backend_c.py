"""The engine's C backends: fused weights packed for the kernel in csrc/lstm_engine.c.

Every gate-width vector is zero-padded to a multiple of the kernel's panel width and every
matrix is packed into panels (see `pack_panels`); the kernel then runs a whole chunk per call
with the GIL released (ctypes drops it during foreign calls).
`CBackend` runs sample-level seq2seq models, `CFrameBackend` a frame model's two-tier loop (with
a lookback: one search hop per call, `Hop`) and `CEncoder` a sample-level encoder over tokens a
stream has generated. Fused weights at precision "float16" (`fused.PRECISIONS`) are packed as
half floats, which the kernel widens as it loads them (CBackend and CEncoder; frame models are
float32 only).
"""

from __future__ import annotations

import ctypes
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from lofibeats.generation.fused import FusedHead, FusedLSTM
from lofibeats.generation.kernel import (
    LOCAL,
    PANEL,
    RECALL,
    FrameTierSpec,
    HeadSpec,
    LSTMSpec,
    RecallSpec,
)
from lofibeats.models.frame_tier import FoldedCopy, FrameSampler, SampleTier, frame_values
from lofibeats.models.lookback import LOCAL_SAMPLES, RECALL_SAMPLES
from lofibeats.models.networks import LSTMState

_ERRORS = {1: MemoryError, 2: ValueError}


def padded(n: int) -> int:
    return -(-n // PANEL) * PANEL


def pad_last(x: torch.Tensor, n: int) -> torch.Tensor:
    """`x` zero-padded on its last dimension to `n`, contiguous."""
    return F.pad(x, (0, n - x.shape[-1])).contiguous()


def pack_panels(w_t: torch.Tensor, precision: str = "float32") -> torch.Tensor:
    """[K, N] -> [N_pad / PANEL, K, PANEL]: column panels, each K rows of PANEL contiguous
    floats (padding columns are zero), the layout the kernel's register tiles stream; float16
    (IEEE half, `w_t` already rounded: see `fused.rounded`) for precision "float16"."""
    k, n = w_t.shape
    panels = pad_last(w_t, padded(n)).reshape(k, -1, PANEL).transpose(0, 1)
    return panels.to(getattr(torch, precision)).contiguous()


def _ptr(x: torch.Tensor | None) -> int | None:
    return None if x is None else x.data_ptr()


def _check(status: int, what: str) -> None:
    if status:
        raise _ERRORS.get(status, RuntimeError)(
            f"the C generation kernel refused {what} ({status})"
        )


def _cond_strides(
    cond_gates: torch.Tensor | None, n_gates: int, steps: int
) -> tuple[torch.Tensor | None, int, int]:
    """Conditioning gates ([B, G] for every step or [B, T >= steps, G]) padded to the kernel's
    gate width, with their row and step strides (0 for a constant)."""
    if cond_gates is None:
        return None, 0, 0
    cond_gates = pad_last(cond_gates.to(torch.float32), n_gates)
    per_step = cond_gates.dim() == 3
    if per_step and cond_gates.shape[1] < steps:
        raise ValueError(f"a per-step cond needs {steps} steps, got {cond_gates.shape[1]}")
    return cond_gates, cond_gates.stride(0), cond_gates.stride(1) if per_step else 0


class _PackedLSTM:
    """A FusedLSTM in the kernel's layout, with the C struct that points into it."""

    def __init__(self, net: FusedLSTM) -> None:
        half = net.precision == "float16"
        self.hidden, self.layers = net.hidden, net.layers
        self.n_gates = padded(4 * net.hidden)
        keep = [
            None if v is None else pad_last(v, self.n_gates)
            for v in (net.table, net.slope, net.base)
        ]
        self.weights = [pack_panels(w, net.precision) for w in net.weights_t]
        self.bias = [None if b is None else pad_last(b, self.n_gates) for b in net.bias]
        self._keep = keep
        weights = (ctypes.c_void_p * self.layers)(*(_ptr(w) for w in self.weights))
        bias = (ctypes.c_void_p * self.layers)(*(_ptr(b) for b in self.bias))
        self._arrays = (weights, bias)
        self.spec = LSTMSpec(
            self.layers,
            self.hidden,
            self.n_gates,
            net.n_classes,
            int(half),
            *(_ptr(v) for v in keep),
            ctypes.cast(weights, ctypes.POINTER(ctypes.c_void_p)),
            ctypes.cast(bias, ctypes.POINTER(ctypes.c_void_p)),
        )


class CEncoder:
    """An LSTM stack's move over known tokens in the kernel (`lofi_encode`: layer 0 a table
    lookup, each higher layer's input projection one product per block); CPU, float32 state
    (weights at the fused LSTM's precision)."""

    def __init__(self, lib: ctypes.CDLL, encoder: FusedLSTM) -> None:
        self.lib, self.lstm = lib, _PackedLSTM(encoder)
        self.mulaw = encoder.n_classes > 0

    def advance(self, state: LSTMState, tokens: torch.Tensor) -> LSTMState:
        """The state after reading `tokens` ([B, T] classes, or floats for the regression head)
        from `state` ([L, B, H] each, not modified)."""
        h, c = (s.to(torch.float32).contiguous().clone() for s in state)
        tokens = tokens.contiguous() if self.mulaw else tokens.to(torch.float32).contiguous()
        status = self.lib.lofi_encode(
            ctypes.byref(self.lstm.spec),
            tokens.shape[0],
            tokens.shape[1],
            h.data_ptr(),
            c.data_ptr(),
            tokens.data_ptr() if self.mulaw else None,
            None if self.mulaw else tokens.data_ptr(),
        )
        _check(status, "the encoder inputs (are the tokens valid classes?)")
        return h, c


class _PackedHead:
    def __init__(self, head: FusedHead) -> None:
        half = head.mulaw and head.precision == "float16"
        if head.mulaw:
            n_pad = padded(head.n_out)
            self.weights = pack_panels(head.weight_t, head.precision)
            self.bias = pad_last(head.bias, n_pad)
        else:
            n_pad = 1
            self.weights, self.bias = head.weight_t[:, 0].contiguous(), head.bias.contiguous()
        self.spec = HeadSpec(head.n_out, n_pad, int(half), _ptr(self.weights), _ptr(self.bias))


class CBackend:
    """The sample-level decode loop in the kernel; CPU, float32 state and sums (weights at the
    fused decoder's and head's precision)."""

    name = "c"

    def __init__(self, lib: ctypes.CDLL, decoder: FusedLSTM, head: FusedHead) -> None:
        self.lib = lib
        self.decoder = _PackedLSTM(decoder)
        self.head, self.mulaw = _PackedHead(head), head.mulaw

    def decode(
        self,
        state: LSTMState,
        first: torch.Tensor,
        n_samples: int,
        *,
        draws: torch.Tensor | None,
        temperature: float,
        top_p: float | None,
        cond_gates: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, LSTMState]:
        """Decode `n_samples` tokens for each row of `first` ([B] input tokens) from `state`.

        `draws` ([n_samples, B], see `FusedBackend.draws`) samples; None decodes greedily.
        `cond_gates` is the decoder's conditioning already projected to gate width ([B, G] for
        every step, or [B, T >= n_samples, G]). Returns (tokens [B, n_samples], final state)."""
        h, c = (s.to(torch.float32).contiguous().clone() for s in state)
        batch = first.shape[0]
        first = first.contiguous() if self.mulaw else first.to(torch.float32).contiguous()
        out = torch.empty(batch, n_samples, dtype=torch.long if self.mulaw else torch.float32)
        cond_gates, cond_b, cond_t = _cond_strides(cond_gates, self.decoder.n_gates, n_samples)
        if draws is not None:
            draws = draws.to(torch.float32).contiguous()
        status = self.lib.lofi_decode(
            ctypes.byref(self.decoder.spec),
            ctypes.byref(self.head.spec),
            batch,
            n_samples,
            h.data_ptr(),
            c.data_ptr(),
            first.data_ptr() if self.mulaw else None,
            None if self.mulaw else first.data_ptr(),
            _ptr(cond_gates),
            cond_b,
            cond_t,
            _ptr(draws),
            int(draws is None),
            float(temperature),
            1.0 if top_p is None else float(top_p),
            out.data_ptr() if self.mulaw else None,
            None if self.mulaw else out.data_ptr(),
        )
        _check(status, "the decoder inputs (are the first tokens valid classes?)")
        return out, (h, c)


def loop_logs(loop: float) -> tuple[float, float]:
    """`Sampling.loop` as the kernel's copy mix reads it: (log(1 - loop), log(loop)), which
    leave the mix as it is for loop = 0."""
    if loop <= 0:
        return 0.0, -math.inf
    return (math.log1p(-loop) if loop < 1 else -math.inf), math.log(loop)


@dataclass(frozen=True)
class Hop:
    """One search hop of a lookback decode for `CFrameBackend.generate`: the sample values
    `signal` ([B, T] float32, contiguous; the call writes its samples' values from `end` on),
    the search's `lags` ([B] samples) and `scores` ([B]), and `Sampling.loop`."""

    signal: torch.Tensor
    end: int
    lags: torch.Tensor
    scores: torch.Tensor
    loop: float


def _copy_fields(
    copy: FoldedCopy | None,
) -> tuple[int, float, float, torch.Tensor | None, torch.Tensor | None]:
    """The kernel tier's copy-head fields: (recall width, gate bias, bump width, gate weight,
    class values); zeros and None without a lookback."""
    if copy is None:
        return 0, 0.0, 0.0, None, None
    if (RECALL_SAMPLES, LOCAL_SAMPLES) != (RECALL, LOCAL):
        raise ValueError("the C kernel's recall differs from lofibeats.models.lookback's")
    weight = torch.from_numpy(copy.gate_weight).contiguous()
    levels = torch.from_numpy(copy.levels).contiguous()
    return RECALL_SAMPLES + 2, copy.gate_bias, copy.width, weight, levels


class _PackedFrameTier:
    """A frame model's sample tier in the kernel's layout: the folds of `FrameSampler` (so both
    paths add the very same float32 rows), the upsampling and output matrices in panels, and a
    lookback model's copy head (`FoldedCopy`)."""

    def __init__(self, tier: SampleTier, sampler: FrameSampler) -> None:
        k, width = tier.frame_size, tier.sample_hidden
        upsample_t = tier.upsample.weight.detach().to(torch.float32).T  # [H, k M]
        self.upsample = pack_panels(upsample_t)
        self.window_bias = tier.window.bias.detach().to(torch.float32).contiguous()
        out_weight = torch.from_numpy(sampler.out_weight)  # [M, V]
        n_out = out_weight.shape[1]
        self.out_bias = torch.from_numpy(sampler.out_bias).contiguous()
        table = slope = offset = values = None
        if sampler.mulaw:
            n_pad = padded(n_out)
            table = torch.from_numpy(sampler.table).contiguous()
            values = frame_values(torch.arange(n_out), n_out).contiguous()
            self.out_weight = pack_panels(out_weight)
            self.out_bias = pad_last(self.out_bias, n_pad)
        else:
            n_pad = 1
            slope = torch.from_numpy(sampler.slope).contiguous()
            offset = torch.from_numpy(sampler.const).contiguous()
            self.out_weight = out_weight[:, 0].contiguous()
        recall, gate_bias, bump_width, gate_weight, levels = _copy_fields(sampler.copy)
        self._keep = (table, slope, offset, values, gate_weight, levels)
        self.spec = FrameTierSpec(
            k,
            width,
            n_out,
            n_pad,
            padded(k * width),
            _ptr(values),
            _ptr(self.upsample),
            _ptr(self.window_bias),
            _ptr(table),
            _ptr(slope),
            _ptr(offset),
            _ptr(self.out_weight),
            _ptr(self.out_bias),
            recall,
            gate_bias,
            bump_width,
            _ptr(gate_weight),
            _ptr(levels),
        )


class CFrameBackend:
    """A frame model's generation loop in the kernel: the frame LSTM (every layer stacked, see
    `fuse_frame_lstm`) and the sample tier; CPU float32 only."""

    name = "c"

    def __init__(
        self, lib: ctypes.CDLL, frame_lstm: FusedLSTM, tier: SampleTier, sampler: FrameSampler
    ) -> None:
        if frame_lstm.precision != "float32":
            raise ValueError("the kernel runs frame models with float32 weights only")
        self.lib, self.k, self.mulaw = lib, tier.frame_size, sampler.mulaw
        self.lstm, self.tier = _PackedLSTM(frame_lstm), _PackedFrameTier(tier, sampler)

    def generate(
        self,
        state: LSTMState,
        context: torch.Tensor,
        frames: int,
        *,
        offsets: torch.Tensor | None,
        draws: torch.Tensor | None,
        temperature: float,
        top_p: float | None,
        cond_gates: torch.Tensor | None = None,
        hop: Hop | None = None,
    ) -> tuple[torch.Tensor, LSTMState]:
        """Tokens [B, frames k] after `context` (the k tokens before them, [B, k]) from the
        frame LSTM's `state`, and its final state. `cond_gates`: the frame LSTM's conditioning
        already projected to gate width, [B, G] for every frame or [B, frames, G] per frame.

        mu-law: `offsets` ([n, B, V], broadcastable) are added to the logits before an argmax
        (the output bias, plus T * Gumbel noise when sampling); `draws` ([n, B] uniforms)
        switch to inverse-CDF nucleus sampling with `temperature` and `top_p` instead.
        Regression: `draws` ([n, B] Gaussian noise, already scaled) or None (the mean).
        A lookback model decodes one search `hop` per call (its frames recall from `hop.signal`
        at `hop.end`, `hop.end + k`, ...); its `offsets` leave the output bias out."""
        h, c = (s.to(torch.float32).contiguous().clone() for s in state)
        batch, steps = context.shape[0], frames * self.k
        context = context.contiguous() if self.mulaw else context.to(torch.float32).contiguous()
        out = torch.empty(batch, steps, dtype=torch.long if self.mulaw else torch.float32)
        off_t = off_b = 0
        if offsets is not None:  # broadcast (zero-stride) steps and streams stay views
            offsets = offsets.to(torch.float32)
            if offsets.stride(2) != 1:
                offsets = offsets.contiguous()
            off_t, off_b = offsets.stride(0), offsets.stride(1)
        if draws is not None:
            draws = draws.to(torch.float32).contiguous()
        nucleus = self.mulaw and draws is not None
        cond_gates, cond_b, cond_t = _cond_strides(cond_gates, self.lstm.n_gates, frames)
        recall = None if hop is None else _recall_spec(hop)
        status = self.lib.lofi_frames(
            ctypes.byref(self.lstm.spec),
            ctypes.byref(self.tier.spec),
            batch,
            frames,
            h.data_ptr(),
            c.data_ptr(),
            context.data_ptr() if self.mulaw else None,
            None if self.mulaw else context.data_ptr(),
            _ptr(cond_gates),
            cond_b,
            cond_t,
            _ptr(offsets),
            off_t,
            off_b,
            _ptr(draws),
            int(nucleus),
            float(temperature),
            1.0 if top_p is None else float(top_p),
            None if recall is None else ctypes.byref(recall[0]),
            out.data_ptr() if self.mulaw else None,
            None if self.mulaw else out.data_ptr(),
        )
        _check(
            status,
            "the frame inputs (are the context tokens valid classes? a lookback hop in range?)",
        )
        return out, (h, c)

    def mix(
        self, out: torch.Tensor, act: torch.Tensor, centres: torch.Tensor, loop: float = 0.0
    ) -> torch.Tensor:
        """The kernel's copy mix of a lookback model (what `FoldedCopy.mix` computes): head
        logits without their bias [N, V], sample-tier features [N, M] and recalled values [N]
        -> log p [N, V]."""
        logits = out.to(torch.float32).contiguous().clone()
        act = act.to(torch.float32).contiguous()
        centres = centres.to(torch.float32).contiguous()
        result = torch.empty_like(logits)
        status = self.lib.lofi_copy_mix(
            ctypes.byref(self.tier.spec),
            logits.shape[0],
            logits.data_ptr(),
            act.data_ptr(),
            centres.data_ptr(),
            *loop_logs(loop),
            result.data_ptr(),
        )
        _check(status, "the copy mix (is this a lookback model?)")
        return result


def _recall_spec(hop: Hop) -> tuple[RecallSpec, tuple[torch.Tensor, ...]]:
    """The kernel's struct for `hop`, with the tensors it points into (keep both alive)."""
    if hop.signal.dtype != torch.float32 or not hop.signal.is_contiguous():
        raise ValueError("a hop's signal must be a contiguous float32 tensor (it is written to)")
    lags = hop.lags.to(torch.int64).contiguous()
    scores = hop.scores.to(torch.float32).contiguous()
    spec = RecallSpec(
        hop.signal.data_ptr(),
        hop.signal.stride(0),
        hop.end,
        lags.data_ptr(),
        scores.data_ptr(),
        *loop_logs(hop.loop),
    )
    return spec, (lags, scores)

"""Fused inference weights for the generation engine, folded from a model's own modules.

A seq2seq decoder step is embed -> LSTM layer 0 -> ... -> head. For generation two folds make
it cheaper without changing what it computes (up to fp32 rounding):

- Layer 0's input path (embedding, input projection, both biases) depends only on the input
  token, so for the mu-law head it is a table of 256 gate rows (a lookup instead of an
  embedding plus a [4H x E] matmul); for the regression head's linear embedding it is
  `slope * x + base`. An optional conditioning input (vseq2seq's z) keeps its own weights.
- Layers l > 0 see [h_{l-1}, h_l] through one [2H x 4H] matrix (W_ih and W_hh stacked).

A frame model's frame LSTM (`fuse_frame_lstm`) reads k float values per step: nothing to fold
there, so its layer 0 is stacked like the others ([x, h_0] through one [(k + H) x 4H] matrix);
a conditioning input (vseq2seq's z) keeps its own weights there too.

Folds are computed in float64 and stored in float32; matrices are stored transposed
([K, 4H]), the layout both engine backends read.

Weight precision (`PRECISIONS`, default "float32": the model's own numbers). With "float16"
the matrices a sample-level decode or encode reads at every step (each LSTM layer's recurrent
and stacked weights, the mu-law head) are rounded to IEEE half: the C kernel stores them as
half floats (half the bytes a step streams, which is what bounds it) and still multiplies and
sums in float32; the torch backend computes with the same rounded values in float32. Tables,
biases and conditioning weights, read once per step or per decode, stay float32. `round_net`
gives the reference backend the very weights a fused backend at that precision uses, so
"fused equals reference" stays testable at either precision.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from lofibeats.models.heads import Head, MulawHead, RegressionHead
from lofibeats.models.networks import InputEmbedding
from lofibeats.validate import choice

PRECISIONS = ("float32", "float16")


def check_precision(precision: str) -> str:
    """`precision`, or a ValueError naming the choices."""
    if precision not in PRECISIONS:
        raise ValueError(f"weight precision {precision!r}: use one of {', '.join(PRECISIONS)}")
    return precision


def weights_choice(value: Any, key: str = "weights") -> str:
    """A config's weight precision (None: float32), or a ConfigError naming `key`."""
    return choice("float32" if value is None else value, PRECISIONS, key)


def rounded(x: torch.Tensor, precision: str) -> torch.Tensor:
    """`x` rounded to `precision` (round to nearest even), held in x's dtype: exactly the
    values the kernel stores at that precision."""
    if check_precision(precision) == "float32":
        return x
    if x.abs().max() > torch.finfo(torch.float16).max:
        raise ValueError("a weight is beyond float16's range: use float32 weights")
    return x.to(torch.float16).to(x.dtype)


@dataclass(frozen=True)
class FusedLSTM:
    """A stacked LSTM with its input folded in. Gate order is PyTorch's (i, f, g, o)."""

    hidden: int
    table: torch.Tensor | None  # [n_classes, 4H]: layer-0 gates per input class
    slope: torch.Tensor | None  # [4H]: float inputs: layer-0 gates = slope * x + base
    base: torch.Tensor | None  # [4H]
    # layer 0: W_hh^T [H, 4H] (frame LSTM: [W_ih; W_hh]^T [k + H, 4H]); l > 0: [2H, 4H]
    weights_t: tuple[torch.Tensor, ...]
    bias: tuple[torch.Tensor | None, ...]  # b_ih + b_hh [4H]; layer 0: None where folded
    cond_t: torch.Tensor | None  # [cond_dim, 4H]: weights of the conditioning input, if any
    precision: str = "float32"  # "float16": weights_t hold values rounded to half (see above)

    @property
    def layers(self) -> int:
        return len(self.weights_t)

    @property
    def n_classes(self) -> int:
        return 0 if self.table is None else self.table.shape[0]

    def cond_gates(self, cond: torch.Tensor | None) -> torch.Tensor | None:
        """Layer-0 gate contribution of `cond` ([B, C] constant or [B, T, C] per step)."""
        if cond is None:
            if self.cond_t is not None:
                raise ValueError(f"this decoder needs a cond input of size {self.cond_t.shape[0]}")
            return None
        if self.cond_t is None:
            raise ValueError("this decoder was built with cond_dim=0 but got a cond input")
        return (cond.to(self.cond_t) @ self.cond_t).contiguous()


@dataclass(frozen=True)
class FusedHead:
    """The output head: mu-law logits (`weight_t` [H, V]) or a tanh regression (`weight_t` [H, 1])."""

    weight_t: torch.Tensor
    bias: torch.Tensor
    noise_std: torch.Tensor | None  # regression: std of its sampled Gaussian (a 0-dim tensor)
    precision: str = "float32"  # "float16": a mu-law weight_t holds values rounded to half

    @property
    def n_out(self) -> int:
        return self.weight_t.shape[1]

    @property
    def mulaw(self) -> bool:
        return self.n_out > 1


def _f32(x: torch.Tensor) -> torch.Tensor:
    return x.to(torch.float32).contiguous()


def fuse_lstm(
    lstm: nn.LSTM, embed: InputEmbedding, cond_dim: int = 0, precision: str = "float32"
) -> FusedLSTM:
    """Fold `embed` into layer 0 of `lstm` (whose input is [embedding, cond of `cond_dim`]);
    the per-step matrices rounded to `precision`."""
    if lstm.bias is False or lstm.proj_size or lstm.bidirectional:
        raise ValueError("the fused engine handles unidirectional nn.LSTMs with biases only")
    p = {name: t.detach().to(torch.float64) for name, t in lstm.named_parameters()}
    embed_dim = lstm.input_size - cond_dim
    w_x, w_c = p["weight_ih_l0"][:, :embed_dim], p["weight_ih_l0"][:, embed_dim:]
    bias0 = p["bias_ih_l0"] + p["bias_hh_l0"]
    table = slope = base = None
    proj = embed.proj
    if isinstance(proj, nn.Embedding):
        table = _f32(proj.weight.detach().double() @ w_x.T + bias0)
    else:  # nn.Linear(1, E): gates = W_x (w x + b) + bias0
        slope = _f32(w_x @ proj.weight.detach().double()[:, 0])
        base = _f32(w_x @ proj.bias.detach().double() + bias0)
    upper, upper_bias = _stacked_layers(p, 1, lstm.num_layers)
    weights = [rounded(w, precision) for w in (_f32(p["weight_hh_l0"].T), *upper)]
    biases: list[torch.Tensor | None] = [None, *upper_bias]
    return FusedLSTM(
        hidden=lstm.hidden_size,
        table=table,
        slope=slope,
        base=base,
        weights_t=tuple(weights),
        bias=tuple(biases),
        cond_t=_f32(w_c.T) if cond_dim else None,
        precision=precision,
    )


def _stacked_layers(p: dict[str, torch.Tensor], first: int, layers: int):
    """[W_ih; W_hh]^T and b_ih + b_hh of layers first .. layers - 1."""
    weights, biases = [], []
    for layer in range(first, layers):
        stacked = torch.cat([p[f"weight_ih_l{layer}"], p[f"weight_hh_l{layer}"]], dim=1)
        weights.append(_f32(stacked.T))
        biases.append(_f32(p[f"bias_ih_l{layer}"] + p[f"bias_hh_l{layer}"]))
    return weights, biases


def fuse_frame_lstm(lstm: nn.LSTM, cond_dim: int = 0) -> FusedLSTM:
    """A frame model's frame LSTM (its input: k float values, then a cond of `cond_dim`), every
    layer stacked; the cond's layer-0 weights apart (`FusedLSTM.cond_gates`)."""
    if lstm.bias is False or lstm.proj_size or lstm.bidirectional:
        raise ValueError("the fused engine handles unidirectional nn.LSTMs with biases only")
    p = {name: t.detach().to(torch.float64) for name, t in lstm.named_parameters()}
    n_in = lstm.input_size - cond_dim
    w_c = p["weight_ih_l0"][:, n_in:]
    p["weight_ih_l0"] = p["weight_ih_l0"][:, :n_in]
    weights, biases = _stacked_layers(p, 0, lstm.num_layers)
    cond_t = _f32(w_c.T) if cond_dim else None
    return FusedLSTM(lstm.hidden_size, None, None, None, tuple(weights), tuple(biases), cond_t)


def fuse_head(head: Head, precision: str = "float32") -> FusedHead:
    """The head's projection, transposed (a mu-law head's rounded to `precision`; the regression
    head's single column stays float32); the regression head's sampling noise std."""
    if isinstance(head, MulawHead):
        weight_t = rounded(_f32(head.proj.weight.detach().T), precision)
        return FusedHead(weight_t, _f32(head.proj.bias.detach()), None, precision)
    if isinstance(head, RegressionHead):
        return FusedHead(
            _f32(head.proj.weight.detach().T),
            _f32(head.proj.bias.detach()),
            head.noise_std.detach().clone(),
        )
    raise TypeError(f"the fused engine has no support for {type(head).__name__}")


def round_net(net: nn.Module, precision: str) -> nn.Module:
    """A copy of the sample-level network `net` (an `AutoregressiveNet`) holding the weights a
    fused backend and encoder at `precision` compute with: each LSTM's recurrent and higher-layer
    input matrices and a mu-law head's projection rounded as `fuse_lstm` and `fuse_head` round
    them (layer 0's input weights, folded into a float32 table, and biases as they are). The
    reference backend run on it is the oracle of a fused decode at that precision."""
    net = copy.deepcopy(net)
    weights = net.decoder_weights()
    if weights.sample_tier is not None:
        raise ValueError("weight precision applies to sample-level models only")
    encoder = net.encoder_weights()
    lstms = [weights.decoder.lstm] + ([] if encoder is None else [encoder.lstm])
    with torch.no_grad():
        for lstm in lstms:
            for name, param in lstm.named_parameters():
                if name.startswith("weight_hh_l") or (
                    name.startswith("weight_ih_l") and name != "weight_ih_l0"
                ):
                    param.copy_(rounded(param, precision))
        if isinstance(weights.head, MulawHead):
            weights.head.proj.weight.copy_(rounded(weights.head.proj.weight, precision))
    return net

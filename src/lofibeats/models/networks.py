"""Plain `nn.Module` building blocks shared by the LSTM families (seq2seq, vseq2seq, gan).

Shapes: B = batch, T = time, L = LSTM layers, H = hidden size, E = input embedding size.
An LSTM state is the pair (h, c), each [L, B, H], as `nn.LSTM` uses it.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

LSTMState = tuple[torch.Tensor, torch.Tensor]


def init_lstm(lstm: nn.LSTM, forget_bias: float = 1.0) -> None:
    """Xavier input weights, orthogonal recurrent weights (per gate), zero biases except the
    forget gate, whose total bias is `forget_bias` (1.0 keeps the cell memory early in training,
    Jozefowicz et al. 2015)."""
    hidden = lstm.hidden_size
    for name, param in lstm.named_parameters():
        with torch.no_grad():
            if name.startswith("weight_ih"):
                nn.init.xavier_uniform_(param)
            elif name.startswith("weight_hh"):
                for gate in param.split(hidden, dim=0):
                    nn.init.orthogonal_(gate)
            elif name.startswith("bias_ih"):
                param.zero_()
                param[hidden : 2 * hidden] = forget_bias  # PyTorch gate order: i, f, g, o
            elif name.startswith("bias_hh"):
                param.zero_()


class InputEmbedding(nn.Module):
    """Turns input tokens into [.., E] features.

    With `n_classes` (the mu-law head): an `nn.Embedding` of int64 class indices.
    Without (the regression head): a linear map of the float sample value.
    """

    def __init__(self, embed_dim: int, n_classes: int | None = None) -> None:
        super().__init__()
        self.n_classes = n_classes
        self.proj = nn.Embedding(n_classes, embed_dim) if n_classes else nn.Linear(1, embed_dim)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        if self.n_classes:
            return self.proj(tokens)
        return self.proj(tokens.unsqueeze(-1))


class Encoder(nn.Module):
    """A stacked unidirectional LSTM over `prev`; returns only its final (h, c).

    `learned_init` makes the initial state a trained parameter instead of zeros.
    """

    def __init__(
        self,
        input_dim: int,
        hidden: int,
        layers: int,
        dropout: float = 0.0,
        learned_init: bool = True,
        forget_bias: float = 1.0,
    ) -> None:
        super().__init__()
        self.lstm = nn.LSTM(
            input_dim, hidden, layers, batch_first=True, dropout=dropout if layers > 1 else 0.0
        )
        init_lstm(self.lstm, forget_bias)
        shape = (layers, 1, hidden)
        if learned_init:
            self.h0 = nn.Parameter(torch.zeros(shape))
            self.c0 = nn.Parameter(torch.zeros(shape))
        else:
            self.register_buffer("h0", torch.zeros(shape), persistent=False)
            self.register_buffer("c0", torch.zeros(shape), persistent=False)

    def initial_state(self, batch: int) -> LSTMState:
        shape = (self.h0.shape[0], batch, self.h0.shape[2])
        return self.h0.expand(shape).contiguous(), self.c0.expand(shape).contiguous()

    def forward(self, x: torch.Tensor, state: LSTMState | None = None) -> LSTMState:
        """x: [B, T, input_dim] -> (h, c), from `state` (None: the initial state). T may be 0
        (then the starting state is returned)."""
        if state is None:
            state = self.initial_state(x.shape[0])
        if x.shape[1] == 0:
            return state
        _, state = self.lstm(x, state)
        return state


class Decoder(nn.Module):
    """A stacked unidirectional LSTM started from a given state.

    `cond_dim` > 0 adds an extra conditioning input concatenated to every step's input
    (e.g. vseq2seq's latent z): `cond` is [B, cond_dim] (same for every step) or [B, T, cond_dim].
    Outputs pass through dropout (the LSTM's own dropout only acts between layers).
    """

    def __init__(
        self,
        input_dim: int,
        hidden: int,
        layers: int,
        dropout: float = 0.0,
        cond_dim: int = 0,
        forget_bias: float = 1.0,
    ) -> None:
        super().__init__()
        self.cond_dim = cond_dim
        self.lstm = nn.LSTM(
            input_dim + cond_dim,
            hidden,
            layers,
            batch_first=True,
            dropout=dropout if layers > 1 else 0.0,
        )
        init_lstm(self.lstm, forget_bias)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()

    def _with_cond(self, x: torch.Tensor, cond: torch.Tensor | None) -> torch.Tensor:
        if self.cond_dim == 0:
            if cond is not None:
                raise ValueError("this decoder was built with cond_dim=0 but got a cond input")
            return x
        if cond is None:
            raise ValueError(f"this decoder needs a cond input of size {self.cond_dim}")
        if cond.dim() == 2:
            cond = cond.unsqueeze(1).expand(-1, x.shape[1], -1)
        return torch.cat([x, cond], dim=-1)

    def forward(
        self, x: torch.Tensor, state: LSTMState, cond: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, LSTMState]:
        """x: [B, T, input_dim] -> (outputs [B, T, H], final state). One `nn.LSTM` call."""
        out, state = self.lstm(self._with_cond(x, cond), state)
        return self.dropout(out), state

    def step(
        self, x_t: torch.Tensor, state: LSTMState, cond: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, LSTMState]:
        """One time step: x_t [B, input_dim] -> (output [B, H], new state).

        Runs the LSTM's own weights through the fused cell op layer by layer: a length-1
        `nn.LSTM` call costs about twice as much on CPU (oneDNN sets up a primitive per call).
        """
        if cond is not None and cond.dim() == 3:
            raise ValueError("Decoder.step takes a per-step cond of shape [B, cond_dim]")
        x = self._with_cond(x_t.unsqueeze(1), cond).squeeze(1)
        lstm, (h, c) = self.lstm, state
        hs, cs = [], []
        for layer in range(lstm.num_layers):
            if layer > 0:
                x = F.dropout(x, lstm.dropout, self.training)
            h_l, c_l = torch.lstm_cell(
                x,
                (h[layer], c[layer]),
                getattr(lstm, f"weight_ih_l{layer}"),
                getattr(lstm, f"weight_hh_l{layer}"),
                getattr(lstm, f"bias_ih_l{layer}"),
                getattr(lstm, f"bias_hh_l{layer}"),
            )
            hs.append(h_l)
            cs.append(c_l)
            x = h_l
        return self.dropout(x), (torch.stack(hs), torch.stack(cs))

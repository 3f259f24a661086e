"""The engine's pure-torch backend: the fused decode loop in eager PyTorch, on any device.

It runs where the C kernel cannot (no compiler, a CUDA model) and reads the same fused weights
(`lofibeats.generation.fused`): a table lookup instead of embedding + input projection, one
matmul per layer, inverse-CDF sampling from pre-drawn uniforms. Per-step framework overhead
still bounds it; the C backend removes that.
"""

from __future__ import annotations

import torch

from lofibeats.generation.fused import FusedHead, FusedLSTM
from lofibeats.models.networks import LSTMState


def inverse_cdf(
    logits: torch.Tensor, u: torch.Tensor, temperature: float, top_p: float | None
) -> torch.Tensor:
    """Classes drawn from softmax(logits / temperature) with uniforms `u` [B], exactly as
    `MulawHead.sample` draws them (optionally restricted to the nucleus `top_p`)."""
    probs = torch.softmax(logits.float() / temperature, dim=-1)
    order = None
    if top_p is not None and top_p < 1.0:
        probs, order = probs.sort(dim=-1, descending=True)
        probs = probs * ((probs.cumsum(-1) - probs) < top_p)
    cdf = probs.cumsum(-1)
    target = (u * cdf[..., -1]).unsqueeze(-1)
    idx = torch.searchsorted(cdf, target, right=True).clamp_max(cdf.shape[-1] - 1)
    if order is not None:
        idx = order.gather(-1, idx)
    return idx.squeeze(-1)


def lstm_cell(
    gates: torch.Tensor, c: torch.Tensor, hidden: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """(h, c) from pre-activation gates [B, 4H] in PyTorch order (i, f, g, o)."""
    s = torch.sigmoid(gates)
    c = torch.addcmul(
        s[:, hidden : 2 * hidden] * c, s[:, :hidden], gates[:, 2 * hidden : 3 * hidden].tanh()
    )
    return s[:, 3 * hidden :] * c.tanh(), c


class TorchBackend:
    """The fused sample-level decode loop in PyTorch (any device)."""

    name = "torch"

    def __init__(self, decoder: FusedLSTM, head: FusedHead) -> None:
        self.decoder, self.head = decoder, head

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
        """See `CBackend.decode`."""
        net, head, hidden = self.decoder, self.head, self.decoder.hidden
        hs, cs = list(state[0].float().unbind(0)), list(state[1].float().unbind(0))
        batch = first.shape[0]
        dtype = torch.long if head.mulaw else torch.float32
        out = torch.empty(batch, n_samples, dtype=dtype, device=first.device)
        x = first if head.mulaw else first.float()
        for t in range(n_samples):
            if net.table is not None:
                gates = net.table.index_select(0, x)
            else:
                gates = torch.addcmul(net.base, x[:, None], net.slope)
            if cond_gates is not None:
                gates = gates + (cond_gates if cond_gates.dim() == 2 else cond_gates[:, t])
            gates = torch.addmm(gates, hs[0], net.weights_t[0])
            hs[0], cs[0] = lstm_cell(gates, cs[0], hidden)
            for layer in range(1, net.layers):
                inputs = torch.cat([hs[layer - 1], hs[layer]], dim=1)
                gates = torch.addmm(net.bias[layer], inputs, net.weights_t[layer])
                hs[layer], cs[layer] = lstm_cell(gates, cs[layer], hidden)
            y = torch.addmm(head.bias, hs[-1], head.weight_t)
            u = None if draws is None else draws[t]
            if head.mulaw:
                x = y.argmax(-1) if u is None else inverse_cdf(y, u, temperature, top_p)
            else:
                x = y[:, 0].tanh()
                if u is not None:
                    x = (x + u).clamp(-1.0, 1.0)
            out[:, t] = x
        return out, (torch.stack(hs), torch.stack(cs))

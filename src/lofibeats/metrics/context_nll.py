"""NLL against context: does hearing more of the past help a model predict the same samples?

Each target window `next` is scored teacher-forced (bits/sample of its mu-law classes) after
the encoder has read the last c samples before it, for several c (by default 64 ms, 1 s and
4 s: a few pitch periods, about a beat, about a bar). The targets and the decoder's inputs are
the same at every c; only how far back the encoder reads changes, so the differences between the
figures are what the extra past is worth. `prev` is never cropped to the model's `context_len`:
its LSTM encoder reads any length, and whether it has learnt to use more than it was trained on
is the question.

vseq2seq decodes from the posterior mean z = mu(prev), so the figure is the reconstruction NLL
given what the context says about z (no sampling noise, no KL term). The GAN has no likelihood:
:func:`context_nll` returns None for it.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from lofibeats.models.base import LofiModule
from lofibeats.models.seq2seq_net import Seq2SeqNet
from lofibeats.models.vseq2seq_net import VSeq2SeqNet

CONTEXT_SECONDS = (0.064, 1.0, 4.0)


def _window_bits(net: Seq2SeqNet, prev: torch.Tensor, nxt: torch.Tensor) -> torch.Tensor:
    """Mean bits/sample of `nxt` [B, Tn] teacher-forced after the encoder read `prev` [B, Tp]."""
    prev_tokens, targets = net.head.tokens(prev), net.head.tokens(nxt)
    inputs = net.decoder_inputs(prev_tokens, targets)
    recall = net.recall(prev_tokens, targets)
    if isinstance(net, VSeq2SeqNet):
        z, _ = net.posterior(prev_tokens)
        out, _ = net.decode(inputs, net.latent_state(z), cond=net.cond(z), recall=recall)
    else:
        out, _ = net.decode(inputs, net.encoder_state(prev_tokens), recall=recall)
    return net.head.nll_bits(out, targets)


def context_nll(
    module: LofiModule,
    prev: torch.Tensor,
    nxt: torch.Tensor,
    contexts: Sequence[int],
    batch_size: int = 16,
) -> dict[int, float] | None:
    """{c: bits/sample of `nxt` given the last c samples of `prev`} for each c in `contexts`.

    `prev` [N, P] and `nxt` [N, Tn] are audio in [-1, 1]; `nxt` follows `prev`; every c must be
    in [1, P]. Windows are scored `batch_size` at a time and averaged with equal weight per
    window. None for a family without a likelihood (the GAN).
    """
    net = module.net
    if not isinstance(net, Seq2SeqNet):
        return None
    if prev.ndim != 2 or nxt.ndim != 2 or prev.shape[0] != nxt.shape[0] or prev.shape[0] == 0:
        raise ValueError(
            f"prev and nxt must be [N, samples] with the same N >= 1, got "
            f"{tuple(prev.shape)} and {tuple(nxt.shape)}"
        )
    bad = [c for c in contexts if not 1 <= c <= prev.shape[1]]
    if bad:
        raise ValueError(f"context {bad[0]} is not in [1, {prev.shape[1]}] (the prev length)")
    device = module.device
    was_training = module.training
    module.eval()
    try:
        with torch.inference_mode():
            result = {}
            for c in contexts:
                total = 0.0
                for start in range(0, prev.shape[0], batch_size):
                    rows = slice(start, start + batch_size)
                    p = prev[rows, prev.shape[1] - c :].to(device, torch.float32)
                    n = nxt[rows].to(device, torch.float32)
                    total += float(_window_bits(net, p, n)) * n.shape[0]
                result[int(c)] = total / prev.shape[0]
    finally:
        module.train(was_training)
    return result

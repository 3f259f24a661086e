"""NLL against context on tiny random-weight models: the same targets at every context length."""

from __future__ import annotations

import math

import pytest
import torch

from lofibeats.metrics.context_nll import context_nll
from lofibeats.models.gan import GanModule
from lofibeats.models.seq2seq import Seq2SeqModule

from helpers import SR, tiny_seq2seq, tiny_vseq2seq

PREV, NEXT = 400, 32  # NEXT: the tiny models' chunk
CONTEXTS = (8, 100, 400)


def tiny(family: str, **overrides) -> Seq2SeqModule:
    return (tiny_vseq2seq if family == "vseq2seq" else tiny_seq2seq)(**overrides)


def windows(n: int = 5, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """(prev [n, PREV], next [n, NEXT]): decaying tones plus noise, so each row differs."""
    gen = torch.Generator().manual_seed(seed)
    t = torch.arange(PREV + NEXT)[None] / SR
    freq = 100 + 400 * torch.rand(n, 1, generator=gen)
    x = 0.4 * torch.sin(2 * math.pi * freq * t) * torch.exp(-3 * t)
    x = x + 0.05 * torch.randn(n, PREV + NEXT, generator=gen)
    return x[:, :PREV], x[:, PREV:]


@pytest.mark.parametrize("family", ["seq2seq", "vseq2seq"])
@pytest.mark.parametrize("frame_size", [1, 4])
def test_one_figure_per_context_deterministic_and_batch_free(family: str, frame_size: int) -> None:
    module = tiny(family, frame_size=frame_size)
    module.train()
    prev, nxt = windows()
    first = context_nll(module, prev, nxt, CONTEXTS)
    assert module.training, "the module's mode is restored"
    assert first is not None and list(first) == list(CONTEXTS)
    assert all(0.0 < bits < 16.0 for bits in first.values())
    assert context_nll(module, prev, nxt, CONTEXTS) == first
    in_twos = context_nll(module, prev, nxt, CONTEXTS, batch_size=2)
    assert in_twos == pytest.approx(first, abs=1e-5)
    assert len(set(first.values())) > 1, "random weights: the context changes the prediction"


@pytest.mark.parametrize("family", ["seq2seq", "vseq2seq"])
def test_only_the_encoder_reads_the_context(family: str, monkeypatch) -> None:
    """With an encoder that ignores its input, every context scores the same windows the same:
    the targets and decoder inputs do not depend on how much past is given."""
    module = tiny(family)
    prev, nxt = windows()
    net = module.net
    fixed = net.encoder_state(net.head.tokens(prev[:, -1:]))
    monkeypatch.setattr(net, "encoder_state", lambda tokens: tuple(s.clone() for s in fixed))
    result = context_nll(module, prev, nxt, CONTEXTS)
    assert result is not None
    assert max(result.values()) - min(result.values()) < 1e-5


def test_seq2seq_full_context_equals_the_teacher_forced_recipe() -> None:
    module = tiny("seq2seq").eval()
    prev, nxt = windows()
    head = module.net.head
    with torch.no_grad():
        out = module.outputs(head.tokens(prev), head.tokens(nxt))
        expected = float(head.nll_bits(out, head.tokens(nxt)))
    result = context_nll(module, prev, nxt, [PREV], batch_size=len(prev))
    assert result is not None and result[PREV] == pytest.approx(expected, abs=1e-5)


def test_gan_has_no_likelihood() -> None:
    torch.manual_seed(0)
    gan = GanModule(
        sr=SR, prev_len_max=128, next_len=64, hidden=16, layers=2, ratios=[4, 4], noise_dim=4,
        d_channels=8, d_max_channels=16, d_layers=2, d_scales=2, adv_warmup_steps=0,
    )  # fmt: skip
    prev, nxt = windows()
    assert context_nll(gan, prev, nxt, CONTEXTS) is None


@pytest.mark.parametrize("contexts", [(0,), (PREV + 1,)])
def test_context_outside_prev_is_an_error(contexts: tuple[int, ...]) -> None:
    prev, nxt = windows()
    with pytest.raises(ValueError, match="context"):
        context_nll(tiny("seq2seq"), prev, nxt, contexts)

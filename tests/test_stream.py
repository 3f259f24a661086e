"""Streaming generation: a take read in any chunk sizes is the same audio; knobs apply from the
next block; state carry runs the decoder on without re-encoding; fused equals reference."""

from __future__ import annotations

import pytest
import torch

from lofibeats.errors import ConfigError
from lofibeats.generation.engine import encoder_for
from lofibeats.generation.stream import Stream
from lofibeats.generation.style import style_path
from lofibeats.models.gan import GanModule
from lofibeats.models.sampling import Sampling
from lofibeats.models.seq2seq import Seq2SeqModule
from lofibeats.models.vseq2seq import VSeq2SeqModule

SR = 8000
SMALL = dict(sr=SR, prev_len_max=96, next_len=32, hidden=16, layers=2, embed_dim=8)


def build(kind: str):
    torch.manual_seed(0)
    if kind == "seq2seq":
        return Seq2SeqModule(**SMALL).eval()
    if kind == "regression":
        return Seq2SeqModule(**SMALL, head="regression").eval()
    if kind == "frame":
        return Seq2SeqModule(**SMALL, frame_size=8, sample_hidden=16).eval()
    if kind == "tiered":  # a slow top tier: the encoder steps once per 16 samples
        return Seq2SeqModule(**SMALL, frame_size=4, top_frame_size=16, sample_hidden=16).eval()
    if kind == "vseq2seq":
        return VSeq2SeqModule(**SMALL, latent_dim=4).eval()
    if kind == "vframe":
        return VSeq2SeqModule(**SMALL, latent_dim=4, frame_size=4, sample_hidden=16).eval()
    return GanModule(sr=SR, prev_len_max=128, next_len=64, hidden=16, layers=1, ratios=[4, 4])


def prime(rows: int = 2, length: int = 150) -> torch.Tensor:
    t = torch.arange(length, dtype=torch.float32)
    return torch.stack([0.4 * torch.sin(t * (0.07 + 0.03 * r)) for r in range(rows)])


def read_in(stream: Stream, sizes: list[int], total: int) -> torch.Tensor:
    pieces, done, i = [], 0, 0
    while done < total:
        n = min(sizes[i % len(sizes)], total - done)
        pieces.append(stream.read(n))
        done, i = done + n, i + 1
    return torch.cat(pieces, dim=1)


def latent_options(module, take_prime: torch.Tensor, n: int) -> dict:
    if not isinstance(module, VSeq2SeqModule):
        return {}
    return {"z": style_path(module, take_prime, batch=take_prime.shape[0], n_samples=n, seed=5)}


KINDS_AND_CARRY = [
    (kind, carry)
    for kind in ("seq2seq", "regression", "frame", "tiered", "vseq2seq", "vframe", "gan")
    for carry in ("window", "state")
    if not (kind == "gan" and carry == "state")
]


@pytest.mark.parametrize(("kind", "carry"), KINDS_AND_CARRY)
def test_chunk_sizes_do_not_change_the_audio(kind: str, carry: str) -> None:
    module, total = build(kind), 300
    takes = []
    for sizes in ([1], [37], [4096]):
        p = prime()
        stream = Stream(
            module,
            p,
            sampling=Sampling(0.9),
            seed=3,
            carry=carry,
            **latent_options(module, p, total),
        )
        takes.append(read_in(stream, sizes, total) if sizes != [1] else read_in(stream, [1], 70))
    assert takes[1].shape == (2, total)
    torch.testing.assert_close(takes[0], takes[1][:, :70], rtol=0, atol=0)
    torch.testing.assert_close(takes[1], takes[2], rtol=0, atol=0)
    assert takes[1].abs().max() <= 1.0 and takes[1].std() > 0


@pytest.mark.parametrize("kind", ["seq2seq", "regression", "frame", "tiered", "vseq2seq", "vframe"])
@pytest.mark.parametrize("carry", ["window", "state"])
def test_fused_stream_equals_reference(kind: str, carry: str) -> None:
    module = build(kind)
    out = {}
    for engine in ("reference", "auto"):
        p = prime()
        stream = Stream(
            module, p, seed=1, engine=engine, carry=carry, **latent_options(module, p, 200)
        )
        out[engine] = stream.read(200)
    if kind == "regression":  # floats through a different summation order
        torch.testing.assert_close(out["auto"], out["reference"], rtol=0, atol=1e-4)
    else:
        assert (out["auto"] != out["reference"]).float().mean() < 0.01


def test_state_carry_encodes_each_sample_once(monkeypatch) -> None:
    """State carry: the prime once, then only each new block (constant cost per sample), in
    torch (reference) or in the fused encoder; window carry re-encodes the whole context for
    every block."""
    module = build("seq2seq")
    lengths = []
    original = module.net.encoder_state

    def spy(tokens, state=None):
        lengths.append(tokens.shape[1])
        return original(tokens, state)

    monkeypatch.setattr(module.net, "encoder_state", spy)
    stream = Stream(module, prime(), carry="state", engine="reference")
    assert stream.encoder is None
    stream.read(module.chunk_len * 10)
    assert lengths[0] == module.context_len and set(lengths[1:]) == {module.chunk_len}
    assert stream.history.shape[1] == module.context_len
    lengths.clear()
    stream = Stream(module, prime(), carry="state")
    fused, moved = stream.encoder.advance, []

    def advance(state, tokens):
        moved.append(tokens.shape[1])
        return fused(state, tokens)

    stream.encoder.advance = advance
    stream.read(module.chunk_len * 10)
    assert lengths == [module.context_len] and moved == [module.chunk_len] * 10
    lengths.clear()
    Stream(module, prime(), carry="window").read(module.chunk_len * 10)
    assert lengths == [module.context_len] * 10


@pytest.mark.parametrize(
    ("head", "hidden", "layers", "rows", "steps"),
    [("mulaw", 16, 2, 2, 300), ("mulaw", 13, 3, 1, 150), ("regression", 16, 2, 3, 100)],
)
@torch.inference_mode()
def test_fused_encoder_moves_the_state_like_the_torch_encoder(
    head: str, hidden: int, layers: int, rows: int, steps: int
) -> None:
    """`encoder_for`'s C encoder over known tokens == `net.encoder_state` from the same state
    (4H = 52 pads the kernel's gate rows; 300 steps span several time blocks)."""
    torch.manual_seed(0)
    module = Seq2SeqModule(**{**SMALL, "hidden": hidden, "layers": layers}, head=head).eval()
    with torch.no_grad():
        for name, p in module.net.encoder.named_parameters():
            p.normal_(0.0, 0.3 if "bias" in name or name in ("h0", "c0") else 0.2)
    net = module.net
    encoder = encoder_for(net, "auto", torch.device("cpu"))
    assert encoder is not None and encoder_for(net, "reference", torch.device("cpu")) is None
    start = net.encoder_state(net.head.tokens(prime(rows)))
    tokens = net.head.tokens(prime(rows, steps + 7)[:, 7:] * 1.5 - 0.2)
    before = [s.clone() for s in start]
    got, want = encoder.advance(start, tokens), net.encoder_state(tokens, start)
    for g, w in zip(got, want, strict=True):
        torch.testing.assert_close(g, w)  # float32 defaults: rtol 1.3e-6, atol 1e-5
    assert all(torch.equal(a, b) for a, b in zip(start, before, strict=True))  # not in place
    if head == "mulaw":
        with pytest.raises(ValueError, match="valid classes"):
            encoder.advance(start, torch.full((rows, 3), 256))
    tiered = build("tiered").net
    assert (
        tiered.encoder_weights() is None
        and encoder_for(tiered, "auto", torch.device("cpu")) is None
    )


@pytest.mark.parametrize("kind", ["seq2seq", "vseq2seq"])
@pytest.mark.parametrize(
    "sampling", [Sampling(decoding="greedy"), Sampling(0.9)], ids=["greedy", "sampled"]
)
def test_state_carry_with_the_fused_encoder_equals_the_reference(kind: str, sampling) -> None:
    """carry=state over 12 blocks: the fused decode + fused encoder give the reference's tokens
    (greedy: all; sampled: all but where a uniform lands within rounding of a CDF step)."""
    module = build(kind)
    out = {}
    for engine in ("reference", "fused"):
        p = prime()
        options = latent_options(module, p, 12 * module.chunk_len)
        stream = Stream(
            module, p, sampling=sampling, seed=5, engine=engine, carry="state", **options
        )
        assert (stream.encoder is None) == (engine == "reference")
        out[engine] = stream.read(12 * module.chunk_len)
    if sampling.is_greedy:
        assert torch.equal(out["fused"], out["reference"])
    else:
        assert (out["fused"] != out["reference"]).float().mean() < 0.01


def test_state_and_window_carry_agree_on_the_first_block() -> None:
    module = build("seq2seq")
    first = {
        c: Stream(module, prime(), seed=2, carry=c).read(module.chunk_len)
        for c in ("window", "state")
    }
    assert torch.equal(first["window"], first["state"])


def test_a_knob_change_applies_from_the_next_block() -> None:
    module, n = build("seq2seq"), build("seq2seq").chunk_len
    plain = Stream(module, prime(), seed=4).read(4 * n)
    stream = Stream(module, prime(), seed=4)
    head = stream.read(n + 5)  # 5 samples of block 2 are decoded and buffered already
    stream.sampling = Sampling(decoding="greedy")
    tail = stream.read(3 * n - 5)
    changed = torch.cat([head, tail], dim=1)
    assert torch.equal(changed[:, : 2 * n], plain[:, : 2 * n])
    assert not torch.equal(changed[:, 2 * n :], plain[:, 2 * n :])


def test_style_and_creativity_knobs_move_z_from_the_next_block() -> None:
    module = build("vseq2seq")
    n = module.chunk_len

    def take(change=None) -> torch.Tensor:
        p = prime(1)
        stream = Stream(module, p, seed=6, carry="state", **latent_options(module, p, 4 * n))
        first = stream.read(n)
        if change is not None:
            change(stream)
        return torch.cat([first, stream.read(3 * n)], dim=1)

    plain = take()
    for change in (
        lambda s: s.style.change_to(torch.full((4,), 3.0)),
        lambda s: s.style.set_creativity(4.0, blend=n),
    ):
        moved = take(change)
        assert torch.equal(moved[:, :n], plain[:, :n]) and not torch.equal(moved, plain)


@pytest.mark.parametrize("carry", ["window", "state"])
def test_a_style_change_in_a_conditioned_frame_model_is_fused_like_the_reference(carry) -> None:
    """vseq2seq with z at every frame step (what the live page plays): a style change and a
    creativity change mid-take through the C frame backend give the reference's audio."""
    module = build("vframe")
    assert module.net.decoder_weights().decoder.cond_dim == 4
    n, out = module.chunk_len, {}
    for engine in ("reference", "fused"):
        p = prime()
        stream = Stream(
            module, p, seed=6, engine=engine, carry=carry, **latent_options(module, p, 6 * n)
        )
        assert stream.engine == {"reference": "reference", "fused": "fused (C kernel)"}[engine]
        first = stream.read(n + 3)
        stream.style.change_to(torch.full((4,), 2.0), blend=n // 2)
        second = stream.read(2 * n)
        stream.style.set_creativity(3.0)
        out[engine] = torch.cat([first, second, stream.read(3 * n - 3)], dim=1)
    assert (out["fused"] != out["reference"]).float().mean() < 0.01


def test_style_knobs_need_a_latent_and_state_carry_needs_a_decoder() -> None:
    with pytest.raises(ConfigError, match="only vseq2seq"):
        _ = Stream(build("seq2seq"), prime()).style
    with pytest.raises(ConfigError, match="carry=state"):
        Stream(build("gan"), prime(), carry="state")
    with pytest.raises(ConfigError, match="carry"):
        Stream(build("seq2seq"), prime(), carry="forever")


@pytest.mark.parametrize("kind", ["seq2seq", "frame", "tiered", "vseq2seq"])
def test_follow_continues_the_encoder_over_everything_heard(kind: str) -> None:
    """After a block, the encoder's running state equals one pass over prime + block."""
    module = build(kind)
    net, p = module.net, prime()[:, -module.context_len :]
    options = {"z": torch.zeros(2, 4)} if kind == "vseq2seq" else {}
    start = net.start(p, module.chunk_len, **options)
    block = torch.randint(0, 256, (2, module.chunk_len))
    follow = net.follow(start, block, module.chunk_len, **options)
    whole = net.encoder_state(torch.cat([net.head.tokens(p), block], dim=1))
    for got, want in zip(follow.memory, whole, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
    assert torch.equal(follow.context, block[:, -net.frame_size :])


def test_a_top_tier_hears_seconds_in_few_steps() -> None:
    module = build("tiered")
    net = module.net
    assert net.encoder.lstm.input_size == 16 and net.decoder.lstm.input_size == 4
    steps = []
    net.encoder.lstm.register_forward_hook(lambda m, inputs, out: steps.append(inputs[0].shape[1]))
    net.encoder_state(torch.zeros(1, 8000, dtype=torch.long))  # one second at 8 kHz
    assert steps == [500]
    with pytest.raises(ConfigError, match="model.top_frame_size=48"):
        Seq2SeqModule(**SMALL, frame_size=4, top_frame_size=48)

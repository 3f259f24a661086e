"""Float16 weights in the fused sample-level decode and encoder (`fused.PRECISIONS`), and the
kernel's build variants (`kernel.VARIANTS`).

What is compared, and how:
- at float16 the kernel computes with exactly the rounded weights: its decode and encode on a
  model's own weights equal, bit for bit, the float32 kernel's on `round_net`'s copy (the half
  panels widen to those very floats, which are summed in the same order);
- the reference backend on `round_net`'s copy is the oracle of a float16 fused decode: token
  for token over 99% of the decode at least (one class decided by a last-ulp rounding changes
  every later sample, see test_fused_lookback.py), and the torch encoder on that copy gives the
  float16 C encoder's state within float32 rounding;
- the "plain" build (no -march=native: GCC vectors, half weights widened in C) and the
  "portable" one (-DLOFI_PORTABLE: the scalar loops MSVC builds) keep the bit-for-bit property
  (their own half-to-float conversion, subnormals included) and give the native build's tokens.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
from concurrent.futures import ThreadPoolExecutor

import pytest
import torch

from lofibeats.generation import kernel
from lofibeats.generation.backend_c import CBackend, CEncoder, CFrameBackend
from lofibeats.generation.backend_torch import TorchBackend
from lofibeats.generation.fused import (
    fuse_frame_lstm,
    fuse_head,
    fuse_lstm,
    round_net,
    rounded,
)
from lofibeats.generation.reference import ReferenceBackend
from lofibeats.generation.stream import Stream
from lofibeats.models.frame_tier import FrameSampler
from lofibeats.models.sampling import Sampling
from lofibeats.models.seq2seq import Seq2SeqModule

N = 300
SAMPLINGS = {
    "greedy": Sampling(decoding="greedy"),
    "sampled": Sampling(temperature=0.9),
    "top_p": Sampling(temperature=0.7, top_p=0.9),
}


pytestmark = pytest.mark.usefixtures("one_thread")


@functools.cache
def _module() -> Seq2SeqModule:
    """A small sample-level mu-law seq2seq (4H = 96: four panels in one pass, two more apart)
    with random biases and a few weights that round to half subnormals, zero and -0."""
    torch.manual_seed(0)
    module = Seq2SeqModule(
        sr=8000, prev_len_max=96, next_len=32, hidden=24, layers=2, embed_dim=8
    ).eval()
    with torch.no_grad():
        for name, p in module.named_parameters():
            if "bias" in name:
                p.normal_(0.0, 0.3)
        for lstm in (module.net.encoder.lstm, module.net.decoder.lstm):
            lstm.weight_hh_l0[0, :4] = torch.tensor([3e-6, -2e-7, 0.0, -0.0])
    return module


def _lib(variant: str = "native"):
    lib = kernel.load_kernel()
    if lib is None:
        pytest.skip("no C kernel here")
    return lib if variant == "native" else _other_builds()[variant]


@functools.cache
def _other_builds() -> dict:
    """The other build variants, compiled side by side (a few seconds each, then cached)."""
    others = [v for v in kernel.VARIANTS if v != "native"]
    with ThreadPoolExecutor(len(others)) as pool:
        paths = pool.map(lambda variant: kernel.build_kernel(variant=variant), others)
        return {v: kernel.open_kernel(path) for v, path in zip(others, paths, strict=True)}


def _prev(rows: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(1)
    t = torch.arange(96, dtype=torch.float32)
    return 0.4 * torch.sin(t / 5.0) + 0.2 * torch.rand(rows, 96, generator=g) - 0.1


def _draws(sampling: Sampling, rows: int) -> torch.Tensor | None:
    """The uniforms the reference draws (one [rows] vector per sample) from seed 3."""
    return None if sampling.is_greedy else torch.rand(N, rows, generator=_gen())


def _gen() -> torch.Generator:
    return torch.Generator().manual_seed(3)


def _c_decode(lib, net, precision: str, start, sampling: Sampling):
    weights = net.decoder_weights()
    backend = CBackend(
        lib,
        fuse_lstm(weights.decoder.lstm, weights.embed, 0, precision),
        fuse_head(weights.head, precision),
    )
    return backend.decode(
        start.state,
        start.context[:, -1],
        N,
        draws=_draws(sampling, start.batch),
        temperature=sampling.temperature,
        top_p=sampling.top_p,
    )


def _same_prefix(a: torch.Tensor, b: torch.Tensor) -> int:
    """How many samples every row of `a` and `b` agree on from the start."""
    differ = (a != b).any(dim=0).nonzero()
    return a.shape[1] if len(differ) == 0 else int(differ[0])


@pytest.mark.parametrize("variant", kernel.VARIANTS)
@pytest.mark.parametrize("rows", [1, 3])
@pytest.mark.parametrize("name", list(SAMPLINGS))
def test_half_weights_are_exactly_the_rounded_weights(variant: str, rows: int, name: str) -> None:
    lib, net, sampling = _lib(variant), _module().net, SAMPLINGS[name]
    with torch.no_grad():
        start = net.start(_prev(rows), N)
    half_tokens, half_state = _c_decode(lib, net, "float16", start, sampling)
    tokens, state = _c_decode(lib, round_net(net, "float16"), "float32", start, sampling)
    assert torch.equal(half_tokens, tokens)
    assert all(torch.equal(a, b) for a, b in zip(half_state, state, strict=True))
    full_state = _c_decode(lib, net, "float32", start, sampling)[1]
    assert not torch.equal(half_state[0], full_state[0])  # the rounding is there to see

    encoder, rounded_encoder = net.encoder_weights(), round_net(net, "float16").encoder_weights()
    half_encoder = CEncoder(lib, fuse_lstm(encoder.lstm, encoder.embed, precision="float16"))
    full_encoder = CEncoder(lib, fuse_lstm(rounded_encoder.lstm, rounded_encoder.embed))
    moved = half_encoder.advance(start.memory, tokens)
    expected = full_encoder.advance(start.memory, tokens)
    assert all(torch.equal(a, b) for a, b in zip(moved, expected, strict=True))


@pytest.mark.parametrize("variant", ["plain", "portable"])
@pytest.mark.parametrize("name", list(SAMPLINGS))
def test_every_build_gives_the_native_builds_tokens(variant: str, name: str) -> None:
    net, sampling = _module().net, SAMPLINGS[name]
    with torch.no_grad():
        start = net.start(_prev(3), N)
    for precision in ("float32", "float16"):
        native = _c_decode(_lib(), net, precision, start, sampling)
        other = _c_decode(_lib(variant), net, precision, start, sampling)
        assert _same_prefix(native[0], other[0]) >= 0.99 * N
        if torch.equal(native[0], other[0]):
            torch.testing.assert_close(native[1], other[1], rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("rows", [1, 3])
@pytest.mark.parametrize("name", list(SAMPLINGS))
def test_float16_fused_decode_is_the_reference_on_rounded_weights(rows: int, name: str) -> None:
    """The C and torch fused loops at float16 (on the model's own weights) against the
    reference on `round_net`'s copy, from the same start with the same draws."""
    net, sampling = _module().net, SAMPLINGS[name]
    oracle = round_net(net, "float16")
    with torch.no_grad():
        start = oracle.start(_prev(rows), N)
        ref, _ = ReferenceBackend(oracle.decoder_weights()).decode(start, N, sampling, _gen())
    tokens, _ = _c_decode(_lib(), net, "float16", start, sampling)
    assert _same_prefix(ref, tokens) >= 0.99 * N
    weights = net.decoder_weights()
    torch_backend = TorchBackend(
        fuse_lstm(weights.decoder.lstm, weights.embed, 0, "float16"),
        fuse_head(weights.head, "float16"),
    )
    with torch.no_grad():
        tokens, _ = torch_backend.decode(
            start.state,
            start.context[:, -1],
            N,
            draws=_draws(sampling, rows),
            temperature=sampling.temperature,
            top_p=sampling.top_p,
        )
    assert _same_prefix(ref, tokens) >= 0.99 * N


def test_float16_encoder_is_the_torch_encoder_on_rounded_weights() -> None:
    net = _module().net
    oracle = round_net(net, "float16")
    tokens = torch.randint(0, 256, (3, 500), generator=_gen())
    with torch.no_grad():
        state = oracle.encoder_state(net.head.tokens(_prev(3)))
        expected = oracle.encoder_state(tokens, state)
    weights = net.encoder_weights()
    encoder = CEncoder(_lib(), fuse_lstm(weights.lstm, weights.embed, precision="float16"))
    moved = encoder.advance(state, tokens)
    for a, b in zip(moved, expected, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=2e-5)


def test_precision_is_checked() -> None:
    with pytest.raises(ValueError, match="float32, float16"):
        rounded(torch.ones(2), "bfloat16")
    with pytest.raises(ValueError, match="float16's range"):
        rounded(torch.tensor([1e5]), "float16")
    assert torch.equal(rounded(torch.tensor([1 / 3]), "float32"), torch.tensor([1 / 3]))
    torch.manual_seed(0)
    frame = Seq2SeqModule(
        sr=8000, prev_len_max=64, next_len=32, hidden=8, layers=1, embed_dim=4, frame_size=4
    ).eval()
    with pytest.raises(ValueError, match="sample-level"):
        round_net(frame.net, "float16")
    weights = frame.net.decoder_weights()
    lstm = dataclasses.replace(fuse_frame_lstm(weights.decoder.lstm), precision="float16")
    with torch.no_grad():
        sampler = FrameSampler(weights.sample_tier, weights.embed, weights.head, weights.copy, 8)
    with pytest.raises(ValueError, match="float32 weights only"):
        CFrameBackend(_lib(), lstm, weights.sample_tier, sampler)


def test_a_float16_stream_is_the_reference_stream_of_the_rounded_model() -> None:
    """End to end through `Stream(precision=...)` (what `weights=float16` sets), chunk after
    chunk with carry=state: the C decoder and C encoder at float16 against the reference
    decoder and torch encoder of `round_net`'s copy."""
    module = _module()
    rounded_module = copy.deepcopy(module)
    rounded_module.net = round_net(module.net, "float16")
    prime, n = _prev(2), 8 * module.chunk_len
    half = Stream(module, prime, sampling=Sampling(0.9), seed=3, carry="state", precision="float16")
    assert half.engine == "fused (C kernel), float16 weights"
    ref = Stream(
        rounded_module, prime, sampling=Sampling(0.9), seed=3, carry="state", engine="reference"
    )
    assert _same_prefix(half.read(n), ref.read(n)) >= 0.99 * n

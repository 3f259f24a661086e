"""The C frame backend on lookback models: the kernel's per-frame recall and copy mix against
the reference frame loop (`ReferenceBackend`: `LookbackReader` and `FoldedCopy` in NumPy).

How the two are compared, and why: the copy mix takes exp and log of every class per sample,
whose last-ulp rounding differs between C's libm and NumPy's SIMD code, and between CPUs. One
class decided by such a rounding changes every later sample of an autoregressive decode, so no
test here asserts what rounding alone decides:
- the mix itself is compared per sample, as log-probabilities, within a tolerance;
- whole decodes (greedy, Gumbel, nucleus; with and without `loop`) must agree token for token
  up to 99% of their length at least (on the machine this was written on they agree to the
  end), and every search both paths made before their first differing sample must have found
  the same lags: the recall is read at the same places from the same signal.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from lofibeats.generation import engine as engine_module
from lofibeats.generation.backend_c import Hop
from lofibeats.generation.engine import Continuation, FusedFrameBackend
from lofibeats.generation.stream import Stream
from lofibeats.models.lookback import Lookback
from lofibeats.models.sampling import Sampling
from lofibeats.models.seq2seq import Seq2SeqModule
from lofibeats.models.vseq2seq import VSeq2SeqModule

from helpers import LOOKBACK

N = 301  # 76 frames of 4 (the last one cut), 38 hops of 2 frames
SAMPLINGS = {
    "greedy": Sampling(decoding="greedy"),
    "gumbel": Sampling(),
    "gumbel-loop": Sampling(temperature=0.9, loop=0.5),
    "top_p-loop": Sampling(temperature=0.8, top_p=0.9, loop=0.3),
    "loop-1": Sampling(loop=1.0),
}


def build(kind: str = "seq2seq") -> Seq2SeqModule:
    """A small lookback model whose every output leans on the recall (`sharpen`)."""
    torch.manual_seed(0)
    if kind == "seq2seq":
        module = Seq2SeqModule(**LOOKBACK).eval()
    else:  # "vseq2seq-z0": z only sets the initial state
        config = {**LOOKBACK, "latent_dim": 4, "z_every_step": kind == "vseq2seq"}
        module = VSeq2SeqModule(**config).eval()
    sharpen(module)
    return module


def sharpen(module: Seq2SeqModule) -> None:
    """Random biases, the recall's weights in the frame LSTM and the sample tier 4x, a copy gate
    that varies from sample to sample: a freshly built model barely reads its recall, and a
    test of the recall should fail where the recall is wrong."""
    net, k = module.net, LOOKBACK["frame_size"]
    recall = net.lookback.out_dim
    with torch.no_grad():
        for name, p in module.named_parameters():
            if "bias" in name:
                p.normal_(0.0, 0.3)
        net.decoder.lstm.weight_ih_l0[:, k : k + recall] *= 4
        net.sample_tier.upsample.weight[:, -recall:] *= 4
        net.copy.gate.weight.normal_(0.0, 1.0)


def prime(rows: int) -> torch.Tensor:
    noise = torch.rand(rows, 200, generator=torch.Generator().manual_seed(2)) * 0.1 - 0.05
    return 0.4 * torch.sin(torch.arange(200.0)[None] * 0.07) + noise


def fused_backend(module: Seq2SeqModule) -> FusedFrameBackend:
    run = Continuation(module, "fused")
    assert isinstance(run.backend, FusedFrameBackend) and run.name == "fused (C kernel)"
    return run.backend


def decode(
    module: Seq2SeqModule, engine: str, rows: int, sampling: Sampling, monkeypatch
) -> tuple[torch.Tensor, list[torch.Tensor], torch.Generator]:
    """(samples [rows, N], the lags of every search in order, the generator after)."""
    lags: list[torch.Tensor] = []
    search = Lookback.search

    def recording(self: Lookback, signal: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        found = search(self, signal)
        lags.append(found[0].clone())
        return found

    monkeypatch.setattr(Lookback, "search", recording)
    options = {}
    if isinstance(module, VSeq2SeqModule):
        options["z"] = torch.randn(rows, 4, generator=torch.Generator().manual_seed(1))
    generator = torch.Generator().manual_seed(5)
    out = Continuation(module, engine)(
        prime(rows), N, sampling=sampling, generator=generator, **options
    )
    monkeypatch.undo()
    return out, lags, generator


@pytest.mark.parametrize("loop", [0.0, 0.3, 1.0])
def test_the_kernels_copy_mix_is_folded_copys(loop: float) -> None:
    backend = fused_backend(build())
    copy = backend.sampler.copy
    gen = torch.Generator().manual_seed(0)
    n, width, classes = 64, 16, 256
    out = torch.randn(n, classes, generator=gen) * 3
    scale = torch.logspace(-1, 1.5, n)[:, None]  # gates from about 0 to saturated, both ways
    act = torch.rand(n, width, generator=gen) * scale
    centres = torch.rand(n, generator=gen) * 2 - 1
    frame_output = torch.zeros(n, copy.offset + copy.k)
    frame_output[:, copy.offset] = centres
    copies = copy.copies(frame_output)[:, 0]
    expected = copy.mix(out.numpy(), act.numpy(), copies, loop)
    mixed = backend.impl.mix(out, act, centres, loop)
    torch.testing.assert_close(mixed, torch.from_numpy(expected), rtol=1e-5, atol=1e-5)
    assert np.allclose(np.logaddexp.reduce(mixed.numpy(), axis=-1), 0.0, atol=1e-5)


@pytest.mark.parametrize("name", list(SAMPLINGS))
@pytest.mark.parametrize(
    ("kind", "rows"), [("seq2seq", 1), ("seq2seq", 3), ("vseq2seq", 3), ("vseq2seq-z0", 2)]
)
def test_fused_lookback_decodes_as_the_reference(kind: str, rows: int, name: str, monkeypatch):
    """See the module docstring for why "agree" means a 99% common prefix. vseq2seq: z at every
    frame step (the conditioned frame LSTM) or only in the initial state ("-z0")."""
    module, sampling = build(kind), SAMPLINGS[name]
    ref, ref_lags, ref_gen = decode(module, "reference", rows, sampling, monkeypatch)
    out, out_lags, out_gen = decode(module, "fused", rows, sampling, monkeypatch)
    assert torch.equal(ref_gen.get_state(), out_gen.get_state())  # the same draws, in order
    assert out.shape == ref.shape == (rows, N) and ref.std() > 0
    differ = (out != ref).any(0).nonzero()
    first = int(differ[0]) if len(differ) else N
    assert first >= 0.99 * N
    hops = module.net.lookback.hop_frames * module.net.decoder_weights().frame_size
    searched = math.ceil(first / hops)  # searches made before the first differing sample
    assert len(ref_lags) == len(out_lags) == math.ceil(N / hops)
    for a, b in zip(ref_lags[:searched], out_lags[:searched], strict=True):
        assert torch.equal(a, b)


def test_fused_lookback_streams_match_a_whole_decode() -> None:
    """Chunks of a stream are whole hops: reading in any sizes gives one decode's samples."""
    module = build()
    takes = []
    for size in (36, 4096):
        stream = Stream(module, prime(2), sampling=Sampling(loop=0.2), seed=4, engine="fused")
        assert stream.engine == "fused (C kernel)"
        takes.append(torch.cat([stream.read(size) for _ in range(-(-300 // size))], 1)[:, :300])
    assert torch.equal(takes[0], takes[1])


def test_without_the_kernel_a_lookback_model_runs_the_reference_loop(monkeypatch) -> None:
    monkeypatch.setattr(engine_module, "load_kernel", lambda: None)
    assert Continuation(build(), "auto").name == "reference"


def test_the_kernel_refuses_a_hop_it_cannot_read() -> None:
    module = build()
    backend = fused_backend(module)
    with torch.no_grad():
        start = module.net.start(prime(1)[:, -module.context_len :], 8)
    signal = torch.zeros(1, 400)

    def run(end: int, lag: int) -> torch.Tensor:
        hop = Hop(signal, end, torch.tensor([lag]), torch.zeros(1), 0.0)
        return backend.impl.generate(
            start.state, start.context, 2, offsets=torch.zeros(8, 1, 256), draws=None,
            temperature=1.0, top_p=None, hop=hop,
        )[0]  # fmt: skip

    assert run(300, 64).shape == (1, 8)
    assert backend.decode(start, 0, Sampling())[0].shape == (1, 0)
    for end, lag in ((300, 8), (300, 290), (398, 64)):  # lag < 32, past the signal, no room
        with pytest.raises(ValueError, match="lookback hop"):
            run(end, lag)

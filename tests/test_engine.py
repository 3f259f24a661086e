"""The decoding backends: the fused ones give the reference's samples for the same draws, for
every family and frame size; backend selection and the kernel's fallbacks."""

from __future__ import annotations

import sys
import warnings

import pytest
import torch

from lofibeats.errors import ConfigError
from lofibeats.generation import kernel
from lofibeats.generation.backend_c import CBackend, pack_panels
from lofibeats.generation.backend_torch import TorchBackend
from lofibeats.generation.engine import (
    Continuation,
    FusedBackend,
    FusedFrameBackend,
    backend_for,
    continue_audio,
    describe,
)
from lofibeats.generation.fused import fuse_head, fuse_lstm
from lofibeats.generation.longform import generate_long
from lofibeats.generation.reference import ReferenceBackend
from lofibeats.models.decoding import DecodeStart
from lofibeats.models.gan import GanModule
from lofibeats.models.networks import Decoder, InputEmbedding
from lofibeats.models.sampling import Sampling
from lofibeats.models.seq2seq import Seq2SeqModule
from lofibeats.models.vseq2seq import VSeq2SeqModule

BACKENDS = ["c", "torch"]
CPU = torch.device("cpu")
GREEDY = Sampling(decoding="greedy")
SAMPLINGS = {
    "greedy": GREEDY,
    "sampled": Sampling(),
    "top_p": Sampling(temperature=0.7, top_p=0.9),
}


pytestmark = pytest.mark.usefixtures("one_thread")


def _randomize(module) -> None:
    """Random biases and initial states, so the LSTM is far from linear; a visible noise std."""
    with torch.no_grad():
        for name, p in module.named_parameters():
            if "bias" in name or name.endswith(("h0", "c0")):
                p.normal_(0.0, 0.3)
        if module.config.head == "regression":
            module.net.head.noise_std.fill_(0.05)


def _random(cls: type[Seq2SeqModule] = Seq2SeqModule, seed: int = 0, **hparams) -> Seq2SeqModule:
    """`cls(sr=8000, embed_dim=8, **hparams)` seeded with `seed`, `_randomize`d, in eval mode."""
    torch.manual_seed(seed)
    module = cls(sr=8000, embed_dim=8, **hparams).eval()
    _randomize(module)
    return module


def _model(head: str = "mulaw", hidden: int = 24, layers: int = 2, seed: int = 0) -> Seq2SeqModule:
    """A small sample-level seq2seq with random weights."""
    return _random(seed=seed, prev_len_max=96, next_len=32, hidden=hidden, layers=layers, head=head)


def _frame_model(head: str, k: int = 4, hidden: int = 13, width: int = 10) -> Seq2SeqModule:
    """A small frame model (4H = 52 and, for k < 16, k M: padded panels in the kernel)."""
    return _random(
        prev_len_max=64, next_len=8 * k, hidden=hidden, layers=2, head=head, frame_size=k,
        sample_hidden=width,
    )  # fmt: skip


def _latent_model(
    head: str = "mulaw", z_every_step: bool = True, frame_size: int = 1
) -> VSeq2SeqModule:
    return _random(
        VSeq2SeqModule, prev_len_max=64, next_len=32, hidden=24, layers=2, head=head,
        latent_dim=4, z_every_step=z_every_step, frame_size=frame_size, sample_hidden=10,
    )  # fmt: skip


def _gan() -> GanModule:
    torch.manual_seed(0)
    return GanModule(
        sr=8000, prev_len_max=128, next_len=64, hidden=8, layers=1, ratios=[4, 4], noise_dim=4
    ).eval()


def _prev(rows: int = 3, length: int = 96, seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    t = torch.arange(length, dtype=torch.float32)
    return 0.4 * torch.sin(t / 5.0) + 0.2 * torch.rand(rows, length, generator=g) - 0.1


def _fused(module, backend: str) -> Continuation:
    """`Continuation(module, "fused")` on the backend asked for: the C kernel (which must build
    here) or the fused loop in torch."""
    run = Continuation(module, "fused")
    if backend == "torch":
        run.backend = FusedBackend(module.net.decoder_weights(), None)
    assert isinstance(run.backend, FusedBackend)
    assert run.name == {"c": "fused (C kernel)", "torch": "fused (torch)"}[backend]
    return run


def _frame_fused(module) -> Continuation:
    run = Continuation(module, "fused")
    assert isinstance(run.backend, FusedFrameBackend) and run.name == "fused (C kernel)"
    return run


def _pair(
    module, run: Continuation, prev: torch.Tensor, n: int, sampling: Sampling, **options
) -> tuple[torch.Tensor, torch.Tensor]:
    """(reference, `run`) continuations from generators with the same seed, which both must
    leave in the same state (long-form generation shares one generator across chunks)."""
    reference = Continuation(module, "reference")
    assert isinstance(reference.backend, ReferenceBackend) and reference.name == "reference"
    g_ref, g_run = torch.Generator().manual_seed(7), torch.Generator().manual_seed(7)
    ref = reference(prev, n, sampling=sampling, generator=g_ref, **options)
    out = run(prev, n, sampling=sampling, generator=g_run, **options)
    assert torch.equal(g_ref.get_state(), g_run.get_state())
    assert out.shape == ref.shape == (prev.shape[0], n)
    return ref, out


def _assert_same_samples(ref: torch.Tensor, out: torch.Tensor, head: str, sampling) -> None:
    """Greedy mu-law: the same classes. Sampled mu-law: the same uniforms, so a class differs
    only where fp32 summation order moves a CDF step past one. Regression: fp32 rounding."""
    if head == "regression":
        torch.testing.assert_close(out, ref, atol=2e-5, rtol=0)
    elif sampling.is_greedy:
        assert torch.equal(out, ref)
    else:
        assert (out == ref).float().mean() >= 0.99


# ------------------------------------------------------------------- exactness: seq2seq samples
@pytest.mark.parametrize("sampling", list(SAMPLINGS), ids=list(SAMPLINGS))
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("head", ["mulaw", "regression"])
def test_seq2seq_fused_matches_reference(head: str, backend: str, sampling: str) -> None:
    knobs = SAMPLINGS[sampling]
    if head == "mulaw" and knobs.is_greedy:
        module = _model(head, hidden=13, layers=3)  # 4H = 52: padded gate rows in the kernel
    else:
        module = _model(head)
    n = 200 if head == "mulaw" else 100
    ref, out = _pair(module, _fused(module, backend), _prev(), n, knobs)
    _assert_same_samples(ref, out, head, knobs)
    if head == "mulaw" and not knobs.is_greedy:
        assert torch.equal(out[:, :50], ref[:, :50])


def test_temperature_zero_is_greedy_and_draws_nothing() -> None:
    run = Continuation(_model("mulaw"), "auto")
    g = torch.Generator().manual_seed(3)
    out = run(_prev(), 40, sampling=Sampling(temperature=0), generator=g)
    assert torch.equal(out, run(_prev(), 40, sampling=GREEDY))
    assert torch.equal(g.get_state(), torch.Generator().manual_seed(3).get_state())


@pytest.mark.parametrize("backend", BACKENDS)
def test_empty_prev_and_zero_samples(backend: str) -> None:
    module = _model("mulaw")
    run = _fused(module, backend)
    empty = torch.zeros(2, 0)
    ref = continue_audio(module, empty, 20, sampling=GREEDY, engine="reference")
    assert torch.equal(run(empty, 20, sampling=GREEDY), ref)
    assert run(_prev(), 0).shape == (3, 0)
    with pytest.raises(ValueError, match="batch, time"):
        run(torch.zeros(5), 4)
    with pytest.raises(ConfigError, match="top_p"):
        Sampling.parse(top_p=1.5)


# ------------------------------------------------------------------- exactness: frame models
FRAME_CASES = [
    ("mulaw", "greedy", Sampling(decoding="greedy")),
    ("mulaw", "gumbel", Sampling()),
    ("mulaw", "top_p", Sampling(temperature=0.7, top_p=0.8)),
    ("regression", "greedy", Sampling(decoding="greedy")),
    ("regression", "sampled", Sampling()),
]


@pytest.mark.parametrize("rows", [1, 3])  # the reference takes a rank-1 path for one stream
@pytest.mark.parametrize(
    ("head", "sampling"),
    [(head, knobs) for head, _, knobs in FRAME_CASES],
    ids=[f"{head}-{name}" for head, name, _ in FRAME_CASES],
)
@pytest.mark.parametrize("k", [2, 4, 16])
def test_frame_model_fused_matches_reference(k: int, head: str, sampling, rows: int) -> None:
    """The C frame backend against the reference's NumPy loop; 203 samples end mid-frame."""
    module = _frame_model(head, k=k)
    ref, out = _pair(module, _frame_fused(module), _prev(rows, 61), 203, sampling)
    _assert_same_samples(ref, out, head, sampling)


TIERED = [("sample-c", 1, "c"), ("sample-torch", 1, "torch"), ("frame-c", 4, "c")]


@pytest.mark.parametrize(
    ("k", "backend"), [(k, b) for _, k, b in TIERED], ids=[name for name, _, _ in TIERED]
)
def test_slow_top_tier_models_fused_match_reference(k: int, backend: str) -> None:
    """`top_frame_size`: the encoder steps once per 16 samples (inside `net.start`); the
    decoder the backends run is the sample-level or frame model's own."""
    module = _random(
        prev_len_max=64, next_len=32, hidden=13, layers=2, frame_size=k, top_frame_size=16,
        sample_hidden=10,
    )  # fmt: skip
    assert module.net.encoder.lstm.input_size == 16
    run = _fused(module, backend) if k == 1 else _frame_fused(module)
    ref, out = _pair(module, run, _prev(2, 61), 150, Sampling())
    _assert_same_samples(ref, out, "mulaw", Sampling())


def test_frame_backend_edge_cases() -> None:
    module = _frame_model("mulaw")
    run = _frame_fused(module)
    empty = torch.zeros(2, 0)
    ref = continue_audio(module, empty, 9, sampling=GREEDY, engine="reference")
    assert torch.equal(run(empty, 9, sampling=GREEDY), ref)
    assert run(_prev(), 0).shape == (3, 0)
    weights = module.net.decoder_weights()
    assert weights.frame_size == 4
    with torch.no_grad():
        state = module.net.start(torch.zeros(1, 4), 8).state
    with pytest.raises(ValueError, match="valid classes"):
        run.backend.decode(DecodeStart(state, torch.full((1, 4), 256)), 8, GREEDY)
    lib = kernel.load_kernel()
    with pytest.raises(ValueError, match="frame models"):
        FusedFrameBackend(_model("mulaw").net.decoder_weights(), lib)
    with pytest.raises(ValueError, match="FusedFrameBackend"):
        FusedBackend(weights, lib)


# ------------------------------------------------------------------- exactness: vseq2seq
LATENT_CASES = {
    "greedy": (GREEDY, {}),  # z inferred from prev with the default creativity
    "creative": (Sampling(), {"creativity": 1.0}),
    "top_p": (Sampling(temperature=0.7, top_p=0.8), {"creativity": 0.5}),
    "one_z": (Sampling(), {"z": "one"}),
    "z_path": (GREEDY, {"z": "per_step"}),
}


def _latent_options(options: dict, rows: int, n: int) -> dict:
    options = dict(options)
    g = torch.Generator().manual_seed(9)
    if options.get("z") == "one":
        options["z"] = torch.randn(rows, 4, generator=g)
    elif options.get("z") == "per_step":
        options["z"] = torch.randn(rows, n, 4, generator=g)
    return options


@pytest.mark.parametrize("case", list(LATENT_CASES))
@pytest.mark.parametrize("z_every_step", [True, False], ids=["z_every_step", "z_initial"])
@pytest.mark.parametrize("backend", BACKENDS)
def test_vseq2seq_fused_matches_reference(backend: str, z_every_step: bool, case: str) -> None:
    """Same z (inferred with creativity from the same generator, or given: one z or one per
    sample), same uniforms, same generator state afterwards."""
    module = _latent_model("mulaw", z_every_step)
    sampling, options = LATENT_CASES[case]
    options = _latent_options(options, 3, 150)
    ref, out = _pair(module, _fused(module, backend), _prev(3, 61), 150, sampling, **options)
    _assert_same_samples(ref, out, "mulaw", sampling)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("case", ["creative", "one_z", "z_path"])
def test_vseq2seq_regression_fused_matches_reference(backend: str, case: str) -> None:
    module = _latent_model("regression")
    sampling, options = LATENT_CASES[case]
    options = _latent_options(options, 2, 80)
    ref, out = _pair(module, _fused(module, backend), _prev(2, 61), 80, sampling, **options)
    _assert_same_samples(ref, out, "regression", sampling)


@pytest.mark.parametrize("sampling", [GREEDY, Sampling()], ids=["greedy", "gumbel"])
def test_vseq2seq_frame_model_with_z_initial_only_runs_the_frame_backend(sampling) -> None:
    """Without z at every step the frame decoder is unconditioned: z only sets its state."""
    module = _latent_model("mulaw", z_every_step=False, frame_size=4)
    ref, out = _pair(module, _frame_fused(module), _prev(2, 61), 90, sampling, creativity=0.5)
    _assert_same_samples(ref, out, "mulaw", sampling)


FRAME_LATENT_CASES = {
    "greedy": (GREEDY, {}),  # z inferred from prev with the default creativity
    "gumbel": (Sampling(), {"creativity": 1.0}),
    "top_p": (Sampling(temperature=0.7, top_p=0.8), {"creativity": 0.5}),
    "one_z": (Sampling(), {"z": "one"}),
    "z_path": (GREEDY, {"z": "per_step"}),
    "z_path_gumbel": (Sampling(), {"z": "per_step"}),
}


@pytest.mark.parametrize("case", list(FRAME_LATENT_CASES))
@pytest.mark.parametrize("rows", [1, 3])
def test_vseq2seq_frame_model_with_z_every_step_runs_the_frame_backend(
    rows: int, case: str
) -> None:
    """A conditioned frame LSTM in the kernel: each frame reads its first sample's z (one z or
    one per sample, which a style change makes); 90 samples end mid-frame."""
    module = _latent_model("mulaw", z_every_step=True, frame_size=4)
    weights = module.net.decoder_weights()
    assert weights.frame_size == 4 and weights.decoder.cond_dim == 4
    assert isinstance(backend_for(weights, "auto", CPU), FusedFrameBackend)
    assert isinstance(backend_for(weights, "reference", CPU), ReferenceBackend)
    sampling, options = FRAME_LATENT_CASES[case]
    options = _latent_options(options, rows, 90)
    ref, out = _pair(module, _frame_fused(module), _prev(rows, 61), 90, sampling, **options)
    _assert_same_samples(ref, out, "mulaw", sampling)


@pytest.mark.parametrize("case", ["creative", "z_path"])
def test_vseq2seq_regression_frame_model_with_z_every_step_matches(case: str) -> None:
    module = _latent_model("regression", z_every_step=True, frame_size=4)
    sampling, options = LATENT_CASES[case]
    options = _latent_options(options, 2, 70)
    ref, out = _pair(module, _frame_fused(module), _prev(2, 61), 70, sampling, **options)
    _assert_same_samples(ref, out, "regression", sampling)


@torch.no_grad()
def test_frame_backend_reads_the_cond_of_each_frames_first_sample() -> None:
    """Changing z inside a frame (not at its first sample) changes nothing; from a frame's first
    sample on it changes the frames from there; the fused and reference decodes agree."""
    module = _latent_model("mulaw", z_every_step=True, frame_size=4)
    net, prev = module.net, _prev(2, 61)
    path = torch.randn(2, 40, 4, generator=torch.Generator().manual_seed(3))
    inside, at = path.clone(), path.clone()
    inside[:, 21:24] += 2.0  # samples 21-23: inside frame 5
    at[:, 24:] += 2.0  # from frame 6 on
    fused = FusedFrameBackend(net.decoder_weights(), kernel.load_kernel())
    reference = ReferenceBackend(net.decoder_weights())
    out, states = {}, {}
    for name, z in (("path", path), ("inside", inside), ("at", at)):
        start = net.start(prev, 40, z=z)
        out[name], states[name] = fused.decode(start, 40, GREEDY)
        ref, ref_state = reference.decode(start, 40, GREEDY)
        assert torch.equal(out[name], ref)
        torch.testing.assert_close(states[name], ref_state)
    assert torch.equal(out["inside"], out["path"])
    assert all(torch.equal(a, b) for a, b in zip(states["inside"], states["path"], strict=True))
    assert torch.equal(out["at"][:, :24], out["path"][:, :24])
    assert not torch.allclose(states["at"][0], states["path"][0])


def test_vseq2seq_routing_and_long_form() -> None:
    module = _latent_model("mulaw")
    assert describe(module, "auto") == "fused (C kernel)"
    assert isinstance(Continuation(module, "auto").backend, FusedBackend)
    prime = _prev(2, 61)
    ref = generate_long(module, prime, 90, seed=4, engine="reference", creativity=0.5)
    out = generate_long(module, prime, 90, seed=4, engine="auto", creativity=0.5)
    assert out.shape == (2, 90) and (out == ref).float().mean() >= 0.99
    assert Continuation(module, "auto")(prime, 0).shape == (2, 0)


# ------------------------------------------------------------------- the GAN: no decode loop
def test_gan_continues_audio_itself() -> None:
    gan = _gan()
    run = Continuation(gan, "auto")
    assert run.backend is None and run.name == "reference" == describe(gan, "auto")
    assert Continuation(gan, "reference").name == "reference"
    with pytest.raises(ConfigError, match="engine=fused"):
        Continuation(gan, "fused")
    with pytest.raises(ConfigError, match="engine=fused"):
        describe(gan, "fused")
    prime = _prev(2, 128)
    g = torch.Generator().manual_seed(2)
    ref = continue_audio(gan, prime, 100, generator=g, engine="reference")
    out = run(prime, 100, generator=torch.Generator().manual_seed(2))
    assert out.shape == (2, 100) and torch.equal(out, ref)


# ------------------------------------------------------------------- the decode description
@pytest.mark.parametrize("head", ["mulaw", "regression"])
@pytest.mark.parametrize("rows, steps", [(7, 40), (1, 96), (2, 0)])
@torch.no_grad()
def test_seq2seq_start_is_the_encoder_state_and_the_last_token(
    head: str, rows: int, steps: int
) -> None:
    module = _model(head)
    net = module.net
    prev = _prev(rows, max(steps, 1))[:, :steps]
    start = net.start(prev, 10)
    tokens = net.head.tokens(prev)
    h, c = net.encoder_state(tokens)
    assert torch.equal(start.state[0], h) and torch.equal(start.state[1], c)
    expected = tokens[:, -1:] if steps else net.silence(rows, CPU)[:, None]
    assert torch.equal(start.context, expected) and start.cond is None and start.batch == rows


@torch.no_grad()
def test_vseq2seq_start_carries_z_as_state_and_cond() -> None:
    prev, g = _prev(2, 61), torch.Generator().manual_seed(0)
    z, path = torch.randn(2, 4, generator=g), torch.randn(2, 30, 4, generator=g)
    every = _latent_model("mulaw", z_every_step=True).net
    start = every.start(prev, 30, z=z)
    torch.testing.assert_close(start.state, every.latent_state(z), rtol=0, atol=0)
    assert torch.equal(start.cond, z)  # one z: a constant [B, D], not a [B, n, D] copy
    start = every.start(prev, 30, z=path)
    assert torch.equal(start.cond, path)
    torch.testing.assert_close(start.state, every.latent_state(path[:, 0]), rtol=0, atol=0)
    initial = _latent_model("mulaw", z_every_step=False).net
    assert initial.start(prev, 30, z=path).cond is None
    assert initial.decoder_weights().decoder.cond_dim == 0


# ------------------------------------------------------------------- backend pieces
@pytest.mark.parametrize("backend", BACKENDS)
@torch.no_grad()
def test_streams_are_independent(backend: str) -> None:
    """Decoding 7 streams at once equals decoding each alone with its own draws."""
    module = _model("regression", hidden=24)
    fused = _fused(module, backend).backend
    start = module.net.start(_prev(7), 60)
    (h, c), first = start.state, start.context[:, -1]
    draws = fused.draws(60, 7, 1.0, CPU, torch.Generator().manual_seed(2))
    options = dict(temperature=1.0, top_p=None)
    together, _ = fused.impl.decode((h, c), first, 60, draws=draws, **options)
    for b in range(7):
        alone, _ = fused.impl.decode(
            (h[:, b : b + 1], c[:, b : b + 1]),
            first[b : b + 1],
            60,
            draws=draws[:, b : b + 1],
            **options,
        )
        torch.testing.assert_close(alone[0], together[b], atol=1e-5, rtol=0)


@pytest.mark.parametrize("backend", ["reference", "c", "torch", "frame-reference", "frame-c"])
@torch.no_grad()
def test_decode_returns_the_final_state(backend: str) -> None:
    """Two decodes chained through the returned state equal one long decode."""
    frame = backend.startswith("frame")
    module = _frame_model("mulaw") if frame else _model("mulaw")
    weights = module.net.decoder_weights()
    impl = {
        "reference": lambda: ReferenceBackend(weights),
        "c": lambda: FusedBackend(weights, kernel.load_kernel()),
        "torch": lambda: FusedBackend(weights, None),
        "frame-reference": lambda: ReferenceBackend(weights),
        "frame-c": lambda: FusedFrameBackend(weights, kernel.load_kernel()),
    }[backend]()
    start = module.net.start(_prev(2, module.context_len), 52)
    k = weights.frame_size
    whole, _ = impl.decode(start, 52, GREEDY)
    part, mid = impl.decode(start, 20, GREEDY)  # whole frames of a frame model
    rest, _ = impl.decode(DecodeStart(mid, part[:, -k:]), 32, GREEDY)
    assert torch.equal(torch.cat([part, rest], dim=1), whole)


@torch.no_grad()
def test_c_kernel_rejects_bad_tokens() -> None:
    module = _model("mulaw")
    fused = _fused(module, "c").backend
    state = module.net.start(torch.zeros(1, 4), 5).state
    with pytest.raises(ValueError, match="valid classes"):
        fused.decode(DecodeStart(state, torch.tensor([[256]])), 5, GREEDY)
    with pytest.raises(ValueError, match="valid classes"):
        fused.decode(DecodeStart(state, torch.tensor([[-1]])), 5, Sampling())


def test_pack_panels_layout() -> None:
    w = torch.arange(3 * 20, dtype=torch.float32).reshape(3, 20)
    packed = pack_panels(w)
    assert packed.shape == (2, 3, kernel.PANEL)
    assert torch.equal(packed[0], w[:, :16])
    assert torch.equal(packed[1, :, :4], w[:, 16:])
    assert not packed[1, :, 4:].any()


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("per_step", [False, True], ids=["constant", "per_step"])
def test_cond_input_matches_decoder_step(backend: str, per_step: bool) -> None:
    """The optional conditioning input (vseq2seq's z) against `Decoder.step` with cond."""
    hidden, cond_dim, rows, steps = 16, 3, 2, 40
    regression = _model("regression", hidden=hidden).net.head
    proj, head = regression.proj, fuse_head(regression)
    torch.manual_seed(0)
    embed = InputEmbedding(8, None)  # float inputs, as the regression head uses
    decoder = Decoder(8, hidden, 2, cond_dim=cond_dim).eval()
    fused = fuse_lstm(decoder.lstm, embed, cond_dim)
    lib = kernel.load_kernel()
    assert lib is not None
    impl = CBackend(lib, fused, head) if backend == "c" else TorchBackend(fused, head)
    cond = torch.randn(rows, steps, cond_dim) if per_step else torch.randn(rows, cond_dim)
    state = (torch.randn(2, rows, hidden) * 0.5, torch.randn(2, rows, hidden) * 0.5)
    x = torch.tensor([0.1, -0.3])
    with torch.no_grad():
        out, _ = impl.decode(
            state,
            x,
            steps,
            draws=None,
            temperature=1.0,
            top_p=None,
            cond_gates=fused.cond_gates(cond),
        )
        expected, s = [], state
        for t in range(steps):
            h, s = decoder.step(embed(x), s, cond[:, t] if per_step else cond)
            x = torch.tanh(proj(h)).squeeze(-1)
            expected.append(x)
    torch.testing.assert_close(out, torch.stack(expected, dim=1), atol=2e-5, rtol=0)
    with pytest.raises(ValueError, match="cond"):
        fuse_lstm(decoder.lstm, embed, cond_dim).cond_gates(None)


# ------------------------------------------------------------------- selection
def test_continuation_selects_the_backend() -> None:
    module = _model("mulaw")
    weights = module.net.decoder_weights()
    assert isinstance(Continuation(module, "reference").backend, ReferenceBackend)
    for engine in ("auto", "fused"):
        run = Continuation(module, engine)
        assert isinstance(run.backend, FusedBackend) and run.name == "fused (C kernel)"
        assert describe(module, engine) == "fused (C kernel)"
    assert describe(module, "reference") == "reference"
    # not on the CPU: the fused loop in torch (the kernel is CPU-only); frame models: reference
    cuda = torch.device("cuda")
    assert backend_for(weights, "auto", cuda).name == "fused (torch)"
    frame_weights = _frame_model("mulaw").net.decoder_weights()
    assert isinstance(backend_for(frame_weights, "fused", cuda), ReferenceBackend)
    with pytest.raises(ConfigError, match="engine="):
        Continuation(module, "fast")
    with pytest.raises(ConfigError, match="engine="):
        backend_for(weights, "fast", CPU)


def test_frame_models_route_to_the_frame_backend() -> None:
    """engine=auto/fused -> FusedFrameBackend (the C loop); reference -> the NumPy loop."""
    module = _frame_model("mulaw")
    assert describe(module, "auto") == "fused (C kernel)"
    assert describe(module, "reference") == "reference"
    _frame_fused(module)
    assert isinstance(Continuation(module, "auto").backend, FusedFrameBackend)
    assert isinstance(Continuation(module, "reference").backend, ReferenceBackend)
    prime = _prev(2, 61)
    ref = generate_long(module, prime, 90, seed=4, engine="reference")
    out = generate_long(module, prime, 90, seed=4, engine="auto")
    assert out.shape == (2, 90) and (out == ref).float().mean() >= 0.99


def test_generate_long_is_the_same_through_the_engine() -> None:
    """Chunk after chunk from one generator: the engine must draw exactly like the reference."""
    module = _model("mulaw")
    prime = _prev(2)
    ref = generate_long(module, prime, 90, seed=4, engine="reference")
    out = generate_long(module, prime, 90, seed=4, engine="fused")
    assert out.shape == (2, 90)
    assert (out == ref).float().mean() >= 0.99
    with pytest.raises(ConfigError, match="engine="):
        generate_long(module, prime, 10, engine="turbo")


# ------------------------------------------------------------------- the kernel and its fallbacks
@pytest.fixture
def fresh_kernel(tmp_path, monkeypatch):
    """An empty kernel cache and no loaded kernel; the real one is reloaded afterwards."""
    monkeypatch.setenv("LOFIBEATS_CACHE_DIR", str(tmp_path / "cache"))
    kernel.load_kernel.cache_clear()
    yield tmp_path / "cache"
    monkeypatch.undo()
    kernel.load_kernel.cache_clear()


@pytest.mark.skipif(sys.platform == "win32", reason="MSVC ignores CC")
def test_no_compiler_falls_back_to_torch_with_one_warning(fresh_kernel, monkeypatch) -> None:
    monkeypatch.setenv("CC", str(fresh_kernel / "no-such-compiler"))
    module = _model("mulaw")
    with pytest.warns(RuntimeWarning, match="pure-torch") as record:
        run = Continuation(module, "fused")
    assert len(record) == 1 and "\n" not in str(record[0].message)
    assert run.name == "fused (torch)"
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # warned once per process, not per backend
        assert Continuation(module, "auto").name == "fused (torch)"
        assert describe(_frame_model("mulaw"), "fused") == "reference"
    ref = continue_audio(module, _prev(), 40, sampling=GREEDY, engine="reference")
    assert torch.equal(run(_prev(), 40, sampling=GREEDY), ref)


def test_kernel_off_switch(fresh_kernel, monkeypatch) -> None:
    monkeypatch.setenv("LOFIBEATS_KERNEL", "off")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert kernel.load_kernel() is None
        assert Continuation(_model("mulaw"), "auto").name == "fused (torch)"
        assert Continuation(_latent_model("mulaw"), "fused").name == "fused (torch)"


def test_frame_model_without_the_kernel_runs_the_numpy_loop(fresh_kernel, monkeypatch) -> None:
    monkeypatch.setenv("LOFIBEATS_KERNEL", "off")
    module = _frame_model("mulaw")
    for engine in ("auto", "fused"):
        run = Continuation(module, engine)
        assert isinstance(run.backend, ReferenceBackend) and run.name == "reference"
        assert describe(module, engine) == "reference"
    ref = continue_audio(
        module, _prev(2, 61), 30, generator=torch.Generator().manual_seed(1), engine="reference"
    )
    out = run(_prev(2, 61), 30, generator=torch.Generator().manual_seed(1))
    assert torch.equal(out, ref)


def test_kernel_builds_once_into_the_cache(fresh_kernel) -> None:
    path = kernel.build_kernel()
    assert path.parent == fresh_kernel and path.is_file()
    built_at = path.stat().st_mtime_ns
    assert kernel.build_kernel() == path
    assert path.stat().st_mtime_ns == built_at
    assert kernel.load_kernel().lofi_abi() == kernel.ABI


# ------------------------------------------------------------------- GPU
@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_uses_the_torch_backend_and_matches() -> None:
    module = _model("mulaw")
    cpu_ref = continue_audio(module, _prev(), 60, sampling=GREEDY, engine="reference")
    run = Continuation(module.cuda(), "auto")
    assert run.name == "fused (torch)"
    out = run(_prev(), 60, sampling=GREEDY).cpu()
    assert (out == cpu_ref).float().mean() >= 0.99
    cuda_ref = continue_audio(module, _prev(), 60, sampling=GREEDY, engine="reference").cpu()
    assert (out == cuda_ref).float().mean() >= 0.99

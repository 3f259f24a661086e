"""The fused generation engine: same samples as the reference loop, both backends, fallback."""

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
    FrameEngine,
    FusedEngine,
    LatentEngine,
    continuation,
    describe,
    supports,
    supports_frames,
)
from lofibeats.generation.fused import fuse_head, fuse_lstm
from lofibeats.generation.longform import generate_long
from lofibeats.models.networks import Decoder, InputEmbedding
from lofibeats.models.seq2seq import Seq2SeqModule
from lofibeats.models.vseq2seq import VSeq2SeqModule

BACKENDS = ["c", "torch"]


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _model(head: str = "mulaw", hidden: int = 24, layers: int = 2, seed: int = 0) -> Seq2SeqModule:
    """A small seq2seq with random weights, scaled up so the LSTM is far from linear."""
    torch.manual_seed(seed)
    module = Seq2SeqModule(
        sr=8000,
        prev_len_max=96,
        next_len=32,
        hidden=hidden,
        layers=layers,
        embed_dim=8,
        head=head,
    ).eval()
    with torch.no_grad():
        for name, p in module.named_parameters():
            if "bias" in name or name.endswith(("h0", "c0")):
                p.normal_(0.0, 0.3)
        if head == "regression":
            module.head.noise_std.fill_(0.05)
    return module


def _prev(rows: int = 3, length: int = 96, seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    t = torch.arange(length, dtype=torch.float32)
    return 0.4 * torch.sin(t / 5.0) + 0.2 * torch.rand(rows, length, generator=g) - 0.1


def _both(module, prev, n, backend, **options) -> tuple[torch.Tensor, torch.Tensor]:
    """(reference, engine) continuations from generators with the same seed."""
    ref = module.continue_audio(prev, n, generator=torch.Generator().manual_seed(7), **options)
    engine = FusedEngine(module, backend)
    assert engine.backend.name == backend
    out = engine.continue_audio(prev, n, generator=torch.Generator().manual_seed(7), **options)
    return ref, out


# ------------------------------------------------------------------- exactness vs the reference
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize(
    "options",
    [{"decoding": "sample"}, {"decoding": "sample", "temperature": 0.7, "top_p": 0.9}],
    ids=["sample", "top_p"],
)
def test_mulaw_sampling_matches_reference(backend: str, options: dict) -> None:
    module = _model("mulaw")
    ref, out = _both(module, _prev(), 200, backend, **options)
    assert out.shape == ref.shape == (3, 200)
    # same uniforms: a class differs only where fp32 summation order moves a CDF step past one
    assert (out == ref).float().mean() >= 0.99
    assert (out[:, :50] == ref[:, :50]).all()


@pytest.mark.parametrize("backend", BACKENDS)
def test_mulaw_greedy_matches_reference(backend: str) -> None:
    module = _model("mulaw", hidden=13, layers=3)  # 4H = 52: padded gate rows in the kernel
    ref, out = _both(module, _prev(), 120, backend, decoding="greedy")
    assert torch.equal(out, ref)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("decoding", ["sample", "greedy"])
def test_regression_matches_reference(backend: str, decoding: str) -> None:
    module = _model("regression")
    ref, out = _both(module, _prev(), 100, backend, decoding=decoding)
    torch.testing.assert_close(out, ref, atol=2e-5, rtol=0)


def test_temperature_zero_is_greedy_and_draws_nothing() -> None:
    module = _model("mulaw")
    engine = FusedEngine(module)
    g = torch.Generator().manual_seed(3)
    out = engine.continue_audio(_prev(), 40, temperature=0, generator=g)
    assert torch.equal(out, engine.continue_audio(_prev(), 40, decoding="greedy"))
    assert torch.equal(g.get_state(), torch.Generator().manual_seed(3).get_state())


def test_generator_state_advances_like_the_reference() -> None:
    """Long-form generation shares one generator across chunks: both paths must consume it alike."""
    module = _model("mulaw")
    g_ref, g_eng = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    module.continue_audio(_prev(), 30, generator=g_ref)
    FusedEngine(module).continue_audio(_prev(), 30, generator=g_eng)
    assert torch.equal(g_ref.get_state(), g_eng.get_state())


def test_empty_prev_and_zero_samples() -> None:
    module = _model("mulaw")
    engine = FusedEngine(module)
    empty = torch.zeros(2, 0)
    ref = module.continue_audio(empty, 20, decoding="greedy")
    assert torch.equal(engine.continue_audio(empty, 20, decoding="greedy"), ref)
    assert engine.continue_audio(_prev(), 0).shape == (3, 0)
    with pytest.raises(ValueError, match="batch, time"):
        engine.continue_audio(torch.zeros(5), 4)
    with pytest.raises(ConfigError, match="top_p"):
        engine.continue_audio(_prev(), 4, top_p=1.5)


# ------------------------------------------------------------------- kernel pieces
@pytest.mark.parametrize("head", ["mulaw", "regression"])
@pytest.mark.parametrize("rows, steps", [(7, 40), (1, 300), (2, 0)])
def test_c_encoder_matches_module(head: str, rows: int, steps: int) -> None:
    """Rows 7 = a 6-row register tile + 1; 300 steps at one row = two time blocks."""
    module = _model(head, hidden=24)
    tokens = module.head.tokens(_prev(rows, max(steps, 1))[:, :steps])
    engine = FusedEngine(module, "c")
    h, c = engine.encode(tokens)
    h_ref, c_ref = module.encode(tokens)
    torch.testing.assert_close(h, h_ref, atol=1e-5, rtol=0)
    torch.testing.assert_close(c, c_ref, atol=1e-5, rtol=0)


@pytest.mark.parametrize("backend", BACKENDS)
def test_streams_are_independent(backend: str) -> None:
    """Decoding 7 streams at once equals decoding each alone with its own draws."""
    module = _model("regression", hidden=24)
    engine = FusedEngine(module, backend)
    tokens = module.head.tokens(_prev(7))
    state, first = engine.encode(tokens), module.first_input(tokens)
    draws = engine.draws(60, 7, 1.0, torch.Generator().manual_seed(2))
    together, _ = engine.decode(state, first, 60, draws=draws)
    for b in range(7):
        alone, _ = engine.decode(
            (state[0][:, b : b + 1], state[1][:, b : b + 1]),
            first[b : b + 1],
            60,
            draws=draws[:, b : b + 1],
        )
        torch.testing.assert_close(alone[0], together[b], atol=1e-5, rtol=0)


def test_decode_returns_the_final_state() -> None:
    """Two decode calls chained through the returned state equal one long call."""
    module = _model("mulaw")
    engine = FusedEngine(module, "c")
    tokens = module.head.tokens(_prev(2))
    state, first = engine.encode(tokens), module.first_input(tokens)
    whole, _ = engine.decode(state, first, 50)
    part, mid = engine.decode(state, first, 20)
    rest, _ = engine.decode(mid, part[:, -1], 30)
    assert torch.equal(torch.cat([part, rest], dim=1), whole)


def test_c_kernel_rejects_bad_tokens() -> None:
    module = _model("mulaw")
    engine = FusedEngine(module, "c")
    state = engine.encode(torch.zeros(1, 4, dtype=torch.long))
    with pytest.raises(ValueError, match="valid classes"):
        engine.decode(state, torch.tensor([256]), 5)
    with pytest.raises(ValueError, match="valid classes"):
        engine.encode(torch.full((1, 3), -1, dtype=torch.long))


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
    proj = _model("regression", hidden=hidden).head.proj
    head = fuse_head(_model("regression", hidden=hidden).head)
    torch.manual_seed(0)
    embed = InputEmbedding(8, None)  # float inputs, as the regression head uses
    decoder = Decoder(8, hidden, 2, cond_dim=cond_dim).eval()
    fused = fuse_lstm(decoder.lstm, embed, cond_dim)
    lib = kernel.load_kernel()
    assert lib is not None
    impl = (
        CBackend(lib, fused, fused, head)
        if backend == "c"
        else TorchBackend(decoder.lstm, embed, fused, head)
    )
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


# ------------------------------------------------------------------- frame models
def _frame_model(head: str, hidden: int = 13, k: int = 4, width: int = 10) -> Seq2SeqModule:
    """A small frame model (4H = 52, k M = 40: padded panels in the kernel), random biases."""
    torch.manual_seed(0)
    module = Seq2SeqModule(
        sr=8000,
        prev_len_max=64,
        next_len=8 * k,
        hidden=hidden,
        layers=2,
        embed_dim=8,
        head=head,
        frame_size=k,
        sample_hidden=width,
    ).eval()
    with torch.no_grad():
        for name, p in module.named_parameters():
            if "bias" in name or name.endswith(("h0", "c0")):
                p.normal_(0.0, 0.3)
        if head == "regression":
            module.head.noise_std.fill_(0.05)
    return module


def _frame_pair(module, prev, n, **options) -> tuple[torch.Tensor, torch.Tensor]:
    """(reference NumPy loop, C frame engine) from generators with the same seed."""
    ref = module.continue_audio(prev, n, generator=torch.Generator().manual_seed(7), **options)
    engine = FrameEngine(module, "c")
    out = engine.continue_audio(prev, n, generator=torch.Generator().manual_seed(7), **options)
    return ref, out


FRAME_OPTIONS = [
    {"decoding": "greedy"},
    {"decoding": "sample"},
    {"decoding": "sample", "temperature": 0.7, "top_p": 0.8},
]


@pytest.mark.parametrize("rows", [1, 3])  # the reference takes a rank-1 path for one stream
@pytest.mark.parametrize("options", FRAME_OPTIONS, ids=["greedy", "gumbel", "top_p"])
def test_frame_engine_mulaw_matches_the_numpy_loop(rows: int, options: dict) -> None:
    module = _frame_model("mulaw")
    ref, out = _frame_pair(module, _prev(rows, 61), 203, **options)  # 203: a partial last frame
    assert out.shape == ref.shape == (rows, 203)
    if options["decoding"] == "greedy":
        assert torch.equal(out, ref)
    else:  # the same draws: a class differs only where fp32 summation order flips a decision
        assert (out == ref).float().mean() >= 0.99


@pytest.mark.parametrize("rows", [1, 3])
@pytest.mark.parametrize("decoding", ["greedy", "sample"])
def test_frame_engine_regression_matches_the_numpy_loop(rows: int, decoding: str) -> None:
    module = _frame_model("regression", k=16, width=20)
    ref, out = _frame_pair(module, _prev(rows, 50), 100, decoding=decoding)
    torch.testing.assert_close(out, ref, atol=2e-5, rtol=0)


def test_frame_engine_draws_like_the_reference_and_handles_edge_cases() -> None:
    module = _frame_model("mulaw")
    engine = FrameEngine(module)
    for options in FRAME_OPTIONS:
        g_ref, g_eng = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
        module.continue_audio(_prev(2, 61), 30, generator=g_ref, **options)
        engine.continue_audio(_prev(2, 61), 30, generator=g_eng, **options)
        assert torch.equal(g_ref.get_state(), g_eng.get_state())
    empty = torch.zeros(2, 0)
    ref = module.continue_audio(empty, 9, decoding="greedy")
    assert torch.equal(engine.continue_audio(empty, 9, decoding="greedy"), ref)
    assert engine.continue_audio(_prev(), 0).shape == (3, 0)
    state = module.encode(torch.zeros(1, 4, dtype=torch.long))
    with pytest.raises(ValueError, match="valid classes"):
        engine.backend.generate(
            state,
            torch.full((1, 4), 256),
            2,
            offsets=torch.zeros(8, 1, 256),
            draws=None,
            temperature=1.0,
            top_p=None,
        )
    with pytest.raises(ValueError, match="frame models"):
        FrameEngine(_model("mulaw"))


# ------------------------------------------------------------------- vseq2seq
def _latent_model(head: str = "mulaw", z_every_step: bool = True) -> VSeq2SeqModule:
    torch.manual_seed(0)
    module = VSeq2SeqModule(
        sr=8000,
        prev_len_max=64,
        next_len=32,
        hidden=24,
        layers=2,
        embed_dim=8,
        head=head,
        latent_dim=4,
        z_every_step=z_every_step,
        log_z_samples=0,
    ).eval()
    with torch.no_grad():
        for name, p in module.named_parameters():
            if "bias" in name:
                p.normal_(0.0, 0.3)
    return module


LATENT_OPTIONS = [
    {"decoding": "greedy"},
    {"decoding": "sample", "creativity": 1.0},
    {"decoding": "sample", "temperature": 0.7, "top_p": 0.8},
    {"decoding": "greedy", "z": "per_step"},
]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("z_every_step", [True, False], ids=["z_every_step", "z_initial"])
@pytest.mark.parametrize("options", LATENT_OPTIONS, ids=["greedy", "creative", "top_p", "z_path"])
def test_latent_engine_matches_vseq2seq(backend: str, z_every_step: bool, options: dict) -> None:
    """Same z (inferred with creativity from the same generator, or given per step), same
    uniforms, same generator state afterwards."""
    module = _latent_model("mulaw", z_every_step)
    options = dict(options)
    if options.get("z") == "per_step":
        options["z"] = torch.randn(3, 150, 4, generator=torch.Generator().manual_seed(9))
    engine = LatentEngine(module, backend)
    assert engine.backend.name == backend
    g_ref, g_eng = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    ref = module.continue_audio(_prev(3, 61), 150, generator=g_ref, **options)
    out = engine.continue_audio(_prev(3, 61), 150, generator=g_eng, **options)
    assert torch.equal(g_ref.get_state(), g_eng.get_state())
    if options["decoding"] == "greedy":
        assert torch.equal(out, ref)
    else:
        assert (out == ref).float().mean() >= 0.99


def test_latent_engine_regression_routing_and_long_form() -> None:
    module = _latent_model("regression")
    ref = module.continue_audio(_prev(2, 61), 80, generator=torch.Generator().manual_seed(1))
    out = LatentEngine(module).continue_audio(
        _prev(2, 61), 80, generator=torch.Generator().manual_seed(1)
    )
    torch.testing.assert_close(out, ref, atol=2e-5, rtol=0)
    module = _latent_model("mulaw")
    assert supports(module) and isinstance(continuation(module, "auto").__self__, LatentEngine)
    prime = _prev(2, 61)
    ref = generate_long(module, prime, 90, seed=4, engine="reference", creativity=0.5)
    out = generate_long(module, prime, 90, seed=4, engine="auto", creativity=0.5)
    assert (out == ref).float().mean() >= 0.99
    assert LatentEngine(module).continue_audio(prime, 0).shape == (2, 0)


# ------------------------------------------------------------------- selection and fallback
def test_continuation_selects_the_engine() -> None:
    module = _model("mulaw")
    assert supports(module)
    assert continuation(module, "reference") == module.continue_audio
    assert isinstance(continuation(module, "auto").__self__, FusedEngine)
    assert isinstance(continuation(module, "fused").__self__, FusedEngine)
    with pytest.raises(ConfigError, match="engine="):
        continuation(module, "fast")


def test_continuation_falls_back_for_other_families() -> None:
    class Custom(Seq2SeqModule):
        def continue_audio(self, prev, n_samples, **options):
            return prev.new_zeros(prev.shape[0], n_samples)

    module = Custom(sr=8000, prev_len_max=16, next_len=8, hidden=8, layers=1)
    assert not supports(module)
    assert continuation(module, "auto") == module.continue_audio
    with pytest.raises(ConfigError, match="engine=fused"):
        continuation(module, "fused")


def test_frame_models_route_to_the_frame_engine() -> None:
    """engine=auto/fused -> FrameEngine (the C loop); reference -> the module's NumPy loop;
    a frame vseq2seq (z conditioning) keeps its own loop."""
    module = _frame_model("mulaw")
    assert supports(module) and supports_frames(module)
    assert describe(module, "auto") == "fused (C kernel)"
    assert describe(module, "reference") == "reference"
    for engine in ("auto", "fused"):
        run = continuation(module, engine)
        assert isinstance(run.__self__, FrameEngine) and run.__self__.backend.name == "c"
    assert continuation(module, "reference") == module.continue_audio
    prime = _prev(2, 61)
    ref = generate_long(module, prime, 90, seed=4, engine="reference")
    out = generate_long(module, prime, 90, seed=4, engine="auto")
    assert out.shape == (2, 90) and (out == ref).float().mean() >= 0.99
    vae = VSeq2SeqModule(
        sr=8000, prev_len_max=16, next_len=8, hidden=8, layers=1, frame_size=4, latent_dim=2
    )
    assert not supports(vae) and continuation(vae, "auto") == vae.continue_audio


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
        engine = FusedEngine(module)
    assert len(record) == 1 and "\n" not in str(record[0].message)
    assert engine.backend.name == "torch"
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # warned once per process, not per engine
        assert FusedEngine(module).backend.name == "torch"
    with pytest.raises(ConfigError, match="backend=c"):
        FusedEngine(module, "c")
    ref = module.continue_audio(_prev(), 40, decoding="greedy")
    assert torch.equal(engine.continue_audio(_prev(), 40, decoding="greedy"), ref)


def test_kernel_off_switch(fresh_kernel, monkeypatch) -> None:
    monkeypatch.setenv("LOFIBEATS_KERNEL", "off")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert FusedEngine(_model("mulaw")).backend.name == "torch"


def test_frame_engine_without_the_kernel_runs_the_numpy_loop(fresh_kernel, monkeypatch) -> None:
    monkeypatch.setenv("LOFIBEATS_KERNEL", "off")
    module = _frame_model("mulaw")
    engine = FrameEngine(module)
    assert engine.backend is None and describe(module, "auto") == "reference"
    with pytest.raises(ConfigError, match="backend=c"):
        FrameEngine(module, "c")
    ref = module.continue_audio(_prev(2, 61), 30, generator=torch.Generator().manual_seed(1))
    out = engine.continue_audio(_prev(2, 61), 30, generator=torch.Generator().manual_seed(1))
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
    cpu_ref = module.continue_audio(_prev(), 60, decoding="greedy")
    engine = FusedEngine(module.cuda())
    assert engine.backend.name == "torch"
    out = engine.continue_audio(_prev(), 60, decoding="greedy").cpu()
    assert (out == cpu_ref).float().mean() >= 0.99

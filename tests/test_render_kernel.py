"""The plan renderer's loop in the C kernel (`lofi_render`, `backend_render`) against its oracle
`plan_net.render_reference`, for every build variant (`kernel.VARIANTS`), and through `Stream`.

Both loops draw each sample by inverse CDF from the same uniform, so tokens agree except where
a uniform lands within float32 rounding of a CDF step (summation order differs); from such a
sample on a row goes its own way. So: the first samples exactly, 99% of them at least, and the
returned past exactly where a row's tokens all agree.
"""

from __future__ import annotations

import functools
import sys
from concurrent.futures import ThreadPoolExecutor

import pytest
import torch

from lofibeats.errors import ConfigError
from lofibeats.generation import kernel
from lofibeats.generation.backend_render import (
    CRenderLoop,
    render_loop_for,
    render_loop_name,
)
from lofibeats.generation.engine import describe
from lofibeats.generation.stream import Stream
from lofibeats.models.plan import PlanModule
from lofibeats.models.plan_net import Renderer, companded, render_reference
from lofibeats.models.sampling import Sampling

pytestmark = pytest.mark.usefixtures("one_thread")

N = 600  # samples per render: 2+ frames at hop 256, past (256) turned over twice
EXACT = 50  # samples every row must give exactly
CPU = torch.device("cpu")


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


@functools.cache
def _renderer(hidden: int, hop: int) -> Renderer:
    """Random weights, the output scaled up so each draw is peaked (entropy 3-4 nats, as a
    trained renderer's) and depends on the past it reads."""
    torch.manual_seed(hidden + hop)
    renderer = Renderer(n_mels=8, hidden=hidden, past=256, hop=hop).eval()
    with torch.no_grad():
        renderer.out.weight.mul_(8.0)
        for layer in (renderer.past, renderer.mix[1], renderer.out):
            layer.bias.normal_(0.0, 0.3)
    return renderer


def _inputs(
    hidden: int, hop: int, rows: int, n: int = N
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(7 * rows + hidden)
    past = companded(torch.randint(0, 256, (rows, 256), generator=gen))
    cond = torch.randn(rows, -(-n // hop), hidden, generator=gen)
    return past, cond, torch.rand(rows, n, generator=gen)


@functools.cache
def _reference(hidden: int, hop: int, rows: int) -> tuple[torch.Tensor, torch.Tensor]:
    with torch.no_grad():
        return render_reference(_renderer(hidden, hop), *_inputs(hidden, hop, rows))


def _same_prefix(a: torch.Tensor, b: torch.Tensor) -> int:
    """How many samples every row of `a` and `b` agree on from the start."""
    differ = (a != b).any(dim=0).nonzero()
    return a.shape[1] if len(differ) == 0 else int(differ[0])


@pytest.mark.parametrize("variant", kernel.VARIANTS)
@pytest.mark.parametrize("hidden", [32, 256])
@pytest.mark.parametrize("hop", [16, 256])
@pytest.mark.parametrize("rows", [1, 3])
def test_the_c_loop_is_the_reference_loop(variant: str, hidden: int, hop: int, rows: int) -> None:
    renderer = _renderer(hidden, hop)
    loop = CRenderLoop(_lib(variant), renderer)
    tokens, past = loop(renderer, *_inputs(hidden, hop, rows))
    ref_tokens, ref_past = _reference(hidden, hop, rows)
    assert tokens.dtype == torch.long and tokens.shape == (rows, N)
    assert past.dtype == torch.float32 and past.shape == (rows, 256)
    assert _same_prefix(tokens, ref_tokens) >= EXACT
    assert (tokens == ref_tokens).float().mean() >= 0.99
    agree = (tokens == ref_tokens).all(1)
    assert torch.equal(past[agree], ref_past[agree])
    assert torch.equal(past, companded(tokens[:, -256:]))


def test_a_short_render_keeps_the_older_past_and_zero_samples_return_it() -> None:
    renderer = _renderer(32, 16)
    loop = render_loop_for(renderer, "fused", CPU)
    if render_loop_name(loop) != "fused (C kernel)":
        pytest.skip("no C kernel here")
    past, cond, uniforms = _inputs(32, 16, 2, n=100)
    tokens, after = loop(renderer, past, cond, uniforms)
    ref_tokens, ref_after = render_reference(renderer, past, cond, uniforms)
    assert torch.equal(tokens, ref_tokens) and torch.equal(after, ref_after)
    assert torch.equal(after[:, :156], past[:, 100:])
    tokens, after = loop(renderer, past, cond, uniforms[:, :0])
    assert tokens.shape == (2, 0) and torch.equal(after, past)
    with pytest.raises(ValueError, match="frames of cond"):
        loop(renderer, past, cond[:, :2], uniforms)
    with pytest.raises(ValueError, match="another renderer"):
        loop(_renderer(32, 256), past, cond, uniforms)


def test_the_engine_picks_the_loop() -> None:
    renderer = _renderer(32, 16)
    assert render_loop_for(renderer, "reference", CPU) is render_reference
    assert render_loop_name(render_reference) == "reference"
    assert render_loop_for(renderer, "auto", torch.device("meta")) is render_reference
    with pytest.raises(ConfigError, match="engine="):
        render_loop_for(renderer, "turbo", CPU)
    if kernel.load_kernel() is not None:
        assert render_loop_name(render_loop_for(renderer, "auto", CPU)) == "fused (C kernel)"


# ------------------------------------------------------------------- through Stream
SR = 8000
TINY = dict(
    sr=SR,
    prev_len_max=4096,
    next_len=512,
    period_min="0.1s",
    period_max="0.25s",
    beats=2,
    render_len=256,
    render_hidden=16,
    hidden=32,
    layers=1,
    codes=16,
    codebook_frames=100,
    render="samples",
)  # fmt: skip  (tests/test_plan.py's tiny model, its sample renderer)


@functools.cache
def _module() -> PlanModule:
    torch.manual_seed(0)
    module = PlanModule(**TINY).eval()
    module.net.codebook.fit(torch.randn(200, 80))
    return module


def _prime() -> torch.Tensor:
    return 0.2 * torch.randn(2, 4096, generator=torch.Generator().manual_seed(0))


def _played(engine: str, size: int, total: int = 1500) -> torch.Tensor:
    stream = Stream(
        _module(), _prime(), sampling=Sampling(temperature=0.9), carry="state", seed=3,
        engine=engine,
    )  # fmt: skip
    pieces, have = [], 0
    while have < total:
        pieces.append(stream.read(size))
        have += size
    return torch.cat(pieces, 1)[:, :total]


def test_a_fused_stream_is_the_reference_stream_for_any_read_size() -> None:
    if kernel.load_kernel() is None:
        pytest.skip("no C kernel here")
    stream = Stream(_module(), _prime(), carry="state", engine="fused")
    assert stream.engine == "fused (C kernel)"
    assert describe(_module(), "fused") == "fused (C kernel)"
    assert describe(_module(), "reference") == "reference"
    reads = [_played("fused", size) for size in (1, 37, 4096)]
    assert torch.equal(reads[0], reads[1]) and torch.equal(reads[0], reads[2])
    ref = _played("reference", 4096)
    assert (reads[0] == ref).float().mean() >= 0.99
    assert reads[0].std() > 0.01


@pytest.fixture
def no_kernel(tmp_path, monkeypatch):
    """LOFIBEATS_KERNEL=off and no loaded kernel; the real one is reloaded afterwards."""
    monkeypatch.setenv("LOFIBEATS_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("LOFIBEATS_KERNEL", "off")
    kernel.load_kernel.cache_clear()
    yield
    monkeypatch.undo()
    kernel.load_kernel.cache_clear()


def test_engine_fused_without_the_kernel_says_what_to_do(no_kernel) -> None:
    with pytest.raises(ConfigError, match="engine=fused.*unset LOFIBEATS_KERNEL.*engine=auto"):
        Stream(_module(), _prime(), carry="state", engine="fused")
    stream = Stream(_module(), _prime(), carry="state", engine="auto")
    assert stream.engine == "reference"
    assert stream.read(64).shape == (2, 64)


@pytest.mark.skipif(sys.platform == "win32", reason="MSVC ignores CC")
def test_engine_fused_without_a_compiler_says_what_to_do(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("LOFIBEATS_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("CC", str(tmp_path / "no-such-compiler"))
    kernel.load_kernel.cache_clear()
    try:
        with (
            pytest.warns(RuntimeWarning, match="pure-torch"),
            pytest.raises(ConfigError, match="engine=fused.*install a C compiler"),
        ):
            render_loop_for(_renderer(32, 16), "fused", CPU)
    finally:
        monkeypatch.undo()
        kernel.load_kernel.cache_clear()

"""The lookback: it finds the lag where the music repeats and recalls what followed there;
generation reads the same recall frame by frame as training computes in parallel; streams of
lookback models are the same audio in any chunk sizes; bad keys get one line."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lofibeats.errors import ConfigError
from lofibeats.generation.engine import Continuation
from lofibeats.generation.stream import Stream, resolve_carry
from lofibeats.models.checkpoint import load_module
from lofibeats.models.frame_tier import FrameSampler
from lofibeats.models.lookback import RECALL_SAMPLES, CopyHead, Lookback
from lofibeats.models.sampling import Sampling
from lofibeats.models.seq2seq import Seq2SeqModule
from lofibeats.models.vseq2seq import VSeq2SeqModule

from helpers import LOOKBACK, save_checkpoint, tiny_trainer


def build(kind: str = "seq2seq", **overrides):
    torch.manual_seed(0)
    if kind == "vseq2seq":
        return VSeq2SeqModule(**{**LOOKBACK, "latent_dim": 4, **overrides}).eval()
    return Seq2SeqModule(**{**LOOKBACK, **overrides}).eval()


def periodic(batch: int, samples: int, period: int, seed: int = 0) -> torch.Tensor:
    """[batch, samples] of noise that repeats every `period` samples."""
    gen = torch.Generator().manual_seed(seed)
    pattern = torch.rand(batch, period, generator=gen) * 2 - 1
    return pattern.repeat(1, -(-samples // period))[:, :samples]


def test_search_finds_the_period_of_a_loop() -> None:
    lookback = Lookback(frame_size=4, min_lag=40, max_lag=1000, window=64, hop=16)
    loop = periodic(3, lookback.span, 600) + 0.05 * torch.randn(3, lookback.span)
    lags, scores = lookback.search(loop)
    assert lags.tolist() == [600, 600, 600]
    assert scores.min() > 0.95
    _, noise_scores = lookback.search(torch.rand(3, lookback.span) * 2 - 1)
    assert noise_scores.max() < 0.6  # the best of ~1000 chance matches of 64 samples


def test_recall_copies_what_followed_a_repeat() -> None:
    """The recall of a loop is the loop's next samples, from the frame being predicted on: what
    a continuation of a repeating prime needs; and the local match says the copy holds."""
    lookback = Lookback(frame_size=4, min_lag=40, max_lag=1000, window=64, hop=16)
    values = periodic(2, 2800, 600).view(2, 700, 4)
    first = 500
    recall = lookback.recall(values, first)
    assert recall.shape == (2, 200, lookback.out_dim)
    flat = values.flatten(1)
    for i in (0, 37, 199 - 8):  # decoder frame i predicts samples from (first + i) * 4 on
        at = (first + i) * 4
        torch.testing.assert_close(recall[:, i, :RECALL_SAMPLES], flat[:, at : at + RECALL_SAMPLES])
    assert recall[..., RECALL_SAMPLES:].min() > 0.99  # the search's score, the local match


def test_the_frame_by_frame_reader_gives_the_training_recall() -> None:
    """Searches at the first frame and every hop (here 3 frames, which 100 frames do not fill
    evenly), on speech-like noise: the reader and the parallel recall agree exactly."""
    lookback = Lookback(frame_size=4, min_lag=40, max_lag=240, window=32, hop=12)
    values = (torch.rand(3, 300, 4, generator=torch.Generator().manual_seed(1)) * 2 - 1).cumsum(1)
    values = values / values.abs().amax()
    first = 200
    batch = lookback.recall(values, first)
    history = values[:, first - lookback.history_frames : first]
    reader = lookback.reader(history, 300 - first)
    online = []
    for t in range(first, 300):
        if t > first:
            reader.push(values[:, t - 1])
        online.append(reader.read())
    torch.testing.assert_close(torch.stack(online, dim=1), batch, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("kind", ["seq2seq", "vseq2seq"])
def test_generation_reads_what_training_computes(kind: str) -> None:
    """Greedy generation, then the teacher-forced training pass over the generated samples: its
    argmax reproduces every generated sample (same recall, same decoder, same sample tier)."""
    module = build(kind)
    net = module.net
    prev = 0.4 * torch.sin(torch.arange(200.0)[None] * 0.11).repeat(2, 1)
    prev = prev[:, -module.context_len :]
    z = torch.randn(2, 4) if kind == "vseq2seq" else None
    options = {"z": z} if z is not None else {}
    audio = Continuation(module, "reference")(prev, 32, sampling=Sampling(0.0), **options)
    prev_tokens, tokens = net.head.tokens(prev), net.head.tokens(audio)
    inputs = net.decoder_inputs(prev_tokens, tokens)
    recall = net.recall(prev_tokens, tokens)
    with torch.no_grad():
        if kind == "vseq2seq":
            out, _ = net.decode(inputs, net.latent_state(z), cond=net.cond(z), recall=recall)
        else:
            out, _ = net.decode(inputs, net.encoder_state(prev_tokens), recall=recall)
    assert torch.equal(out.argmax(-1), tokens)


@pytest.mark.parametrize("kind", ["seq2seq", "vseq2seq"])
@pytest.mark.parametrize("carry", ["window", "state"])
def test_lookback_streams_are_the_same_in_any_chunk_sizes(kind: str, carry: str) -> None:
    module = build(kind)
    prime = 0.4 * torch.sin(torch.arange(150.0)[None] * 0.07).repeat(2, 1)
    takes = []
    for size in (37, 4096):
        stream = Stream(module, prime, sampling=Sampling(0.9), seed=3, carry=carry)
        takes.append(torch.cat([stream.read(size) for _ in range(-(-200 // size))], 1)[:, :200])
    torch.testing.assert_close(takes[0], takes[1], rtol=0, atol=0)
    assert takes[0].std() > 0
    assert Stream(module, prime, carry=carry).engine == "fused (C kernel)"


def test_a_lookback_model_trains_and_its_copy_gate_learns() -> None:
    module = build()
    module.train()
    prev = torch.sin(torch.arange(96.0 + 32)[None] * 0.2).repeat(8, 1)
    data = torch.utils.data.DataLoader(
        torch.utils.data.TensorDataset(prev[:, :96], prev[:, 96:]), batch_size=4
    )
    before = module.net.copy.gate.weight.detach().clone()
    tiny_trainer(max_steps=2).fit(module, data)
    assert not torch.equal(before, module.net.copy.gate.weight)


def test_engine_fused_runs_a_lookback_model_in_the_c_kernel() -> None:
    assert Continuation(build(), "fused").name == "fused (C kernel)"
    assert Continuation(build(), "auto").name == "fused (C kernel)"


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"frame_size": 1, "sample_hidden": 16}, "model.lookback needs a frame model"),
        ({"lookback": 200}, "reaches past data.prev_len_max"),
        ({"head": "regression"}, "model.lookback needs model.head=mulaw"),
        ({"lookback_min": 8}, "model.lookback_min=8"),
        ({"lookback_min": 96}, "less than model.lookback"),
        ({"lookback": "1s"}, "model.lookback='1s' \\(8000 samples\\)"),
        ({"lookback_hop": 6}, "model.lookback_hop=6 \\(6 samples\\): use a multiple"),
        (
            {"frame_size": 64, "next_len": 64, "lookback_min": 64, "lookback_hop": 64},
            "model.frame_size=64: a frame copies from the 32 samples",
        ),
        ({"lookback_window": "0s"}, "model.lookback_window='0s'"),
    ],
)
def test_bad_lookback_keys_say_which_and_what_to_do(overrides: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        Seq2SeqModule(**{**LOOKBACK, **overrides})


def test_no_lookback_leaves_the_network_as_it_was() -> None:
    module = Seq2SeqModule(**{**LOOKBACK, "lookback": 0})
    assert module.net.lookback is None
    assert module.net.recall(torch.zeros(1, 96, dtype=torch.long), torch.zeros(1, 32)) is None


def test_with_its_copy_gate_open_a_model_carries_a_loop_on() -> None:
    """End to end through a Stream: a prime that loops every 160 samples, a (random-weight)
    model whose copy gate is forced open: greedy generation goes on playing the loop."""
    module = build(prev_len_max=800, lookback=800, lookback_min=64)
    with torch.no_grad():
        module.net.copy.gate.bias.fill_(20.0)
    gen = torch.Generator().manual_seed(0)
    pattern = (torch.rand(1, 160, generator=gen) - 0.5) * 0.8
    loop = pattern.repeat(1, 8)  # 1280 samples: the prime is the first 800
    stream = Stream(module, loop[:, :800], sampling=Sampling(decoding="greedy"), carry="state")
    generated = module.net.head.tokens(stream.read(480))
    truth = module.net.head.tokens(loop[:, 800:])
    assert (generated == truth).float().mean() > 0.95


def test_the_copy_head_gives_log_probabilities_peaked_at_the_recalled_class() -> None:
    torch.manual_seed(0)
    copy = CopyHead(features=8, n_classes=256)
    with torch.no_grad():
        copy.gate.bias.fill_(3.0)  # mostly copying
    logits, features = torch.randn(5, 256), torch.rand(5, 8)
    centres = torch.tensor([-0.9, -0.2, 0.0, 0.31, 0.97])
    log_p = copy.mix(logits, features, centres)
    torch.testing.assert_close(log_p.exp().sum(-1), torch.ones(5))
    nearest = ((centres + 1) * 255 / 2).round().long()
    assert torch.equal(log_p.argmax(-1), nearest)


def test_carry_auto_carries_the_state_of_a_lookback_model() -> None:
    assert resolve_carry("auto", build(), "windows") == "state"
    assert resolve_carry("auto", build(lookback=0), "windows") == "window"
    assert resolve_carry("window", build(), "windows") == "window"


@pytest.mark.parametrize("kind", ["seq2seq", "vseq2seq"])
def test_a_lookback_checkpoint_loads_weights_only_and_generates_the_same(tmp_path, kind) -> None:
    module = build(kind)
    loaded = load_module(save_checkpoint(tmp_path / "lookback.ckpt", module))
    assert loaded.net.lookback is not None and loaded.config == module.config
    prime = 0.4 * torch.sin(torch.arange(150.0)[None] * 0.07)
    takes = [Stream(m, prime, sampling=Sampling(0.9), seed=2).read(96) for m in (module, loaded)]
    torch.testing.assert_close(takes[0], takes[1], rtol=0, atol=0)


def test_loop_one_makes_a_closed_gate_model_replay_the_loop() -> None:
    """The `loop` knob, not the weights: a model whose copy gate is shut still plays a looped
    prime on when the take asks for loop=1, and loop=0 is the model as trained."""
    module = build(prev_len_max=800, lookback=800, lookback_min=64)
    with torch.no_grad():
        module.net.copy.gate.bias.fill_(-20.0)
    gen = torch.Generator().manual_seed(0)
    loop = ((torch.rand(1, 160, generator=gen) - 0.5) * 0.8).repeat(1, 8)
    truth = module.net.head.tokens(loop[:, 800:])

    def take(sampling: Sampling) -> torch.Tensor:
        stream = Stream(module, loop[:, :800], sampling=sampling, seed=1, carry="state")
        return module.net.head.tokens(stream.read(480))

    assert (take(Sampling(decoding="greedy", loop=1.0)) == truth).float().mean() > 0.95
    assert (take(Sampling(decoding="greedy")) == truth).float().mean() < 0.5

    def miss(sampling: Sampling) -> float:  # mean distance from the loop, in classes
        return (take(sampling) - truth).abs().float().mean().item()

    assert miss(Sampling(0.5, loop=1.0)) < 2.0  # within the copy bump's width
    assert miss(Sampling(0.5)) > 20.0
    torch.testing.assert_close(take(Sampling(0.5, loop=0.0)), take(Sampling(0.5)))


def test_the_loop_mixture_is_normalised_and_ends_at_the_copy() -> None:
    module = build()
    sampler = FrameSampler(
        module.net.sample_tier, module.net.embed, module.net.head, module.net.copy, 0
    )
    copy = sampler.copy
    rng = np.random.default_rng(0)
    out = rng.normal(size=(3, 256)).astype(np.float32)
    act = rng.random((3, 16)).astype(np.float32)
    bumps = copy.copies(torch.rand(3, 4) * 2 - 1)[:, 0]
    for loop in (0.0, 0.3, 1.0):
        log_p = copy.mix(out, act, bumps, loop)
        np.testing.assert_allclose(np.exp(log_p).sum(-1), 1.0, rtol=1e-5)
    np.testing.assert_allclose(copy.mix(out, act, bumps, 1.0), bumps, rtol=1e-6, atol=1e-6)


def test_loop_without_a_lookback_says_what_to_do() -> None:
    with pytest.raises(ConfigError, match="loop=0.5: only a model with a lookback"):
        Stream(build(lookback=0), torch.zeros(1, 96), sampling=Sampling(loop=0.5)).read(8)
    with pytest.raises(ConfigError, match="loop=1.5"):
        Sampling.parse(loop=1.5)

"""The lookback: it recalls what followed past moments that sound like now; generation reads
the same recall frame by frame as training computes in parallel; streams of lookback models are
the same audio in any chunk sizes; bad keys get one line."""

from __future__ import annotations

import pytest
import torch

from lofibeats.errors import ConfigError
from lofibeats.generation.engine import Continuation
from lofibeats.generation.stream import Stream, resolve_carry
from lofibeats.models.checkpoint import load_module
from lofibeats.models.lookback import CopyHead, Lookback
from lofibeats.models.sampling import Sampling
from lofibeats.models.seq2seq import Seq2SeqModule
from lofibeats.models.vseq2seq import VSeq2SeqModule

from helpers import save_checkpoint, tiny_trainer

SR = 8000
LOOKBACK = dict(
    sr=SR,
    prev_len_max=96,
    next_len=32,
    hidden=16,
    layers=2,
    embed_dim=8,
    frame_size=4,
    sample_hidden=16,
    lookback=96,
    lookback_min=32,
    lookback_dim=8,
)


def build(kind: str = "seq2seq", **overrides):
    torch.manual_seed(0)
    if kind == "vseq2seq":
        return VSeq2SeqModule(**{**LOOKBACK, "latent_dim": 4, **overrides}).eval()
    return Seq2SeqModule(**{**LOOKBACK, **overrides}).eval()


def periodic(batch: int, frames: int, period: int, k: int, seed: int = 0) -> torch.Tensor:
    """[batch, frames, k] of noise that repeats every `period` frames."""
    gen = torch.Generator().manual_seed(seed)
    pattern = torch.rand(batch, period, k, generator=gen) * 2 - 1
    return pattern.repeat(1, -(-frames // period), 1)[:, :frames]


def test_recall_copies_what_followed_a_repeat() -> None:
    """At initialisation (descriptions compared as they are) the recall of a loop is the loop's
    next frames: what a continuation of a repeating prime needs."""
    torch.manual_seed(0)
    lookback = Lookback(frame_size=4, dim=16, min_lag=40, max_lag=400)
    k, period = 4, 150  # 600 samples; a description covers 128 frames
    values = periodic(2, 700, period, k)
    first = 500
    recall = lookback.recall(values, first)
    recalled = recall[..., : lookback.ahead * k]
    assert recall.shape == (2, 200, lookback.out_dim)
    # decoder frame i predicts frame first + i: the truth is that frame and the ones after it
    truth = lookback.following(values[:, first - 1 :], recall.shape[1] - lookback.ahead)
    corr = torch.nn.functional.cosine_similarity(
        recalled[:, : truth.shape[1]].flatten(), truth.flatten(), dim=0
    )
    assert corr > 0.95
    assert recall[..., -1].min() > 0.5  # confident: the match beats the no-match slot


def test_recall_of_noise_is_unconfident() -> None:
    torch.manual_seed(0)
    lookback = Lookback(frame_size=4, dim=16, min_lag=40, max_lag=400)
    noise = torch.rand(2, 700, 4, generator=torch.Generator().manual_seed(1)) * 2 - 1
    loop = periodic(2, 700, 150, 4)
    conf_noise = lookback.recall(noise, 500)[..., -1].mean()
    conf_loop = lookback.recall(loop, 500)[..., -1].mean()
    assert conf_loop > conf_noise + 0.2


def test_the_frame_by_frame_reader_gives_the_training_recall() -> None:
    torch.manual_seed(0)
    lookback = Lookback(frame_size=4, dim=8, min_lag=10, max_lag=60)
    values = torch.rand(3, 300, 4) * 2 - 1
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
    assert Stream(module, prime, carry=carry).engine == "reference"


def test_a_lookback_model_trains_and_its_recall_gets_gradients() -> None:
    module = build()
    module.train()
    prev = torch.sin(torch.arange(96.0 + 32)[None] * 0.2).repeat(8, 1)
    data = torch.utils.data.DataLoader(
        torch.utils.data.TensorDataset(prev[:, :96], prev[:, 96:]), batch_size=4
    )
    before = module.net.lookback.energy.weight.detach().clone()
    tiny_trainer(max_steps=2).fit(module, data)
    assert not torch.equal(before, module.net.lookback.energy.weight)


def test_engine_fused_says_a_lookback_model_has_none() -> None:
    with pytest.raises(ConfigError, match="lookback has no fused backend"):
        Continuation(build(), "fused")


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"frame_size": 1, "sample_hidden": 16}, "model.lookback needs a frame model"),
        ({"lookback": 200}, "reaches past data.prev_len_max"),
        ({"head": "regression"}, "model.lookback needs model.head=mulaw"),
        ({"lookback_min": 8}, "model.lookback_min=8"),
        ({"lookback_min": 96}, "less than model.lookback"),
        ({"lookback": "1s"}, "model.lookback='1s' \\(8000 samples\\)"),
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

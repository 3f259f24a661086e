"""The frame tier (`model.frame_size` > 1): config, training, exact generation, vseq2seq, checkpoints."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
from hydra.utils import instantiate
from torch.utils.data import DataLoader, TensorDataset

from lofibeats.errors import ConfigError
from lofibeats.generation.engine import Continuation, FusedBackend, continue_audio
from lofibeats.models.checkpoint import load_module
from lofibeats.models.frame_tier import left_pad
from lofibeats.models.sampling import Sampling
from lofibeats.models.seq2seq import Seq2SeqModule
from lofibeats.models.vseq2seq import VSeq2SeqModule

from helpers import SR, sine_pairs, tiny_seq2seq, tiny_trainer, tiny_vseq2seq

PREV, NEXT, K = 61, 32, 4  # prev deliberately not a multiple of the frame size
pytestmark = pytest.mark.filterwarnings(
    "ignore:.*does not have many workers:UserWarning",
    "ignore:.*self.log.*but the `self.trainer` reference is not registered:UserWarning",
)


def tiny(cls: type[Seq2SeqModule] = Seq2SeqModule, **overrides) -> Seq2SeqModule:
    """The tiny seq2seq (or vseq2seq) with two layers and a frame tier of K samples."""
    build = tiny_vseq2seq if cls is VSeq2SeqModule else tiny_seq2seq
    return build(**{"layers": 2, "frame_size": K, "sample_hidden": 12, **overrides})


def sines(n: int, *, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """(prev [n, PREV], next [n, NEXT]) of a 300 Hz sine."""
    return sine_pairs(n, PREV, NEXT, freq=300.0, seed=seed)


def fit(model: Seq2SeqModule) -> pl.Trainer:
    data = TensorDataset(*sines(8))
    trainer = tiny_trainer()
    trainer.fit(model, DataLoader(data, batch_size=4), DataLoader(data, batch_size=4))
    return trainer


# --------------------------------------------------------------------------- config
def test_frame_size_one_is_the_sample_level_model() -> None:
    """frame_size=1 builds (and initialises) exactly the model built without the key."""
    torch.manual_seed(0)
    kwargs = dict(sr=SR, prev_len_max=64, next_len=NEXT, hidden=16, layers=2, embed_dim=8)
    plain = Seq2SeqModule(**kwargs, warmup_steps=0)
    one = tiny(frame_size=1)
    assert one.net.sample_tier is None and one.net.decoder_weights().frame_size == 1
    assert isinstance(Continuation(one, "fused").backend, FusedBackend)
    expected = dict(plain.named_parameters())
    assert all(torch.equal(v, expected[k]) for k, v in one.named_parameters())
    assert one.state_dict().keys() == plain.state_dict().keys()
    prev, nxt = sines(2)
    tokens = plain.net.head.tokens(prev), plain.net.head.tokens(nxt)
    assert torch.equal(one.outputs(*tokens), plain.outputs(*tokens))
    framed = tiny()
    weights = framed.net.decoder_weights()
    assert weights.frame_size == K and weights.sample_tier is framed.net.sample_tier
    with pytest.raises(ValueError, match="FusedFrameBackend"):  # not the sample-level backend
        FusedBackend(weights, None)
    assert framed.net.decoder.lstm.input_size == K
    assert framed.net.head.proj.in_features == 12


@pytest.mark.parametrize(
    ("overrides", "keys"),
    [
        ({"next_len": 30}, ("model.frame_size=4", "data.next_len=30")),
        ({"frame_size": 0}, ("model.frame_size=0",)),
        ({"sample_hidden": 0}, ("model.sample_hidden=0",)),
    ],
)
def test_bad_frame_configs_raise_config_errors_naming_the_keys(overrides, keys) -> None:
    with pytest.raises(ConfigError) as info:
        tiny(**overrides)
    assert all(key in str(info.value) for key in keys) and "\n" not in str(info.value)


def test_config_composes_with_a_frame_size(make_cfg) -> None:
    cfg = make_cfg("train", ["debug=fast", "model=vseq2seq", "model.frame_size=16"])
    model = instantiate(cfg.model, _convert_="all")
    assert model.frame_size == 16 and model.hparams.next_len % 16 == 0


def test_left_pad_to_whole_frames() -> None:
    silence = torch.tensor([128])
    tokens = torch.arange(6)[None]
    assert left_pad(tokens, 4, silence).tolist() == [[128, 128, 0, 1, 2, 3, 4, 5]]
    assert left_pad(tokens[:, :4], 4, silence).tolist() == [[0, 1, 2, 3]]
    assert left_pad(tokens[:, :0], 4, silence).tolist() == [[128] * 4]


# --------------------------------------------------------------------------- training
@pytest.mark.parametrize("head", ["mulaw", "regression"])
def test_trains_a_few_steps_with_finite_losses(head: str) -> None:
    model = tiny(head=head)
    trainer = fit(model)
    metrics = trainer.callback_metrics
    assert all(
        torch.isfinite(metrics[k]) for k in ("train/loss", "val/loss", "val/bits_per_sample")
    )
    assert model.net.sample_tier.window.weight.grad is not None


@pytest.mark.parametrize("mode", ["parallel", "exact"])
def test_scheduled_sampling_backpropagates_through_both_tiers(mode: str) -> None:
    model = tiny(teacher_forcing={"mode": mode, "start": 0.5, "end": 0.5})
    loss = model.training_step(sines(4), 0)
    loss.backward()
    for param in (model.net.encoder.lstm.weight_hh_l0, model.net.sample_tier.upsample.weight):
        assert param.grad is not None and param.grad.abs().sum() > 0


def test_coins_are_per_frame_and_jacobi_passes_reach_the_exact_frame_loop() -> None:
    model = tiny()
    truth = model.truth_mask(torch.Size((3, NEXT)), 0.5, torch.device("cpu"))
    assert torch.equal(truth, truth[:, ::K].repeat_interleave(K, dim=1)) and truth[:, :K].all()
    prev, nxt = sines(4)
    head = model.net.head
    prev_tokens, next_tokens = head.tokens(prev), head.tokens(nxt)
    losses = {}
    for mode, passes in [("exact", 2), ("parallel", NEXT // K)]:
        twin = tiny(teacher_forcing={"mode": mode, "passes": passes, "predictions": "greedy"})
        twin.load_state_dict(model.state_dict())
        torch.manual_seed(7)  # the same coins for both modes
        out = twin.eval().outputs(prev_tokens, next_tokens, 0.0)
        losses[mode] = twin.net.head.loss(out, next_tokens).item()
    forced = head.loss(model.outputs(prev_tokens, next_tokens), next_tokens).item()
    assert losses["parallel"] == pytest.approx(losses["exact"], abs=1e-5)
    assert losses["exact"] != pytest.approx(forced, abs=1e-3)


# --------------------------------------------------------------------------- generation
GREEDY = Sampling(decoding="greedy")
SAMPLED = Sampling()


@pytest.mark.parametrize("engine", ["reference", "auto"])  # the NumPy loop, the C frame loop
@pytest.mark.parametrize("rows", [1, 3])  # one stream takes a rank-1 path
@pytest.mark.parametrize("head", ["mulaw", "regression"])
def test_greedy_generation_equals_the_teacher_forced_pass(
    head: str, rows: int, engine: str
) -> None:
    """The per-frame generation loop computes what the parallel training pass computes."""
    model = tiny(head=head).eval()
    prev, _ = sines(rows, seed=1)
    out = continue_audio(model, prev, NEXT, sampling=GREEDY, engine=engine)
    head_ = model.net.head
    prev_tokens, tokens = head_.tokens(prev), head_.tokens(out)
    forced = model.outputs(prev_tokens, tokens)
    if head == "mulaw":
        assert torch.equal(forced.argmax(-1), tokens)
    else:
        assert torch.allclose(forced, tokens, atol=1e-5)


def test_continue_audio_lengths_range_and_determinism() -> None:
    model = tiny().eval()
    prev, _ = sines(2)

    def run(
        n: int = 10, seed: int = 0, source: torch.Tensor = prev, sampling: Sampling = SAMPLED
    ) -> torch.Tensor:
        generator = torch.Generator().manual_seed(seed)
        return continue_audio(
            model, source, n, sampling=sampling, generator=generator, engine="reference"
        )

    out = run(10)  # not a multiple of the frame size
    assert out.shape == (2, 10) and out.dtype == torch.float32 and out.abs().max() <= 1.0
    assert torch.equal(out, run(10)) and not torch.equal(out, run(10, seed=1))
    assert torch.equal(run(8), run(12)[:, :8])  # whole frames are drawn in order
    assert run(5, source=prev[:, :0]).shape == (2, 5)  # no prime: silence
    assert run(5, source=prev[:, :3]).shape == (2, 5)  # a prime shorter than a frame
    assert run(9, sampling=Sampling(top_p=0.5)).shape == (2, 9)
    assert torch.equal(run(7, sampling=Sampling(temperature=0.0)), run(7, seed=3, sampling=GREEDY))
    assert continue_audio(model, prev, 0, engine="reference").shape == (2, 0)


def test_gumbel_sampling_follows_the_softmax() -> None:
    """A model whose sample tier outputs fixed logits: draws follow softmax(logits / T)."""
    model = tiny().eval()
    head = model.net.head
    with torch.no_grad():
        head.proj.weight.zero_()
        head.proj.bias.fill_(-30.0)
        head.proj.bias[[10, 20]] = torch.tensor([math.log(0.75), math.log(0.25)])
    out = continue_audio(
        model,
        torch.zeros(1, 8),
        4000,
        generator=torch.Generator().manual_seed(0),
        engine="reference",
    )
    tokens = head.tokens(out)
    assert set(tokens.unique().tolist()) == {10, 20}
    assert (tokens == 10).float().mean().item() == pytest.approx(0.75, abs=0.03)


# --------------------------------------------------------------------------- vseq2seq, checkpoints
def test_vseq2seq_frames_train_and_generate_with_z_conditioning_each_frame() -> None:
    model = tiny(VSeq2SeqModule)
    trainer = fit(model)
    assert torch.isfinite(trainer.callback_metrics["val/elbo_bits"])
    model.eval()
    net = model.net
    assert Continuation(model, "auto").name == "fused (C kernel)"  # a conditioned frame LSTM
    prev, _ = sines(2, seed=2)
    z = net.latent_from_audio(prev)
    out = continue_audio(model, prev, NEXT, sampling=GREEDY, z=z)
    tokens = net.head.tokens(out)
    inputs = net.decoder_inputs(net.head.tokens(prev), tokens)
    with torch.no_grad():
        forced = net.decode(inputs, net.latent_state(z), cond=net.cond(z))[0]
    assert torch.equal(forced.argmax(-1), tokens)
    other = torch.randn(2, NEXT, 4, generator=torch.Generator().manual_seed(0))
    path = torch.cat([z[:, None].expand(-1, 8, -1), other[:, 8:]], 1)
    moved = continue_audio(model, prev, NEXT, sampling=GREEDY, z=path)
    assert torch.equal(moved[:, :8], out[:, :8]) and not torch.equal(moved, out)


@pytest.mark.parametrize("cls", [Seq2SeqModule, VSeq2SeqModule])
def test_checkpoint_round_trip_through_load_module(cls, tmp_path: Path) -> None:
    model = tiny(cls).eval()
    path = tmp_path / "frame.ckpt"
    torch.save({"state_dict": model.state_dict(), "hyper_parameters": dict(model.hparams)}, path)
    loaded = load_module(path)
    assert type(loaded) is cls and loaded.frame_size == K

    def take(module) -> torch.Tensor:
        generator = torch.Generator().manual_seed(0)
        return continue_audio(module, sines(2)[0], 20, generator=generator, engine="reference")

    assert torch.equal(take(loaded), take(model))

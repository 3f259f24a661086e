"""The seq2seq family: config, network, heads, teacher forcing / scheduled sampling, decoding,
training."""

from __future__ import annotations

import dataclasses
import io
import math

import pytest
import torch
from hydra.utils import instantiate
from torch.utils.data import DataLoader, TensorDataset

from lofibeats.audio.mulaw import dequantize, quantize
from lofibeats.errors import ConfigError
from lofibeats.generation.engine import continue_audio
from lofibeats.models.configs import RETIRED_KEYS, Seq2SeqConfig
from lofibeats.models.heads import MulawHead, RegressionHead
from lofibeats.models.networks import Decoder
from lofibeats.models.registry import FAMILIES, build_module
from lofibeats.models.sampling import Sampling
from lofibeats.models.seq2seq import Seq2SeqModule
from lofibeats.models.seq2seq_net import Seq2SeqNet

from helpers import SR, sine_pairs, tiny_seq2seq, tiny_trainer

pytestmark = pytest.mark.filterwarnings(
    "ignore:.*does not have many workers:UserWarning",
    "ignore:.*self.log.*but the `self.trainer` reference is not registered:UserWarning",
)


# --------------------------------------------------------------------------- config
def test_config_instantiates_with_plain_hparams_in_samples(make_cfg) -> None:
    cfg = make_cfg("train", ["model=seq2seq", "debug=fast", "data.prev_len_max=0.016s"])
    assert cfg.model._target_ == "lofibeats.models.registry.build_module"
    for model in (instantiate(cfg.model, _convert_="all"), instantiate(cfg.model)):
        assert type(model) is Seq2SeqModule and FAMILIES["seq2seq"] is Seq2SeqModule
        assert isinstance(model.config, Seq2SeqConfig) and model.family == "seq2seq"
        hp = dict(model.hparams)
        assert hp == model.config.as_hparams()  # the checkpoint stores the checked config
        assert hp["family"] == "seq2seq" and hp["sr"] == cfg.data.sr == 8000
        assert hp["prev_len_max"] == 128 and model.context_len == 128
        assert hp["next_len"] == model.chunk_len == 64
        assert type(hp["teacher_forcing"]) is dict
        assert not set(RETIRED_KEYS) & set(hp)  # decoding knobs are inference's, not the model's
        buffer = io.BytesIO()
        torch.save(hp, buffer)
        buffer.seek(0)
        assert torch.load(buffer, weights_only=True) == hp
    with pytest.raises(dataclasses.FrozenInstanceError):
        model.config.hidden = 3  # type: ignore[misc]


def test_network_is_a_plain_module_registered_under_net() -> None:
    model = tiny_seq2seq(layers=2)
    assert type(model.net) is Seq2SeqNet and model.net.config is model.config
    assert dict(model.named_children())["net"] is model.net
    assert model.frame_size == model.net.frame_size == 1
    keys = set(model.state_dict())
    assert {"net.embed.proj.weight", "net.head.proj.weight", "net.encoder.h0"} <= keys
    assert all(k.startswith(("net.", "tf_schedule.")) for k in keys), sorted(keys)
    assert {name for name, _ in model.named_parameters()} == {
        f"net.{name}" for name, _ in model.net.named_parameters()
    }  # everything that trains is the network's
    again = build_module(**dict(model.hparams))  # what a checkpoint rebuilds
    assert type(again) is Seq2SeqModule and dict(again.hparams) == dict(model.hparams)


@pytest.mark.parametrize(
    ("overrides", "key"),
    [
        ({"head": "sine"}, "model.head='sine'"),
        ({"teacher_forcing": {"mode": "fast"}}, "model.teacher_forcing.mode='fast'"),
        ({"teacher_forcing": {"ratio": 0.5}}, "model.teacher_forcing.ratio: unknown key"),
        ({"teacher_forcing": {"passes": 1}}, "model.teacher_forcing.passes=1"),
        ({"hidden": "big"}, "model.hidden='big'"),
        ({"top_p": 1.5}, "model.top_p: unknown key"),  # a decoding knob: see Sampling.parse
        ({"decoding": "greedy"}, "model.decoding: unknown key"),
        ({"temperature": 0.5}, "model.temperature: unknown key"),
        ({"family": "vseq2seq"}, "model.family='vseq2seq'"),
        ({"regression_loss": "huber"}, "model.regression_loss='huber'"),
        ({"next_len": "a while"}, "data.next_len='a while'"),
    ],
)
def test_bad_values_raise_config_errors_naming_the_key(overrides, key) -> None:
    with pytest.raises(ConfigError) as info:
        tiny_seq2seq(**overrides)
    assert key in str(info.value) and "\n" not in str(info.value)


@pytest.mark.parametrize(
    ("knobs", "key"),
    [
        ({"top_p": 1.5}, "top_p=1.5"),
        ({"top_p": 0}, "top_p=0"),
        ({"temperature": -1}, "temperature=-1"),
        ({"temperature": "hot"}, "temperature='hot'"),
        ({"decoding": "beam"}, "decoding='beam'"),
    ],
)
def test_bad_decoding_knobs_raise_config_errors_naming_the_key(knobs, key) -> None:
    """The decoding knobs' checks moved from the model config to `Sampling.parse`."""
    for prefix in ("", "inference."):
        with pytest.raises(ConfigError) as info:
            Sampling.parse(**knobs, prefix=prefix)
        assert f"{prefix}{key}" in str(info.value) and "\n" not in str(info.value)


def test_sampling_knobs_parse_and_greedy_rule() -> None:
    assert Sampling.parse() == Sampling() == Sampling(1.0, None, "sample")
    knobs = Sampling.parse(temperature=1, top_p=1, decoding="greedy")
    assert knobs == Sampling(1.0, 1.0, "greedy") and type(knobs.temperature) is float
    assert not Sampling().is_greedy and not Sampling(temperature=0.1, top_p=1e-6).is_greedy
    assert Sampling(decoding="greedy").is_greedy and Sampling(temperature=0.0).is_greedy


def test_init_forget_bias_and_learned_initial_state() -> None:
    model = tiny_seq2seq(forget_bias=2.0, learned_init=True)
    bias = model.net.encoder.lstm.bias_ih_l0 + model.net.encoder.lstm.bias_hh_l0
    assert torch.allclose(bias[16:32], torch.full((16,), 2.0))
    assert torch.count_nonzero(bias[:16]) == 0 and torch.count_nonzero(bias[32:]) == 0
    assert "net.encoder.h0" in dict(model.named_parameters())
    zero = tiny_seq2seq(learned_init=False)
    assert not any("h0" in name for name, _ in zero.named_parameters())
    h, c = zero.net.encoder_state(torch.zeros(3, 0, dtype=torch.long))
    assert h.shape == (1, 3, 16) and torch.count_nonzero(h) == 0 and torch.count_nonzero(c) == 0


# --------------------------------------------------------------------------- heads
def test_mulaw_sampling_follows_the_softmax_and_top_p_cuts_the_tail() -> None:
    head = MulawHead(hidden=4)
    probs = torch.zeros(256)
    probs[[10, 20, 30]] = torch.tensor([0.5, 0.3, 0.2])
    logits = probs.clamp_min(1e-12).log().expand(40_000, 256)
    gen = torch.Generator().manual_seed(0)
    draws = head.sample(logits, Sampling(), generator=gen)
    freq = torch.bincount(draws, minlength=256).float() / len(draws)
    assert torch.allclose(freq, probs, atol=0.01)
    nucleus = head.sample(logits, Sampling(top_p=0.7), generator=gen)
    assert set(nucleus.unique().tolist()) == {10, 20}
    assert head.sample(logits[:5], Sampling(top_p=1e-6), generator=gen).tolist() == [10] * 5
    assert head.sample(logits[:5], Sampling(temperature=0.0)).tolist() == [10] * 5
    assert head.sample(logits[:5], Sampling(decoding="greedy")).tolist() == [10] * 5

    def seeded(seed: int) -> torch.Tensor:
        return head.sample(logits[:100], Sampling(), torch.Generator().manual_seed(seed))

    assert torch.equal(seeded(3), seeded(3))


def test_mulaw_bits_are_cross_entropy_in_bits() -> None:
    head = MulawHead(hidden=4)
    target = torch.tensor([[3, 7]])
    uniform = torch.zeros(1, 2, 256)
    assert head.nll_bits(uniform, target).item() == pytest.approx(8.0)
    assert head.loss(uniform, target).item() == pytest.approx(8.0 * math.log(2))


def test_regression_head_predictive_distribution() -> None:
    head = RegressionHead(hidden=4)
    target = dequantize(torch.tensor([[40, 100, 200]]))
    head.noise_std.fill_(1e-5)
    assert head.nll_bits(target, target).item() < 0.01  # all mass in the right class
    head.noise_std.fill_(0.3)
    assert 4.0 < head.nll_bits(target, target).item() < 10.0
    gen = torch.Generator().manual_seed(0)
    mean = torch.zeros(20_000)
    draws = head.sample(mean, Sampling(temperature=0.5), generator=gen)
    assert draws.std().item() == pytest.approx(0.15, rel=0.05)
    assert torch.equal(head.sample(mean, Sampling(decoding="greedy")), mean)
    assert torch.equal(head.sample(mean, Sampling(temperature=0.0)), mean)
    head.train()
    before = head.noise_std.item()
    head.loss(torch.zeros(64), torch.full((64,), 0.1))
    assert head.noise_std.item() == pytest.approx(before + 0.01 * (0.1 - before))


# --------------------------------------------------------------------------- teacher forcing
@pytest.mark.parametrize("head", ["mulaw", "regression"])
def test_decode_step_loop_equals_one_teacher_forced_pass(head: str) -> None:
    net = tiny_seq2seq(head, layers=2).eval().net
    prev, nxt = sine_pairs(3, 40, 24)
    prev_tokens, next_tokens = net.head.tokens(prev), net.head.tokens(nxt)
    state = net.encoder_state(prev_tokens)
    inputs = net.decoder_inputs(prev_tokens, next_tokens)
    assert torch.equal(inputs[:, 0], net.context(prev_tokens)[:, -1])  # the last prev token
    assert torch.equal(inputs[:, 1:], next_tokens[:, :-1])
    full, (h_full, c_full) = net.decode(inputs, state)
    outs = []
    for t in range(inputs.shape[1]):
        out_t, state = net.decode_step(inputs[:, t], state)
        outs.append(out_t)
    assert torch.allclose(torch.stack(outs, dim=1), full, atol=1e-5)
    assert torch.allclose(state[0], h_full, atol=1e-5) and torch.allclose(
        state[1], c_full, atol=1e-5
    )


def test_decoder_with_conditioning_steps_like_its_full_pass() -> None:
    torch.manual_seed(0)
    decoder = Decoder(input_dim=5, hidden=12, layers=2, cond_dim=3).eval()
    x, cond = torch.randn(2, 9, 5), torch.randn(2, 3)
    state = (torch.randn(2, 2, 12), torch.randn(2, 2, 12))
    full, final = decoder(x, state, cond)
    outs = []
    for t in range(9):
        out_t, state = decoder.step(x[:, t], state, cond)
        outs.append(out_t)
    assert torch.allclose(torch.stack(outs, dim=1), full, atol=1e-5)
    assert torch.allclose(state[0], final[0], atol=1e-5)
    with pytest.raises(ValueError, match="cond"):
        decoder(x, state)


def test_parallel_and_exact_agree_under_full_teacher_forcing() -> None:
    model = tiny_seq2seq(layers=2).eval()
    prev, nxt = sine_pairs(3, 40, 24)
    prev_tokens, next_tokens = model.net.head.tokens(prev), model.net.head.tokens(nxt)
    inputs = model.net.decoder_inputs(prev_tokens, next_tokens)
    truth = torch.ones(inputs.shape, dtype=torch.bool)
    state = model.net.encoder_state(prev_tokens)
    one_pass = model.outputs(prev_tokens, next_tokens, 1.0)
    exact = model.scheduled_exact(inputs, truth, state)
    parallel = model.scheduled_parallel(inputs, truth, state, passes=3)
    assert torch.allclose(exact, one_pass, atol=1e-5)
    assert torch.allclose(parallel, one_pass, atol=1e-5)


def _twin(mode: str, passes: int, model: Seq2SeqModule) -> Seq2SeqModule:
    tf = {"mode": mode, "passes": passes, "predictions": "greedy"}
    twin = tiny_seq2seq(layers=2, teacher_forcing=tf)
    twin.load_state_dict(model.state_dict())
    return twin.eval()


@pytest.mark.parametrize("ratio", [0.0, 0.5])
def test_jacobi_passes_equal_exact_autoregressive_decoding(ratio: float) -> None:
    """With greedy predictions and passes = Tn, parallel scheduled sampling reaches the fixed
    point of the step-by-step loop: same fed inputs, so the same outputs and loss."""
    model = tiny_seq2seq(layers=2)
    prev, nxt = sine_pairs(4, 40, 12)
    head = model.net.head
    prev_tokens, next_tokens = head.tokens(prev), head.tokens(nxt)
    losses = {}
    for mode, passes in [("exact", 2), ("parallel", 12), ("parallel", 2)]:
        twin = _twin(mode, passes, model)
        torch.manual_seed(7)  # the same coins for both modes
        out = twin.outputs(prev_tokens, next_tokens, ratio)
        losses[mode, passes] = twin.net.head.loss(out, next_tokens).item()
    teacher_forced = head.loss(model.outputs(prev_tokens, next_tokens), next_tokens).item()
    assert losses["parallel", 12] == pytest.approx(losses["exact", 2], abs=1e-5)
    assert losses["exact", 2] != pytest.approx(teacher_forced, abs=1e-3)  # predictions were fed
    if ratio == 0.0:  # two passes are not enough to reach the fixed point from scratch
        assert losses["parallel", 2] != pytest.approx(losses["exact", 2], abs=1e-5)


@pytest.mark.parametrize("mode", ["parallel", "exact"])
def test_scheduled_sampling_backpropagates_into_the_encoder(mode: str) -> None:
    model = tiny_seq2seq(teacher_forcing={"mode": mode, "start": 0.5, "end": 0.5})
    prev, nxt = sine_pairs(4, 40, 12)
    loss = model.training_step((prev, nxt), 0)
    loss.backward()
    grad = model.net.encoder.lstm.weight_hh_l0.grad
    assert grad is not None and torch.isfinite(grad).all() and grad.abs().sum() > 0
    assert model.tf_schedule.step == 1


def test_tf_schedule_advances_per_training_batch_and_is_in_the_state_dict() -> None:
    tf = {"schedule": "linear", "start": 1.0, "end": 0.0, "steps": 10}
    model = tiny_seq2seq(teacher_forcing=tf)
    prev, nxt = sine_pairs(4, 40, 12)
    for i in range(3):
        model.training_step((prev, nxt), i)
    assert model.tf_schedule.value() == pytest.approx(0.7)
    fresh = tiny_seq2seq(teacher_forcing=tf)
    fresh.load_state_dict(model.state_dict())
    assert fresh.tf_schedule.step == 3 and fresh.tf_schedule.value() == pytest.approx(0.7)


# --------------------------------------------------------------------------- generation
def generate(model: Seq2SeqModule, prev: torch.Tensor, n: int, seed: int = 0, **knobs):
    """The model's own decode loop (the reference backend), knobs checked by Sampling.parse."""
    generator = torch.Generator().manual_seed(seed)
    sampling = Sampling.parse(**knobs)
    return continue_audio(
        model, prev, n, sampling=sampling, generator=generator, engine="reference"
    )


def test_continue_audio_options() -> None:
    model = tiny_seq2seq().eval()
    prev, _ = sine_pairs(2, 100, 0)

    def run(seed: int = 0, source: torch.Tensor = prev, **knobs) -> torch.Tensor:
        return generate(model, source, 40, seed, **knobs)

    assert torch.equal(run(0), run(0))
    assert not torch.equal(run(0), run(1))
    greedy = run(0, decoding="greedy")
    assert torch.equal(greedy, run(1, decoding="greedy"))
    assert torch.equal(greedy, run(2, temperature=0.0))
    assert torch.equal(greedy, run(3, top_p=1e-6))
    assert torch.equal(run(0), run(0, source=prev[:, -model.context_len :]))  # cropped to context
    assert run(0, source=prev[:, :0]).shape == (2, 40)  # no prime: starts from silence
    assert continue_audio(model, prev, 0, engine="reference").shape == (2, 0)
    # the defaults are Sampling()'s (the model has no decoding hparams left to override them)
    default = continue_audio(
        model, prev, 40, generator=torch.Generator().manual_seed(0), engine="reference"
    )
    assert torch.equal(default, run(0)) and not torch.equal(default, greedy)
    with pytest.raises(ConfigError, match="model.decoding: unknown key"):
        tiny_seq2seq(decoding="greedy")
    with pytest.raises(ConfigError, match="decoding='beam'"):
        run(0, decoding="beam")
    with pytest.raises(ConfigError, match="top_p=0"):
        run(0, top_p=0)


@pytest.mark.parametrize("head", ["mulaw", "regression"])
def test_trainer_fit_logs_metrics_and_generates(head: str) -> None:
    model = tiny_seq2seq(head, warmup_steps=2)
    data = TensorDataset(*sine_pairs(8, 48, 16))
    trainer = tiny_trainer(gradient_clip_val=1.0)
    trainer.fit(model, DataLoader(data, batch_size=4), DataLoader(data, batch_size=4))
    metrics = trainer.callback_metrics
    expected = {"train/loss", "train/tf_ratio", "train/grad_norm", "lr", "val/loss"}
    expected |= {"val/bits_per_sample"} | ({"val/mse"} if head == "regression" else set())
    assert expected <= set(metrics)
    assert all(torch.isfinite(metrics[k]) for k in expected)
    if head == "mulaw":
        assert metrics["val/loss"] == metrics["val/bits_per_sample"]
    assert model.tf_schedule.step == 3
    prev, _ = sine_pairs(2, 30, 0, seed=1)
    out = generate(model.eval(), prev, 50)
    assert out.shape == (2, 50) and out.dtype == torch.float32
    assert torch.isfinite(out).all() and out.abs().max() <= 1.0


@pytest.mark.parametrize("head", ["mulaw", "regression"])
def test_learns_to_continue_a_sine(head: str) -> None:
    """A few hundred steps on a 200 Hz sine: the mu-law model continues it (not silence/DC)."""
    model = tiny_seq2seq(head, hidden=32, embed_dim=16, lr=1e-2)
    opt = model.configure_optimizers()
    for step in range(300):
        prev, nxt = sine_pairs(16, 64, 32, seed=step)
        loss = model.training_step((prev, nxt), step)
        opt.zero_grad()
        loss.backward()
        opt.step()
    prev, _ = sine_pairs(4, 64, 0, seed=10_000)
    out = generate(model.eval(), prev, 400)
    assert out.shape == (4, 400) and torch.isfinite(out).all() and out.abs().max() <= 1.0
    if head == "mulaw":
        rms = out.pow(2).mean(dim=1).sqrt()
        assert torch.all(rms > 0.2), f"continuation is (nearly) silent: rms {rms.tolist()}"
        assert torch.all(out.std(dim=1) > 0.2) and out.mean().abs() < 0.1
        peak_hz = torch.fft.rfft(out).abs().argmax(dim=1) * SR / 400
        assert torch.all(peak_hz == 200.0), f"continuation is not a 200 Hz tone: {peak_hz}"


def test_tokens_round_trip_through_the_mulaw_head() -> None:
    head = tiny_seq2seq().net.head
    x = torch.linspace(-1, 1, 101)[None]
    assert torch.equal(head.tokens(x), quantize(x))
    assert torch.equal(head.audio(head.tokens(x)), dequantize(quantize(x)))


def test_input_corruption_trains_on_imperfect_inputs_only() -> None:
    """model.input_dropout / input_noise: in training some teacher-forced inputs become silence
    or get noise, so the decoder leans on the encoder; evaluation sees the inputs as they are."""
    model = tiny_seq2seq(input_dropout=0.5, input_noise=0.05)
    inputs = model.net.head.tokens(torch.full((4, 400), 0.5))
    model.train()
    corrupted = model.corrupt_inputs(inputs)
    silence = model.net.silence(1, inputs.device)
    dropped = (corrupted == silence).float().mean().item()
    assert 0.4 < dropped < 0.6
    assert not torch.equal(corrupted[corrupted != silence], inputs[corrupted != silence])
    model.eval()
    assert torch.equal(model.corrupt_inputs(inputs), inputs)
    with pytest.raises(ConfigError, match="model.input_dropout"):
        tiny_seq2seq(input_dropout=1.0)

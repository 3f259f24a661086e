"""The gan family: config, networks, losses, warm-up / alternation / resume, generation, learning."""

from __future__ import annotations

import io
import math
from pathlib import Path

import numpy as np
import pytest
import pytorch_lightning as pl
import torch
from hydra.utils import instantiate
from torch.utils.data import DataLoader, TensorDataset

from lofibeats.commands.train import train
from lofibeats.errors import ConfigError
from lofibeats.generation.engine import Continuation, continue_audio
from lofibeats.generation.longform import generate_long
from lofibeats.metrics.sanity import spectral_flatness
from lofibeats.models.checkpoint import load_module
from lofibeats.models.configs import RETIRED_KEYS
from lofibeats.models.decoding import AutoregressiveNet, OnePassNet
from lofibeats.models.gan import GanModule
from lofibeats.models.gan_losses import (
    MultiResolutionSTFTLoss,
    discriminator_loss,
    feature_matching,
    generator_loss,
    gradient_penalty,
    stft_resolutions,
)
from lofibeats.models.gan_networks import Generator, PhaseShuffle, fit_left, fold, unfold
from lofibeats.models.sampling import Sampling

from helpers import SR, sine_pairs, tiny_trainer

pytestmark = pytest.mark.filterwarnings(
    "ignore:.*does not have many workers:UserWarning",
    "ignore:.*self.log.*but the `self.trainer` reference is not registered:UserWarning",
    "ignore:.*resuming from a checkpoint that ended before the epoch ended:UserWarning",
)


def tiny(**overrides) -> GanModule:
    torch.manual_seed(0)
    kwargs = dict(
        sr=SR, prev_len_max=128, next_len=64, hidden=16, layers=2, ratios=[4, 4], noise_dim=4,
        d_channels=8, d_max_channels=16, d_layers=2, d_scales=2, adv_warmup_steps=0,
    )  # fmt: skip
    kwargs.update(overrides)
    return GanModule(**kwargs)


def fit(
    model: GanModule,
    max_steps: int,
    ckpt_path: Path | None = None,
    n: int = 16,
    batch: int = 4,
    val_every: int = 1,
) -> pl.Trainer:
    """A real Trainer on `n` tone windows, validating one batch every `val_every` batches."""
    torch.manual_seed(1)
    data = TensorDataset(*sine_pairs(n, 100, model.chunk_len, freq=500.0))
    trainer = tiny_trainer(
        max_steps=max_steps,
        limit_val_batches=1,
        val_check_interval=val_every,
        check_val_every_n_epoch=None,
    )
    loader = DataLoader(data, batch_size=batch)
    trainer.fit(model, loader, loader, ckpt_path=ckpt_path, weights_only=True)
    return trainer


def params(module: torch.nn.Module) -> list[torch.Tensor]:
    return [p.detach().clone() for p in module.parameters()]


def changed(before: list[torch.Tensor], module: torch.nn.Module) -> bool:
    return any(not torch.equal(a, b) for a, b in zip(before, module.parameters(), strict=True))


# --------------------------------------------------------------------------- config
def test_config_instantiates_with_plain_hparams_in_samples(make_cfg) -> None:
    cfg = make_cfg("train", ["model=gan", "debug=fast", "model.d_context=4ms"])
    for model in (instantiate(cfg.model, _convert_="all"), instantiate(cfg.model)):
        hp = dict(model.hparams)
        assert hp["family"] == "gan" and hp["sr"] == cfg.data.sr == 8000
        assert hp["prev_len_max"] == model.context_len == 128
        assert hp["next_len"] == model.chunk_len == 64 and hp["d_context"] == 32
        assert type(hp["ratios"]) is list and type(hp["betas"]) is list
        assert model.automatic_optimization is False
        assert hp == model.config.as_hparams() and not set(RETIRED_KEYS) & set(hp)
        buffer = io.BytesIO()
        torch.save(hp, buffer)
        buffer.seek(0)
        assert torch.load(buffer, weights_only=True) == hp
    cfg = make_cfg("train", ["model=gan"])
    defaults = instantiate(cfg.model, _convert_="all")
    assert defaults.hparams["d_context"] == defaults.chunk_len == cfg.data.next_len
    assert defaults.default_crossfade == defaults.chunk_len // 8


@pytest.mark.parametrize(
    ("overrides", "key"),
    [
        ({"adv_loss": "bce"}, "model.adv_loss='bce'"),
        ({"ratios": []}, "model.ratios=[]"),
        ({"ratios": [4, 1]}, "model.ratios[1]=1"),
        ({"ratios": "4x4"}, "model.ratios='4x4'"),
        ({"mpd_periods": [1]}, "model.mpd_periods[0]=1"),
        ({"d_scales": 0}, "model.d_scales=0"),
        ({"betas": [0.5]}, "model.betas=[0.5]"),
        ({"n_critic": 0}, "model.n_critic=0"),
        ({"d_context": "soon"}, "model.d_context='soon'"),
        ({"family": "seq2seq"}, "model.family='seq2seq'"),
        ({"temperature": 0.5}, "model.temperature: unknown key"),  # a decoding knob: Sampling
    ],
)
def test_bad_values_raise_config_errors_naming_the_key(overrides, key) -> None:
    with pytest.raises(ConfigError) as info:
        tiny(**overrides)
    assert key in str(info.value) and "\n" not in str(info.value)


# --------------------------------------------------------------------------- networks
def test_the_network_is_the_generator_and_continues_in_one_pass() -> None:
    model = tiny()
    assert model.net is model.generator and type(model.net) is Generator
    assert isinstance(model.net, OnePassNet) and not isinstance(model.net, AutoregressiveNet)
    keys = set(model.state_dict())  # unchanged layout: generator.*, discriminator.*, steps.*
    assert any(k.startswith("generator.") for k in keys) and "steps._extra_state" in keys
    assert all(k.startswith(("generator.", "discriminator.", "steps.")) for k in keys), keys
    continuation = Continuation(model.eval())
    assert continuation.backend is None and continuation.name == "reference"
    with pytest.raises(ConfigError, match="engine=fused: the gan model has no fused engine"):
        Continuation(model, "fused")


def test_fold_and_fit_left() -> None:
    x = torch.arange(24.0).view(2, 12)
    assert fold(x, 4).shape == (2, 4, 3) and torch.equal(
        fold(x, 4)[0, 1], torch.tensor([1.0, 5, 9])
    )
    assert torch.equal(unfold(fold(x, 4)), x)
    assert torch.equal(unfold(fold(x[:, :10], 4))[:, :10], x[:, :10])  # zero-padded on the right
    assert torch.equal(fit_left(x, 5), x[:, -5:])
    assert torch.equal(fit_left(x[:, :3], 5), torch.tensor([[0, 0, 0.0, 1, 2], [0, 0, 12, 13, 14]]))
    assert fit_left(x[:, :0], 5).abs().sum() == 0


def test_generator_emits_next_len_samples_from_any_prev_length() -> None:
    model = tiny(next_len=50).eval()  # not a whole number of frames (16 samples)
    z = model.generator.noise(2, generator=torch.Generator().manual_seed(0))
    prev, _ = sine_pairs(2, 300, 0, freq=500.0)
    for length in (0, 7, 128, 300):
        out = model.generator(prev[:, :length], z)
        assert out.shape == (2, 50) and out.abs().max() <= 1.0 and torch.isfinite(out).all()
    assert torch.equal(model.generator(prev, z), model.generator(prev[:, -128:], z))
    short = prev[:, :40]
    assert torch.equal(model.generator(short, z), model.generator(fit_left(short, 128), z))


def test_generator_uses_context_and_noise() -> None:
    model = tiny().eval()
    prev, _ = sine_pairs(2, 128, 0, freq=500.0)
    z = model.generator.noise(2, generator=torch.Generator().manual_seed(0))
    base = model.generator(prev, z)
    assert not torch.allclose(base, model.generator(prev, torch.randn_like(z)))
    half = model.generator.noise(2, 0.5, torch.Generator().manual_seed(0))
    assert torch.allclose(half, 0.5 * z)  # the temperature scales the noise
    later = prev.clone()
    later[:, -8:] = 0.0  # the samples right before the boundary reach the output
    assert not torch.allclose(base, model.generator(later, z))


@pytest.mark.parametrize("spectral", [False, True])
def test_discriminators_give_logits_and_features(spectral: bool) -> None:
    model = tiny(mpd_periods=[2, 3], spectral_norm=spectral, phase_shuffle=1)
    x = model.d_input(*sine_pairs(3, 100, 64, freq=500.0))
    assert x.shape == (3, 128)
    outputs = model.discriminator(x)
    assert len(outputs) == 2 + 2
    for out in outputs:
        assert out.logits.dim() == 2 and out.logits.shape[0] == 3
        assert out.features and all(f.shape[0] == 3 for f in out.features)
    model.discriminator.eval()
    first = [o.logits for o in model.discriminator(x)]
    assert all(torch.equal(a, o.logits) for a, o in zip(first, model.discriminator(x), strict=True))


def test_phase_shuffle_shifts_each_example_by_at_most_n() -> None:
    shuffle = PhaseShuffle(2)
    x = torch.arange(40.0).view(4, 1, 10).expand(4, 3, 10).contiguous()
    torch.manual_seed(0)
    y = shuffle(x)
    assert y.shape == x.shape
    for row_in, row_out in zip(x, y, strict=True):
        shifts = [
            k for k in range(-2, 3) if torch.equal(row_out[:, 2:-2], row_in[:, 2 - k : 8 - k])
        ]
        assert len(shifts) == 1
    assert torch.equal(shuffle.eval()(x), x)


# --------------------------------------------------------------------------- losses
def test_adversarial_losses_on_known_logits() -> None:
    real, fake = [torch.full((2, 3), 2.0)], [torch.full((2, 5), -2.0)]
    assert discriminator_loss("hinge", real, fake).item() == 0.0
    assert generator_loss("hinge", fake).item() == 2.0
    assert discriminator_loss("lsgan", real, fake).item() == 5.0
    assert generator_loss("lsgan", fake).item() == 9.0
    assert discriminator_loss("wgan_gp", real, fake).item() == -4.0
    two = [fake[0], torch.zeros(2, 1)]  # averaged over sub-discriminators
    assert generator_loss("wgan_gp", two).item() == 1.0
    with pytest.raises(ConfigError, match="model.adv_loss='bce'"):
        generator_loss("bce", fake)


@pytest.mark.parametrize(("slope", "penalty"), [(1.0, 0.0), (3.0, 4.0)])
def test_gradient_penalty_of_a_linear_critic(slope: float, penalty: float) -> None:
    w = torch.ones(64) / 8.0 * slope  # ||w|| = slope

    def critic(x: torch.Tensor) -> torch.Tensor:
        return (x * w).sum(dim=1)

    real, fake = torch.randn(4, 64), torch.randn(4, 64)
    gp = gradient_penalty(critic, real, fake)
    assert gp.item() == pytest.approx(penalty, abs=1e-5)


def test_feature_matching_is_l1_and_treats_real_as_constant() -> None:
    real = [[torch.ones(2, 3, requires_grad=True)]]
    fake = [[torch.zeros(2, 3, requires_grad=True)]]
    loss = feature_matching(real, fake)
    assert loss.item() == 1.0
    loss.backward()
    assert real[0][0].grad is None and fake[0][0].grad is not None
    assert feature_matching(real, real).item() == 0.0


def test_multi_resolution_stft_loss() -> None:
    assert stft_resolutions(512) == [256, 128, 64] and stft_resolutions(64) == [32, 16, 8]
    loss = MultiResolutionSTFTLoss(64)
    tone, _ = sine_pairs(4, 64, 0, freq=500.0)
    assert loss(tone, tone).item() == pytest.approx(0.0, abs=1e-6)
    quieter = loss(0.5 * tone, tone).item()
    noise = loss(0.5 * torch.randn(4, 64), tone).item()
    assert 0.0 < quieter < noise
    silent = torch.zeros(4, 64, requires_grad=True)
    value = loss(silent, tone)
    value.backward()
    assert torch.isfinite(value) and torch.isfinite(silent.grad).all()
    assert torch.isfinite(loss(tone, torch.zeros(4, 64)))  # silent real audio


# --------------------------------------------------------------------------- training
@pytest.mark.parametrize("adv_loss", ["hinge", "wgan_gp", "lsgan"])
def test_training_updates_g_and_d_and_logs_finite_losses(adv_loss: str) -> None:
    model = tiny(adv_loss=adv_loss, adv_warmup_steps=1)
    g_before, d_before = params(model.generator), params(model.discriminator)
    trainer = fit(model, max_steps=5)  # 1 warm-up batch (G) + 2 adversarial batches (D + G)
    assert trainer.global_step == 5 and (model.steps.g, model.steps.d) == (3, 2)
    assert changed(g_before, model.generator) and changed(d_before, model.discriminator)
    expected = {"train/d_loss", "train/g_loss", "train/adv_g", "train/fm", "train/stft"}
    expected |= {"train/d_real", "train/d_fake", "val/loss", "val/stft"}
    expected |= {"train/gp"} if adv_loss == "wgan_gp" else set()
    metrics = trainer.callback_metrics
    assert expected <= set(metrics), expected - set(metrics)
    assert all(torch.isfinite(metrics[k]) for k in expected)
    assert metrics["val/loss"] == metrics["val/stft"]
    assert metrics["train/adversarial"] == 1.0


def test_n_critic_alternates_by_its_own_counter() -> None:
    model = tiny(n_critic=2)
    trainer = fit(model, max_steps=6)  # D, D+G, D, D+G
    assert (model.steps.g, model.steps.d) == (2, 4) and trainer.global_step == 6


def test_warmup_switch_is_restored_on_resume_and_checkpoints_load(tmp_path: Path) -> None:
    model = tiny(adv_warmup_steps=3)
    d_before = params(model.discriminator)
    trainer = fit(model, max_steps=3)
    assert (model.steps.g, model.steps.d) == (3, 0) and not changed(d_before, model.discriminator)
    metrics = trainer.callback_metrics
    assert metrics["train/adversarial"] == 0.0 and metrics["train/adv_g"] == 0.0
    assert metrics["train/fm"] == 0.0 and "train/d_loss" not in metrics
    ckpt = tmp_path / "warm.ckpt"
    trainer.save_checkpoint(ckpt)

    loaded = load_module(ckpt)
    assert isinstance(loaded, GanModule) and not loaded.training
    assert (loaded.steps.g, loaded.steps.d) == (3, 0) and loaded.adversarial
    prev, _ = sine_pairs(2, 128, 0, freq=500.0)
    expected = continue_audio(model.eval(), prev, 100, generator=torch.Generator().manual_seed(3))
    got = continue_audio(loaded, prev, 100, generator=torch.Generator().manual_seed(3))
    assert torch.equal(expected, got)

    resumed = tiny(adv_warmup_steps=3)
    trainer = fit(resumed, max_steps=5, ckpt_path=ckpt)  # one adversarial batch: D + G
    assert (resumed.steps.g, resumed.steps.d) == (4, 1) and trainer.global_step == 5
    assert changed(d_before, resumed.discriminator)
    assert trainer.callback_metrics["train/adversarial"] == 1.0


# --------------------------------------------------------------------------- generation
def test_continue_audio_lengths_and_determinism() -> None:
    model = tiny().eval()
    prev, _ = sine_pairs(2, 200, 0, freq=500.0)

    def run(seed: int = 0, source: torch.Tensor = prev, n: int = 150, **knobs) -> torch.Tensor:
        generator = torch.Generator().manual_seed(seed)
        return continue_audio(model, source, n, sampling=Sampling(**knobs), generator=generator)

    for n in (1, 64, 150):
        assert run(n=n).shape == (2, n)
    assert run(n=0).shape == (2, 0)
    assert torch.equal(run(0), run(0)) and not torch.equal(run(0), run(1))
    no_noise = run(0, temperature=0.0)
    assert torch.equal(no_noise, run(1, temperature=0.0))
    assert torch.equal(no_noise, run(2, decoding="greedy"))  # greedy = zero noise
    assert not torch.equal(run(0, temperature=0.5), run(0))  # the temperature scales the noise
    assert torch.equal(run(0), run(0, source=prev[:, -model.context_len :]))
    assert run(0, source=prev[:, :0]).shape == (2, 150)
    assert torch.equal(run(0, n=64), run(0, n=150)[:, :64])  # chunks chain
    with pytest.raises(ValueError, match="batch, time"):
        continue_audio(model, prev[0], 10)
    long = generate_long(model, prev, 300, seed=0, crossfade=model.default_crossfade)
    assert long.shape == (2, 300) and torch.isfinite(long).all() and long.abs().max() <= 1.0


def test_learns_to_continue_a_tone() -> None:
    """150 STFT warm-up steps + 10 adversarial batches on a 500 Hz sine: the continuation is a
    500 Hz tone, neither silence nor noise."""
    model = tiny(
        next_len=128, hidden=32, d_channels=8, d_max_channels=32, adv_warmup_steps=150, lr_g=1e-3
    )
    fit(model, max_steps=170, n=256, batch=16, val_every=100)
    prev, _ = sine_pairs(4, 128, 0, seed=5, freq=500.0)
    out = continue_audio(model.eval(), prev, 1024, generator=torch.Generator().manual_seed(0))
    assert out.shape == (4, 1024) and torch.isfinite(out).all()
    rows = out.numpy().astype(np.float64)
    rms = np.sqrt(np.mean(rows**2, axis=1))
    assert np.all(rms > 0.1), f"continuation is (nearly) silent: rms {rms}"
    flatness = [spectral_flatness(row) for row in rows]
    assert max(flatness) < 0.05, f"continuation is noise-like: flatness {flatness}"
    peak_hz = np.abs(np.fft.rfft(rows, axis=1)).argmax(axis=1) * SR / 1024
    assert np.all(peak_hz == 500.0), f"continuation is not a 500 Hz tone: {peak_hz}"


def test_train_py_runs_the_gan_with_callbacks_and_checkpoints(make_cfg) -> None:
    """The whole train.py path on the debug preset, with the default trainer.gradient_clip_val
    (Lightning refuses it under manual optimisation; the GAN clips by model.grad_clip)."""
    overrides = ["model=gan", "debug=fast", "model.adv_warmup_steps=2", "trainer.max_steps=6"]
    cfg = make_cfg("train", overrides)
    assert cfg.trainer.gradient_clip_val
    value = train(cfg)
    assert value is not None and math.isfinite(value)
    last = Path(cfg.paths.output_dir) / "checkpoints" / "last.ckpt"
    assert torch.load(last, weights_only=True)["global_step"] == 6  # 2 warm-up + 2 x (D + G)
    module = load_module(last)
    assert (module.steps.g, module.steps.d) == (4, 2)
    assert (Path(cfg.paths.output_dir) / "samples" / "prime0_latest.wav").is_file()

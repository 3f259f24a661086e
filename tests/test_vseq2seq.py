"""The vseq2seq family: latent pieces, KL schedules, training, resume, creativity, style in z,
the LatentSamples TensorBoard callback."""

from __future__ import annotations

import io
import math
import wave
from pathlib import Path
from unittest import mock

import numpy as np
import pytest
import pytorch_lightning as pl
import torch
from hydra.utils import instantiate
from pytorch_lightning.callbacks import ModelCheckpoint
from pytorch_lightning.loggers import TensorBoardLogger
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from torch.utils.data import DataLoader, TensorDataset

from lofibeats.callbacks.latent_samples import LatentSamples
from lofibeats.commands.evaluate import evaluate
from lofibeats.errors import ConfigError
from lofibeats.generation.engine import continue_audio
from lofibeats.models.checkpoint import load_module
from lofibeats.models.configs import RETIRED_KEYS
from lofibeats.models.kl_schedules import KLSchedule, kl_weight
from lofibeats.models.latent import LatentStats, free_bits_kl, kl_per_dim, reparameterize
from lofibeats.models.sampling import Sampling
from lofibeats.models.seq2seq import Seq2SeqModule
from lofibeats.models.vseq2seq import VSeq2SeqModule
from lofibeats.models.vseq2seq_net import VSeq2SeqNet

from helpers import SR, save_checkpoint, sines, tiny_trainer, tiny_vseq2seq, write_tracks

PREV, NEXT = 64, 32  # tiny_vseq2seq's context and chunk
pytestmark = pytest.mark.filterwarnings(
    "ignore:.*does not have many workers:UserWarning",
    "ignore:.*self.log.*but the `self.trainer` reference is not registered:UserWarning",
    "ignore:Be aware that when using `ckpt_path`",
    "ignore:You're resuming from a checkpoint that ended before the epoch ended",
    "ignore:You defined a `validation_step` but have no `val_dataloader`",
)


def square(n: int, length: int, *, freq: float = 500.0, seed: int = 0) -> torch.Tensor:
    """[n, length] 0.3-amplitude square waves at random phases."""
    gen = torch.Generator().manual_seed(seed)
    phase = torch.rand(n, 1, generator=gen)
    return 0.3 * torch.sign(
        torch.sin(2 * math.pi * (freq * torch.arange(length)[None] / SR + phase))
    )


def pairs(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    return x[:, :PREV], x[:, PREV : PREV + NEXT]


def loader() -> DataLoader:
    return DataLoader(TensorDataset(*pairs(sines(8, PREV + NEXT))), batch_size=4)


# --------------------------------------------------------------------------- config
def test_config_composes_on_seq2seq_with_plain_hparams(make_cfg) -> None:
    cfg = make_cfg("train", ["model=vseq2seq", "debug=fast", "model.kl.schedule=cyclical"])
    model = instantiate(cfg.model, _convert_="all")
    hp = dict(model.hparams)
    assert type(model) is VSeq2SeqModule and hp["family"] == "vseq2seq"
    assert type(model.net) is VSeq2SeqNet and hp == model.config.as_hparams()
    assert not set(RETIRED_KEYS) & set(hp)  # creativity, z-sample logging: not model config
    assert hp["hidden"] == 16 and hp["teacher_forcing"]["mode"] == "parallel"  # from seq2seq.yaml
    assert hp["latent_dim"] == 16 and hp["z_every_step"] and hp["input_dropout"] == 0.1
    assert hp["kl"] == {
        "schedule": "cyclical",
        "start": 0.0,
        "end": 1.0,
        "steps": 2000,
        "cycles": 4,
        "ratio": 0.5,
        "sharpness": 10.0,
        "free_bits": 0.05,
    }
    buffer = io.BytesIO()
    torch.save(hp, buffer)
    buffer.seek(0)
    assert torch.load(buffer, weights_only=True) == hp


@pytest.mark.parametrize(
    ("overrides", "key"),
    [
        ({"kl": {"schedule": "cosine"}}, "model.kl.schedule='cosine'"),
        ({"kl": {"warmup": 5}}, "model.kl.warmup: unknown key"),
        ({"kl": {"ratio": 0}}, "model.kl.ratio=0"),
        ({"kl": {"steps": 0}}, "model.kl.steps=0"),
        ({"kl": {"free_bits": -1}}, "model.kl.free_bits=-1"),
        ({"latent_dim": 0}, "model.latent_dim=0"),
        ({"input_dropout": 1.0}, "model.input_dropout=1.0"),
        ({"family": "seq2seq"}, "model.family='seq2seq'"),
        ({"creativity": 1.0}, "model.creativity: unknown key"),  # inference's: continue_audio
        ({"log_z_samples": 4}, "model.log_z_samples: unknown key"),  # LatentSamples(n=...)
        ({"log_z_seconds": 0.5}, "model.log_z_seconds: unknown key"),  # LatentSamples(seconds=)
    ],
)
def test_bad_values_raise_config_errors_naming_the_key(overrides, key) -> None:
    with pytest.raises(ConfigError) as info:
        tiny_vseq2seq(**overrides)
    assert key in str(info.value) and "\n" not in str(info.value)


def test_network_is_the_seq2seq_network_plus_the_latent_pieces() -> None:
    model = tiny_vseq2seq(layers=2)
    net = model.net
    assert isinstance(model, Seq2SeqModule) and dict(model.named_children())["net"] is net
    keys = set(model.state_dict())
    assert {"net.posterior_head.proj.weight", "net.latent_to_state.proj.weight"} <= keys
    assert all(k.startswith(("net.", "tf_schedule.", "kl_schedule.")) for k in keys), keys
    assert net.decoder.cond_dim == 4 and tiny_vseq2seq(z_every_step=False).net.decoder.cond_dim == 0
    z = torch.randn(3, 4)
    h, c = net.latent_state(z)
    assert h.shape == c.shape == (2, 3, 16)
    assert net.cond(z) is z and tiny_vseq2seq(z_every_step=False).net.cond(z) is None


# --------------------------------------------------------------------------- latent pieces
def test_kl_per_dim_matches_torch_distributions() -> None:
    mu, logvar = torch.randn(5, 3), torch.randn(5, 3)
    q = torch.distributions.Normal(mu, (0.5 * logvar).exp())
    p = torch.distributions.Normal(torch.zeros(3), torch.ones(3))
    assert torch.allclose(
        kl_per_dim(mu, logvar), torch.distributions.kl_divergence(q, p), atol=1e-6
    )


def test_free_bits_floor_each_dimension_and_stop_its_gradient() -> None:
    kl_dims = torch.tensor([[0.01, 0.5, 0.0], [0.03, 0.7, 0.0]], requires_grad=True)
    floored = free_bits_kl(kl_dims, 0.05)  # batch means 0.02, 0.6, 0.0 -> 0.05, 0.6, 0.05
    assert floored.item() == pytest.approx(0.7)
    assert free_bits_kl(kl_dims, 0.0).item() == pytest.approx(0.62)
    floored.backward()
    assert torch.equal(kl_dims.grad, torch.tensor([[0.0, 0.5, 0.0], [0.0, 0.5, 0.0]]))


def test_reparameterize_scales_the_noise_only() -> None:
    mu, logvar = torch.randn(4, 3), torch.randn(4, 3)
    assert torch.equal(reparameterize(mu, logvar, 0.0), mu)
    one = reparameterize(mu, logvar, 1.0, torch.Generator().manual_seed(1))
    two = reparameterize(mu, logvar, 2.0, torch.Generator().manual_seed(1))
    assert torch.allclose(two - mu, 2 * (one - mu))


def test_latent_stats_give_active_units_and_mean_kl_over_all_batches() -> None:
    mu = torch.zeros(40, 3)
    mu[:, 0] = torch.linspace(-1, 1, 40)  # varies: active
    mu[:, 1] = 0.05 * torch.linspace(-1, 1, 40)  # variance ~0.0009: inactive
    kl_dims = torch.rand(40, 3)
    stats = LatentStats()
    for rows in (slice(0, 7), slice(7, 40)):
        stats.update(mu[rows], kl_dims[rows])
    active, kl_mean = LatentStats.summary(stats.packed())
    assert active == 1 and stats.count == 40
    assert torch.allclose(kl_mean, kl_dims.mean(0))


# --------------------------------------------------------------------------- KL schedules
def test_kl_schedule_values_at_given_steps() -> None:
    def at(kind: str, *steps: int, **kw) -> list[float]:
        return [kl_weight(kind, s, start=0.0, end=1.0, steps=2000, **kw) for s in steps]

    assert at("constant", 0, 5000) == [1.0, 1.0]
    assert at("linear", 0, 500, 2000, 9000) == pytest.approx([0.0, 0.25, 1.0, 1.0])
    logistic = at("logistic", 0, 1000, 2000, 9000)
    assert logistic == pytest.approx([0.0, 0.5, 1.0, 1.0])
    quarter = 1 / (1 + math.exp(2.5))  # sigmoid(10 * (0.25 - 0.5)), then rescaled to [0, 1]
    lo = 1 / (1 + math.exp(5))
    assert at("logistic", 500)[0] == pytest.approx((quarter - lo) / (1 - 2 * lo))
    # 4 cycles of 500 steps: ramp over the first 250, hold 1.0, restart; 1.0 after the last
    cyclical = at("cyclical", 0, 125, 250, 499, 500, 625, 1999, 2000, 10**6)
    assert cyclical == pytest.approx([0.0, 0.5, 1.0, 1.0, 0.0, 0.5, 1.0, 1.0, 1.0])
    assert at("cyclical", 100, cycles=2, ratio=1.0) == pytest.approx([0.1])
    with pytest.raises(ConfigError, match="model.kl.schedule='cosine'"):
        kl_weight("cosine", 0, start=0.0, end=1.0, steps=10)


def test_kl_schedule_counts_its_steps_in_the_state_dict() -> None:
    schedule = KLSchedule("linear", start=0.0, end=0.5, steps=10)
    schedule.advance(4)
    assert schedule.value() == pytest.approx(0.2)
    fresh = KLSchedule("linear", start=0.0, end=0.5, steps=10)
    fresh.load_state_dict(schedule.state_dict())
    assert fresh.step == 4 and fresh.value() == pytest.approx(0.2)


# --------------------------------------------------------------------------- training
def test_input_dropout_and_noise_corrupt_teacher_forced_inputs_in_training_only() -> None:
    model = tiny_vseq2seq(input_dropout=0.5)
    tokens = model.net.head.tokens(sines(4, 500))
    silence = model.net.head.tokens(torch.zeros(1)).item()
    model.train()
    dropped = model.corrupt_inputs(tokens)
    share = ((dropped == silence) & (tokens != silence)).float().sum() / (tokens != silence).sum()
    assert 0.4 < share.item() < 0.6
    assert torch.equal(dropped[dropped != silence], tokens[dropped != silence])
    assert torch.equal(model.eval().corrupt_inputs(tokens), tokens)
    noisy = tiny_vseq2seq("regression", input_dropout=0.0, input_noise=0.1).train()
    values = sines(4, 500)
    diff = noisy.corrupt_inputs(values) - values
    assert diff.std().item() == pytest.approx(0.1, rel=0.1)


@pytest.mark.parametrize("head", ["mulaw", "regression"])
def test_trainer_fit_logs_finite_losses_and_advances_beta(head: str) -> None:
    model = tiny_vseq2seq(head, kl={"steps": 4})
    trainer = tiny_trainer(gradient_clip_val=1.0)
    trainer.fit(model, loader(), loader())
    metrics = trainer.callback_metrics
    expected = {"train/loss", "train/recon", "train/kl", "train/beta", "train/tf_ratio"}
    expected |= {"val/loss", "val/recon", "val/kl", "val/elbo_bits", "val/bits_per_sample"}
    expected |= {"val/active_units"} | ({"val/mse"} if head == "regression" else set())
    assert expected <= set(metrics)
    assert all(torch.isfinite(metrics[k]) for k in expected)
    assert model.kl_schedule.step == 3 and metrics["train/beta"] == pytest.approx(0.5)
    assert 0 <= metrics["val/active_units"] <= 4


def test_val_loss_is_the_elbo_in_bits_per_sample() -> None:
    model = tiny_vseq2seq()
    prev, nxt = pairs(sines(6, PREV + NEXT, seed=3))
    trainer = tiny_trainer(gradient_clip_val=1.0)
    (result,) = trainer.validate(
        model, DataLoader(TensorDataset(prev, nxt), batch_size=6), verbose=False
    )
    with torch.no_grad():
        terms = model.eval().elbo_terms(prev, nxt, generator=torch.Generator().manual_seed(0))
        recon_nats = torch.nn.functional.cross_entropy(
            terms.out.reshape(-1, 256), terms.targets.reshape(-1)
        )
        kl = kl_per_dim(*model.net.posterior(model.net.head.tokens(prev))).sum(-1).mean()
    expected = (recon_nats + kl / NEXT) / math.log(2)
    assert result["val/loss"] == pytest.approx(expected.item(), rel=1e-5)
    assert result["val/elbo_bits"] == result["val/loss"]
    assert result["val/kl"] == pytest.approx(kl.item(), rel=1e-5)
    assert result["val/bits_per_sample"] == pytest.approx(recon_nats.item() / math.log(2), rel=1e-5)


def test_resume_restores_the_kl_schedule_and_load_module_rebuilds(tmp_path: Path) -> None:
    checkpoints = ModelCheckpoint(dirpath=tmp_path, save_last=True, save_top_k=0)
    model = tiny_vseq2seq(kl={"steps": 10, "end": 1.0})
    tiny_trainer(gradient_clip_val=1.0, enable_checkpointing=True, callbacks=[checkpoints]).fit(
        model, loader()
    )
    last = tmp_path / "last.ckpt"
    assert torch.load(last, weights_only=True)["state_dict"]["kl_schedule._extra_state"] == {
        "step": 3
    }

    resumed = tiny_vseq2seq(kl={"steps": 10, "end": 1.0})
    trainer = tiny_trainer(gradient_clip_val=1.0, max_steps=5)
    trainer.fit(resumed, loader(), ckpt_path=last, weights_only=True)
    assert resumed.kl_schedule.step == 5 and trainer.global_step == 5
    assert trainer.callback_metrics["train/beta"] == pytest.approx(0.4)  # the 5th step: step 4

    loaded = load_module(last)
    assert type(loaded) is VSeq2SeqModule and not loaded.training
    assert loaded.kl_schedule.step == 3
    assert torch.equal(loaded.net.posterior_head.proj.weight, model.net.posterior_head.proj.weight)


# --------------------------------------------------------------------------- generation
GREEDY = Sampling(decoding="greedy")


def generate(model: VSeq2SeqModule, prev: torch.Tensor, n: int, **options) -> torch.Tensor:
    """The model's own decode loop (the reference backend); `options`: sampling, generator,
    and the family's z / creativity."""
    return continue_audio(model, prev, n, engine="reference", **options)


def test_creativity_zero_uses_the_posterior_mean_and_more_adds_noise() -> None:
    model = tiny_vseq2seq().eval()
    prev = sines(2, 100)

    def run(seed: int, **options) -> torch.Tensor:
        gen = torch.Generator().manual_seed(seed)
        return generate(model, prev, 40, sampling=GREEDY, generator=gen, **options)

    assert torch.equal(run(0, creativity=0.0), run(1, creativity=0.0))  # no noise on z
    assert not torch.equal(run(0, creativity=1.0), run(1, creativity=1.0))
    assert torch.equal(run(0, creativity=1.0), run(0, creativity=1.0))
    assert torch.equal(run(0), run(0, creativity=1.0))  # the default: a posterior sample
    mu = model.net.posterior(model.net.head.tokens(prev[:, -PREV:]))[0]
    assert torch.equal(run(7, z=mu), run(0, creativity=0.0))
    assert torch.equal(run(7, z=mu[:, None].expand(-1, 40, -1)), run(0, creativity=0.0))
    assert torch.equal(model.net.latent_from_audio(prev[:, -PREV:]), mu)  # creativity 0: mu
    prior = model.net.latent_from_audio(
        None, creativity=0.5, batch=3, generator=torch.Generator().manual_seed(2)
    )
    assert torch.equal(prior, 0.5 * torch.randn(3, 4, generator=torch.Generator().manual_seed(2)))
    assert generate(model, prev[:, :0], 10).shape == (2, 10)  # empty prime: the prior
    assert generate(model, prev, 0).shape == (2, 0)
    with pytest.raises(ValueError, match="z must be"):
        generate(model, prev, 5, z=torch.zeros(2, 3))
    with pytest.raises(ConfigError, match="creativity=-1"):
        generate(model, prev, 5, creativity=-1)


def test_z_conditions_every_step_only_when_asked() -> None:
    prev = sines(2, 100)

    def first_vs_later_z(model: VSeq2SeqModule) -> tuple[bool, bool]:
        z = model.net.latent_from_audio(prev[:, -PREV:]).expand(2, -1)
        path = z[:, None].repeat(1, 30, 1)
        path[:, 10:] += 3.0
        same = generate(model, prev, 30, z=z, sampling=GREEDY)
        moved = generate(model, prev, 30, z=path, sampling=GREEDY)
        return torch.equal(same[:, :10], moved[:, :10]), torch.equal(same, moved)

    assert first_vs_later_z(tiny_vseq2seq().eval()) == (True, False)
    assert first_vs_later_z(tiny_vseq2seq(z_every_step=False).eval()) == (True, True)


def test_two_styles_get_distinct_posteriors_that_the_decoder_uses() -> None:
    """200 Hz sines vs 500 Hz squares, 150 plain training steps: the styles' mean mu lie further
    apart than their spread, and decoding one style with the other's z reconstructs worse."""
    model = tiny_vseq2seq(lr=1e-2, input_dropout=0.5, kl={"steps": 50})
    opt = model.configure_optimizers()
    for step in range(150):
        batch = torch.cat([sines(8, PREV + NEXT, seed=step), square(8, PREV + NEXT, seed=step)])
        loss = model.training_step(pairs(batch), step)
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    a, b = sines(32, PREV + NEXT, seed=10**6), square(32, PREV + NEXT, seed=10**6)
    with torch.no_grad():
        net = model.net
        mu_a, mu_b = (net.posterior(net.head.tokens(x[:, :PREV]))[0] for x in (a, b))
        direction = mu_a.mean(0) - mu_b.mean(0)
        spread = (mu_a @ direction).std() + (mu_b @ direction).std()
        assert direction.norm() > 2 * spread / direction.norm()

        def recon(x: torch.Tensor, z: torch.Tensor) -> float:
            prev, nxt = (net.head.tokens(p) for p in pairs(x))
            inputs = net.decoder_inputs(prev, nxt)
            out = net.decode(inputs, net.latent_state(z), cond=net.cond(z))[0]
            return net.head.loss(out, nxt).item()

        own, swapped = recon(a, mu_a) + recon(b, mu_b), recon(a, mu_b) + recon(b, mu_a)
    assert swapped > own + 0.2, (own, swapped)


# --------------------------------------------------------------------------- LatentSamples
class ValClips(pl.LightningDataModule):
    """Sine windows to train and validate on, and `val_clip` (the prime LatentSamples uses)."""

    def __init__(self) -> None:
        super().__init__()
        self.audio = sines(1, 4000, seed=9)[0]

    def train_dataloader(self) -> DataLoader:
        return loader()

    def val_dataloader(self) -> DataLoader:
        return loader()

    def val_clip(self, index: int, n_samples: int) -> np.ndarray:
        return self.audio[:n_samples].numpy()


def wav_samples(encoded: bytes) -> np.ndarray:
    with wave.open(io.BytesIO(encoded)) as wav:
        assert wav.getsampwidth() == 2 and wav.getnchannels() == 1
        return np.frombuffer(wav.readframes(wav.getnframes()), dtype="<i2") / 32767.0


def test_latent_samples_logs_the_kl_histogram_and_z_sample_audio(tmp_path: Path) -> None:
    """After each validation (not the sanity check): `latent/kl_per_dim` and `z_samples/<i>`,
    the first val prime followed by a continuation with the i-th posterior sample of z."""
    model = tiny_vseq2seq()
    callback = LatentSamples(n=3, prime_seconds=0.01, seconds=0.02)  # 80 + 160 samples
    logger = TensorBoardLogger(tmp_path, name="tb", version=0)
    datamodule = ValClips()
    trainer = tiny_trainer(
        gradient_clip_val=1.0,
        max_steps=2,
        logger=logger,
        log_every_n_steps=1,
        callbacks=[callback],
        num_sanity_val_steps=1,
    )
    trainer.fit(model, datamodule=datamodule)  # one epoch of 2 batches, then one validation
    assert model.kl_per_dim is not None and model.kl_per_dim.shape == (4,)

    events = EventAccumulator(logger.log_dir, size_guidance={"histograms": 0, "audio": 0})
    events.Reload()
    (histogram,) = events.Histograms("latent/kl_per_dim")  # none from the sanity check
    assert histogram.step == 2 and histogram.histogram_value.num == 4
    assert histogram.histogram_value.sum == pytest.approx(model.kl_per_dim.sum().item(), rel=1e-5)
    assert sorted(events.Tags()["audio"]) == ["z_samples/0", "z_samples/1", "z_samples/2"]

    takes = callback.takes(trainer, model)
    assert takes.shape == (3, 240)
    assert torch.equal(takes, callback.takes(trainer, model))  # fixed noise: epochs compare
    assert torch.equal(takes[:, :80], datamodule.audio[None, :80].expand(3, -1))
    assert not torch.equal(takes[0, 80:], takes[1, 80:])  # n different takes
    for i in range(3):
        (audio,) = events.Audio(f"z_samples/{i}")
        assert audio.step == 2 and audio.sample_rate == SR and audio.length_frames == 240
        logged = wav_samples(audio.encoded_audio_string)
        assert np.allclose(logged, takes[i].numpy(), atol=1e-4)

    writer = logger._experiment = mock.MagicMock()  # later calls: what would be written
    LatentSamples(n=0).on_validation_end(trainer, model)
    writer.add_histogram.assert_called_once()
    writer.add_audio.assert_not_called()
    other = Seq2SeqModule(sr=SR, prev_len_max=PREV, next_len=NEXT, hidden=16, layers=1)
    callback.on_validation_end(trainer, other)  # not a vseq2seq model: nothing
    assert writer.add_histogram.call_count == 1 and not writer.add_audio.called


def test_eval_reports_the_elbo_and_active_units(make_cfg, tmp_path: Path) -> None:
    ckpt = save_checkpoint(tmp_path / "model.ckpt", tiny_vseq2seq())
    raw_dir = write_tracks(tmp_path / "raw")
    fast = ["progress=false", "n=2", "seconds=0.05", "prime_seconds=0.02", "data.val_windows=4"]
    result = evaluate(
        make_cfg("eval", [*fast, f"ckpt={ckpt}", f"data.raw_dir={raw_dir}", "split=all"])
    )
    tf = result["teacher_forced"]
    assert result["family"] == "vseq2seq" and tf["method"] == "validation_step"
    kl_bits = tf["metrics"]["kl"] / NEXT / math.log(2)
    assert tf["elbo_bits_per_sample"] == pytest.approx(tf["bits_per_sample"] + kl_bits, rel=1e-4)
    assert 0 <= tf["active_units"] <= 4

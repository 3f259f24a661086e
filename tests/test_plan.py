"""The plan family: config checks, codebook, beat period, the plan's beat lags, the renderer's DC
blocker, streams (read sizes, rewind), and train.py -> checkpoint -> generation."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from lofibeats.commands.inference import sampling_from
from lofibeats.commands.train import train
from lofibeats.errors import ConfigError
from lofibeats.generation.engine import check_sampling
from lofibeats.generation.longform import generate_long
from lofibeats.generation.stream import Stream, resolve_carry
from lofibeats.metrics.sanity import audio_sanity
from lofibeats.models.checkpoint import load_module
from lofibeats.models.decoding import PlannedNet
from lofibeats.models.plan import PlanModule
from lofibeats.models.plan_net import (
    AHEAD,
    PLAN_BEAT_PRIOR,
    PLAN_TEMPERATURE,
    Codebook,
    beat_distance,
    beat_period,
    dc_free,
)
from lofibeats.models.sampling import AUTO_TEMPERATURE, Sampling

from helpers import tiny_seq2seq

pytestmark = pytest.mark.filterwarnings(
    "ignore:.*does not have many workers:UserWarning",
    "ignore:.*self.log.*but the `self.trainer` reference is not registered:UserWarning",
)

SR = 8000
TINY = dict(
    sr=SR, prev_len_max=4096, next_len=512, period_min="0.1s", period_max="0.25s", beats=2,
    render_len=256, render_hidden=16, hidden=32, layers=1, codes=16, codebook_frames=100,
)  # fmt: skip
#: train.py on the debug corpus with the tiny plan above (4 beats of 0.25 s need 0.5 s of prev)
TINY_OVERRIDES = [
    "experiment=plan_16k",
    "debug=fast",
    f"data.sr={SR}",
    "data.prev_len_min=4096",
    "data.prev_len_max=4096",
    "data.next_len=512",
    *(f"model.{k}={v}" for k, v in TINY.items() if k not in ("sr", "prev_len_max", "next_len")),
]


RENDERS = ["grains", "samples"]


def tiny(**overrides) -> PlanModule:
    torch.manual_seed(0)
    return PlanModule(**{**TINY, **overrides})


def fitted(render: str = "grains") -> PlanModule:
    """The tiny model in eval mode, its codebook (and grains) fitted on noise."""
    model = tiny(render=render).eval()
    model.net.fit_codes([noise_batch(rows=4, seed=9)[0]])
    return model


def noise_batch(rows: int = 4, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    audio = 0.2 * torch.randn(rows, 4096 + 512, generator=gen)
    return audio[:, :4096], audio[:, 4096:]


@pytest.mark.parametrize(
    ("overrides", "key"),
    [
        ({"prev_len_max": 2048}, "data.prev_len_max"),
        ({"next_len": 500}, "data.next_len"),
        ({"period_min": "0.3s", "period_max": "0.25s"}, "model.period_min"),
        ({"render_len": 200}, "model.render_len"),
        ({"hop": 8}, "model.hop"),
        ({"hiden": 16}, "model.hiden"),
        ({"render": "wavenet"}, "model.render"),
        ({"grain_shift": "-4ms"}, "model.grain_shift"),
        ({"grain_memory": -1}, "model.grain_memory"),
        ({"tempo_stretch": 0.8}, "model.tempo_stretch"),
    ],
)
def test_bad_plan_configs_name_the_key(overrides: dict, key: str) -> None:
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        PlanModule(**{**TINY, **overrides})


def test_a_short_prev_in_a_batch_names_the_data_keys() -> None:
    model = tiny()
    prev, nxt = noise_batch()
    with pytest.raises(ConfigError, match=r"data\.prev_len_min"):
        model.training_step((prev[:, -1024:], nxt), 0)


def test_codebook_fit_is_seeded_and_codes_are_nearest_centroids() -> None:
    gen = torch.Generator().manual_seed(0)
    centres = torch.tensor([[0.0, 0.0], [5.0, 5.0], [-5.0, 5.0]])
    frames = centres.repeat(200, 1) + 0.1 * torch.randn(600, 2, generator=gen)
    books = [Codebook(3, 2), Codebook(3, 2)]
    for book in books:
        assert not book.fitted
        book.fit(frames)
        assert book.fitted
    assert torch.equal(books[0].centroids, books[1].centroids)
    found = books[0].centroids[books[0].encode(centres)]
    assert torch.allclose(found, centres, atol=0.05)
    assert books[0].decode(books[0].encode(frames[:5])).shape == (5, 2)


def test_beat_period_is_the_click_tracks() -> None:
    """Clicks every 0.5 s at 16 kHz, 16-ms frames: a period of 31.25 frames."""
    model = PlanModule(sr=16000, prev_len_max=64000, next_len=16384)
    audio = torch.zeros(1, 64000)
    audio[0, ::8000] = 1.0
    frames = model.net.frames(audio + 1e-3 * torch.randn(1, 64000))
    shortest, longest = model.net.period_min, model.net.period_max
    assert (shortest, longest) == (19, 62)
    assert int(beat_period(frames, shortest, longest)) in (31, 32)


def test_dc_free_removes_an_offset_and_blocks_join_exactly() -> None:
    audio = 0.3 + 0.1 * torch.randn(2, 8000, generator=torch.Generator().manual_seed(0))
    whole, _ = dc_free(audio, torch.zeros(2, 2))
    last, pieces = torch.zeros(2, 2), []
    for piece in audio.split([1, 37, 4096, 3866], dim=1):
        out, last = dc_free(piece, last)
        pieces.append(out)
    assert torch.allclose(torch.cat(pieces, 1), whole, atol=1e-6)
    assert whole[:, 4000:].mean(1).abs().max() < 0.01


def test_the_plan_reads_its_beat_lags_in_training_and_generation_alike() -> None:
    """A code pattern that repeats every 9 frames, and nothing else to go on: trained through
    `plan_inputs` (what training reads), the greedy plan (what generation draws) carries the
    pattern on, so both read the same frames back."""
    model = tiny()
    net = model.net
    gen = torch.Generator().manual_seed(0)
    period = 9
    pattern = torch.randint(0, 16, (8, period), generator=gen)
    codes = pattern.repeat(1, 12)  # 108 frames per row
    periods = torch.full((8,), period)
    targets = torch.arange(net.reach, codes.shape[1])
    opt = torch.optim.Adam(net.plan.parameters(), 1e-2)
    for _ in range(150):
        logits = net.plan(net.plan_inputs(codes, periods, targets).flatten(0, 1))
        loss = torch.nn.functional.cross_entropy(logits, codes[:, targets].flatten())
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        planned = net._plan(codes[:, :60], periods, 27, Sampling(decoding="greedy"), None)
    assert torch.equal(planned[:, 60:], codes[:, 60:87])


def test_beat_distance_is_zero_for_a_code_a_beat_back_and_the_nearest_otherwise() -> None:
    centroids = torch.tensor([[0.0, 0.0], [1.0, 0.0], [3.0, 0.0], [0.0, 2.0]])
    codes = torch.tensor([[2, 2, 1, 0, 3, 0]])  # 1 and 2 periods of 2 before the next: 3 and 1
    distance = beat_distance(codes, torch.tensor([2]), centroids, beats=2)
    assert torch.allclose(distance, torch.tensor([[1.0, 0.0, 4.0, 0.0]]), atol=1e-5)


def test_a_strong_beat_prior_plays_what_the_last_beats_played_and_none_does_not() -> None:
    """An untrained plan draws codes at random; pulled hard enough, every code it draws is one
    the last beats played at that point (the prior's minimum), and without the pull not."""
    gen = torch.Generator().manual_seed(0)
    codes, period = torch.randint(0, 16, (4, 60), generator=gen), torch.full((4,), 5)
    net = fitted().net

    def beat_copies(prior: float) -> float:
        planned = net._plan(codes, period, 40, Sampling(beat_prior=prior), gen)
        new = torch.arange(60, 100)
        back = planned[:, new[:, None] - period[0] * torch.arange(1, net.plan.beats + 1)]
        return (back == planned[:, new, None]).any(-1).float().mean().item()

    assert beat_copies(1e4) == 1.0
    assert beat_copies(0.0) < 0.5


def test_beat_prior_auto_is_the_plans_and_a_number_is_refused_without_a_plan() -> None:
    net = tiny().net
    knobs = OmegaConf.create({"temperature": "auto", "decoding": "sample", "beat_prior": "auto"})
    assert sampling_from(knobs, net).beat_prior == PLAN_BEAT_PRIOR
    assert sampling_from(OmegaConf.merge(knobs, {"beat_prior": 0}), net).beat_prior == 0.0
    assert sampling_from(knobs, tiny_seq2seq().net).beat_prior == 0.0  # auto: no plan, no pull
    with pytest.raises(ConfigError, match=r"beat_prior=-1: give a number >= 0"):
        sampling_from(OmegaConf.merge(knobs, {"beat_prior": -1}), net)
    seq2seq = tiny_seq2seq().net
    with pytest.raises(ConfigError, match="beat_prior=5: only plan models draw a plan"):
        check_sampling(seq2seq, sampling_from(OmegaConf.merge(knobs, {"beat_prior": 5}), seq2seq))


def test_training_retimes_the_plans_frames_around_where_next_starts() -> None:
    """Tempo stretch: the plan trains on frames re-timed by a rate within the stretch, next's
    first frame kept, prev never shorter than the plan's reach; 1 leaves them as they are."""
    model = tiny(tempo_stretch=1.5)
    first, length = 3 * model.net.reach, 4 * model.net.reach  # prev leaves room to go faster
    frames = torch.arange(length, dtype=torch.float32)[None, :, None].expand(2, -1, 3)
    rates = []
    for seed in range(40):
        torch.manual_seed(seed)
        retimed, before = model._retimed(frames, first)
        index = retimed[0, :, 0].long()
        assert index[before] == first and before >= model.net.reach
        assert torch.equal(retimed[1], retimed[0])  # one tempo for the whole batch
        rate = float((index[-1] - index[before]) / (len(index) - 1 - before))
        assert 1 / 1.5 - 0.02 <= rate <= 1.5 + 0.02
        assert torch.all(index.diff() >= 0) and index.min() >= 0 and index.max() < length
        rates.append(rate)
    assert min(rates) < 0.85 and max(rates) > 1.2  # both ways
    plain, plain_first = tiny(tempo_stretch=1.0)._retimed(frames, first)
    assert plain_first == first and torch.equal(plain, frames)


def test_training_fits_the_codebook_then_trains_the_plan_and_the_sample_renderer() -> None:
    model = tiny(codebook_frames=288, render="samples")
    opt = model.configure_optimizers()
    losses = []
    for step in range(3):
        prev, nxt = noise_batch(seed=step)
        assert bool(model.net.codebook.fitted) == (
            step >= 2
        )  # 4 rows x 36 frames a batch: in after two
        loss = model.training_step((prev, nxt), step)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    assert all(math.isfinite(v) for v in losses)
    assert losses[2] > losses[1]  # the plan's cross-entropy joins the renderer's


def test_with_grains_training_fits_codebook_and_grains_then_trains_only_the_plan() -> None:
    model = tiny(codebook_frames=288)
    assert model.net.renderer is None
    batches = [noise_batch(seed=step) for step in range(3)]
    assert model.training_step(batches[0], 0) is None  # collecting: nothing to train yet
    assert model.training_step(batches[1], 1) is None  # now the codebook and grains are fitted
    bank = model.net.grains
    assert bool(model.net.codebook.fitted) and int(bank.count.min()) > 0
    audio = torch.cat([torch.cat(batch, 1) for batch in batches[:2]])
    every = audio.unfold(1, bank.grains.shape[-1], 1)  # every grain-long stretch of them
    grain = bank.grains[0, 0].float()
    assert (every - grain).abs().amax(-1).min() < 1e-3  # a grain is real audio of the batches
    loss = model.training_step(batches[2], 2)
    loss.backward()
    assert loss.item() == pytest.approx(math.log(16), rel=0.2)  # the plan's CE over 16 codes
    assert all(p.grad is not None for p in model.net.plan.parameters())


def played(model: PlanModule, sizes: list[int], total: int, **knobs) -> torch.Tensor:
    prime = noise_batch(rows=2)[0]
    stream = Stream(model, prime, sampling=Sampling(temperature=0.9), carry="state", seed=3)
    pieces, have = [], 0
    while have < total:
        n = sizes[len(pieces) % len(sizes)]
        pieces.append(stream.read(n))
        have += n
    return torch.cat(pieces, 1)[:, :total]


@pytest.mark.parametrize("render", RENDERS)
def test_streams_give_the_same_audio_for_any_read_sizes(render: str) -> None:
    model = fitted(render)
    assert isinstance(model.net, PlannedNet)
    assert resolve_carry("auto", model, "windows") == "state"
    reads = [played(model, sizes, 1500) for sizes in ([1], [37], [4096])]
    assert torch.equal(reads[0], reads[1]) and torch.equal(reads[0], reads[2])
    assert reads[0].abs().max() <= 1.0 and reads[0].std() > 0.01


@pytest.mark.parametrize("render", RENDERS)
def test_a_rewound_stream_plays_the_same_again_and_a_knob_changes_what_follows(
    render: str,
) -> None:
    model = fitted(render)
    stream = Stream(model, noise_batch(rows=1)[0], carry="state", seed=0)
    stream.read(700)
    mark = stream.mark()
    first = stream.read(1000)
    stream.rewind(mark)
    assert torch.equal(stream.read(1000), first)
    stream.rewind(mark)
    stream.sampling = Sampling(decoding="greedy")
    assert not torch.equal(stream.read(1000), first)


def test_temperature_auto_draws_the_plan_at_its_measured_temperature() -> None:
    net = tiny().net
    auto = OmegaConf.create({"temperature": "auto", "loop": "auto", "decoding": "sample"})
    assert sampling_from(auto, net) == Sampling(PLAN_TEMPERATURE, beat_prior=PLAN_BEAT_PRIOR)
    assert sampling_from(OmegaConf.merge(auto, {"temperature": 0.9}), net).temperature == 0.9
    assert sampling_from(auto, None) == Sampling(AUTO_TEMPERATURE)


def test_window_carry_is_refused_with_the_fix() -> None:
    with pytest.raises(ConfigError, match="carry=auto or carry=state"):
        Stream(tiny(), noise_batch(rows=1)[0], carry="window")


@pytest.mark.parametrize("render", RENDERS)
def test_a_prime_shorter_than_the_plan_reach_still_plays(render: str) -> None:
    model = fitted(render)
    for prime in (noise_batch(rows=1)[0][:, :300], torch.zeros(1, 0), None):
        audio = Stream(model, prime, carry="state", seed=0).read(2 * 128)
        assert audio.shape == (1, 256) and torch.isfinite(audio).all()
    assert model.net.begin(torch.zeros(1, 300)).codes.shape[1] >= model.net.reach + AHEAD


def test_a_format_2_checkpoint_loads_with_its_widths_renamed(tmp_path: Path) -> None:
    """Format 2 called the plan MLP's width `plan_hidden` and the sample renderer's `hidden`."""
    model = tiny(render="samples")
    old = {**dict(model.hparams), "plan_hidden": 32, "hidden": 16}
    old.pop("render_hidden")
    path = tmp_path / "old.ckpt"
    torch.save(
        {"hyper_parameters": old, "state_dict": model.state_dict(), "lofibeats_format": 2}, path
    )
    loaded = load_module(path)
    assert (loaded.config.hidden, loaded.config.render_hidden) == (32, 16)
    for key, value in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key


def test_train_py_trains_the_plan_family_resumes_and_its_checkpoint_generates(make_cfg) -> None:
    overrides = [*TINY_OVERRIDES, "model.codebook_frames=200"]
    cfg = make_cfg("train", [*overrides, "trainer.max_steps=4"])
    value = train(cfg)
    assert value is not None and math.isfinite(value)
    out = Path(cfg.paths.output_dir)
    module = load_module(out / "checkpoints" / "last.ckpt")  # weights_only
    assert isinstance(module, PlanModule) and bool(module.net.codebook.fitted)
    assert (out / "samples" / "prime0_latest.wav").is_file()
    status = json.loads((out / "status.json").read_text(encoding="utf-8"))
    assert status["checkpoint"] == str(out / "checkpoints" / "last.ckpt")  # generates_from

    resumed = make_cfg("train", [*overrides, "trainer.max_steps=6", "ckpt_path=last"], run="on")
    train(resumed)
    last = Path(resumed.paths.output_dir) / "checkpoints" / "last.ckpt"
    assert torch.load(last, weights_only=True)["global_step"] == 6
    again = load_module(last)
    assert torch.equal(again.net.codebook.centroids, module.net.codebook.centroids)  # not refitted
    assert torch.equal(again.net.grains.grains, module.net.grains.grains)
    assert not torch.equal(again.net.plan.net[-1].weight, module.net.plan.net[-1].weight)

    prime = noise_batch(rows=2)[0]
    carry = resolve_carry("auto", again, "windows")
    audio = generate_long(again, prime, SR // 2, carry=carry, seed=0)
    assert audio.shape == (2, SR // 2)
    assert all(audio_sanity(row.numpy(), SR)["verdict"] != "silent" for row in audio)

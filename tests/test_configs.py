"""Every config group option and preset composes, and its model and trainer instantiate."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from hydra.utils import instantiate
from omegaconf import OmegaConf

from lofibeats.errors import ConfigError
from lofibeats.models.sampling import Sampling
from lofibeats.models.seq2seq import Seq2SeqModule

from helpers import CONF, LOOKBACK, TINY

MODELS = sorted(p.stem for p in (CONF / "model").glob("*.yaml"))
TRAINERS = sorted(p.stem for p in (CONF / "trainer").glob("*.yaml"))
EXPERIMENTS = sorted(p.stem for p in (CONF / "experiment").glob("*.yaml"))


def test_groups_are_present() -> None:
    assert "seq2seq" in MODELS
    assert {"default", "cpu", "gpu", "ddp"} <= set(TRAINERS)


@pytest.mark.parametrize("model", MODELS)
def test_model_composes_and_builds(make_cfg, model: str) -> None:
    cfg = make_cfg("train", [f"model={model}", "debug=fast"])  # and debug/family/fast_<model>
    module = instantiate(cfg.model, _convert_="all")
    assert module.hparams["family"] == model
    assert module.sample_rate == cfg.data.sr == 8000


def test_the_default_is_the_plan_family_with_the_windows_and_budget_it_needs(make_cfg) -> None:
    cfg = make_cfg("train")
    assert cfg.model.family == "plan" and cfg.data.sr == 16000
    assert cfg.data.prev_len_min == cfg.data.prev_len_max == "4s" and cfg.data.next_len == 16384
    assert (cfg.trainer.max_steps, cfg.trainer.accelerator) == (600, "cpu")
    assert cfg.callbacks.audio_samples.prime_seconds == 4
    assert instantiate(cfg.model, _convert_="all").context_len == 4 * 16000
    assert make_cfg("train", ["data.sr=22050"]).data.sr == 22050  # still the user's to set


def test_another_family_keeps_the_data_trainer_and_callbacks_defaults(make_cfg) -> None:
    """model=plan's data, trainer and callback keys come with it, and go with it."""
    cfg = make_cfg("train", ["model=seq2seq"])
    assert (cfg.data.sr, cfg.data.prev_len_max, cfg.data.next_len) == (8000, 1024, 256)
    assert (cfg.trainer.max_steps, cfg.trainer.accelerator) == (1500, "auto")
    assert cfg.callbacks.audio_samples.prime_seconds == 0.5


@pytest.mark.parametrize(
    "preset", ["experiment=music_16k", "experiment=sr_sweep", "hparams_search=optuna"]
)
def test_the_seq2seq_presets_name_their_family(make_cfg, preset: str) -> None:
    assert make_cfg("train", [preset]).model.family == "seq2seq"


def test_the_plan_family_on_short_windows_says_how_long_they_must_be(make_cfg) -> None:
    cfg = make_cfg("train", ["model=plan", "data.prev_len_min=1s", "data.prev_len_max=1s"])
    with pytest.raises(Exception, match=r"data\.prev_len_max=16000 .* to 4s, as model=plan does"):
        instantiate(cfg.model, _convert_="all")


@pytest.mark.parametrize("trainer", TRAINERS)
def test_trainer_composes(make_cfg, trainer: str) -> None:
    cfg = make_cfg("train", [f"trainer={trainer}"])
    assert cfg.trainer._target_ == "pytorch_lightning.Trainer"
    assert cfg.trainer.max_steps > 0


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_experiment_presets_compose(make_cfg, experiment: str) -> None:
    cfg = make_cfg("train", [f"experiment={experiment}"])
    module = instantiate(cfg.model, _convert_="all")
    assert module.sample_rate == cfg.data.sr


@pytest.mark.parametrize("model", ["seq2seq", "vseq2seq"])
def test_the_music_preset_builds_a_lookback_model_of_either_family(make_cfg, model: str) -> None:
    cfg = make_cfg("train", ["experiment=music_16k", f"model={model}"])
    module = instantiate(cfg.model, _convert_="all")
    assert module.family == model
    assert module.net.lookback is not None and module.config.lookback == 4 * 16000


def _rate_keys(node: object, path: str = "") -> dict[str, object]:
    """Every key of a resolved config that names a sample rate (`sr`, `*_sr`, `sample_rate`)."""
    found: dict[str, object] = {}
    if isinstance(node, dict):
        for key, value in node.items():
            name = f"{path}.{key}" if path else str(key)
            if key in ("sr", "sample_rate") or str(key).endswith("_sr"):
                found[name] = value
            found.update(_rate_keys(value, name))
    return found


@pytest.mark.parametrize("model", MODELS)
def test_data_sr_is_the_one_rate_key(make_cfg, model: str) -> None:
    """Every rate in the run config follows data.sr (the built-in corpus's render rate is its
    own: it is resampled like any other folder)."""
    cfg = make_cfg("train", [f"model={model}", "data.sr=16000"])
    resolved = OmegaConf.to_container(cfg, resolve=True)
    resolved.pop("hydra")
    rates = _rate_keys(resolved)
    rates.pop("data.builtin.sr", None)
    assert "model.sr" in rates and "data.sr" in rates
    assert rates == dict.fromkeys(rates, 16000)


KNOB = re.compile(r"^\s*(temperature|top_p|decoding|loop|creativity|beat_prior):\s*([^#\s]*)")


def test_every_decoding_knob_has_one_owner() -> None:
    """temperature, top_p, decoding, loop, creativity and beat_prior are set in one file each
    (conf/sampling, conf/inference; a preset of the sampling group may override them);
    anywhere else they may only interpolate it, never hold a second value."""
    owners: dict[str, list[str]] = {}
    for path in sorted(CONF.rglob("*.yaml")):
        for line in path.read_text(encoding="utf-8").splitlines():
            m = KNOB.match(line)
            if m and not m.group(2).startswith("${"):
                owners.setdefault(m.group(1), []).append(str(path.relative_to(CONF)))
    assert owners == {
        "temperature": ["sampling/default.yaml", "sampling/loop.yaml"],
        "top_p": ["sampling/default.yaml"],
        "decoding": ["sampling/default.yaml"],
        "loop": ["sampling/default.yaml", "sampling/loop.yaml"],
        "creativity": ["inference/default.yaml"],
        "beat_prior": ["sampling/default.yaml"],
    }


@pytest.mark.parametrize("command", ["generate", "eval", "live"])
def test_the_loop_sampling_preset_composes(make_cfg, command: str) -> None:
    cfg = make_cfg(command, ["sampling=loop"])
    assert (cfg.temperature, cfg.top_p, cfg.decoding, cfg.loop) == (0.1, None, "sample", 0.95)
    cfg = make_cfg(command, ["sampling=loop", "loop=0.5"])
    assert cfg.loop == 0.5


@pytest.mark.parametrize("command", ["generate", "eval"])
def test_inference_knobs_are_top_level_keys_shared_by_generate_and_eval(
    make_cfg, command: str
) -> None:
    cfg = make_cfg(
        command, ["temperature=0.5", "top_p=0.95", "decoding=greedy", "engine=reference"]
    )
    assert (cfg.temperature, cfg.top_p, cfg.decoding, cfg.engine) == (
        0.5,
        0.95,
        "greedy",
        "reference",
    )
    assert set(cfg.options) == {"crossfade", "fade"}
    shared = ("ckpt", "device", "threads", "seed", "progress", "creativity", "out_dir")
    assert all(key in cfg for key in shared)
    # the run dir layout of README: outputs/<generate|eval>/<date>/<time>_<id>
    run_dir = OmegaConf.to_container(cfg.hydra.run, resolve=False)["dir"]
    assert run_dir.startswith("${paths.root_dir}/outputs/${task_name}/")
    assert cfg.task_name == command


def test_train_samples_decode_with_the_top_level_knobs(make_cfg) -> None:
    cfg = make_cfg("train", ["temperature=0.7", "top_p=0.9", "decoding=greedy"])
    callbacks = {name: instantiate(node) for name, node in cfg.callbacks.items()}
    plain = Seq2SeqModule(**TINY)
    assert callbacks["audio_samples"].sampling_for(plain) == Sampling(0.7, 0.9, "greedy")
    assert callbacks["latent_samples"].n == 4  # vseq2seq's z samples (a no-op for others)


def test_auto_knobs_resolve_for_the_model(make_cfg) -> None:
    """ "auto" knobs resolve for the model at hand (README): temperature is 0.1 where a take
    loops, else 0.9; loop=auto loops (0.95) a lookback model only. The default loop is 0."""
    cfg = make_cfg("train")
    assert (cfg.temperature, cfg.loop) == ("auto", 0.0)
    plain = Sampling(0.9, None, "sample", 0.0)
    samples = instantiate(cfg.callbacks.audio_samples)
    assert samples.sampling_for(Seq2SeqModule(**LOOKBACK)) == plain
    samples = instantiate(make_cfg("train", ["loop=auto"]).callbacks.audio_samples)
    assert samples.sampling_for(Seq2SeqModule(**TINY)) == plain
    looped = Sampling(0.1, None, "sample", 0.95)
    assert samples.sampling_for(Seq2SeqModule(**LOOKBACK)) == looped
    # loop=0 on a lookback model: the model as trained, at the plain temperature
    assert Sampling.parse("auto", loop=0, lookback=True) == Sampling(0.9, None, "sample", 0.0)
    # an explicit loop keeps the looping temperature; an explicit temperature is kept
    assert Sampling.parse("auto", loop=0.5, lookback=True).temperature == 0.1
    assert Sampling.parse(0.7, loop="auto", lookback=True) == Sampling(0.7, None, "sample", 0.95)
    with pytest.raises(ConfigError, match=r"^temperature='hot': give a number >= 0, or auto$"):
        Sampling.parse("hot")


@pytest.mark.parametrize("command", ["train", "prepare", "generate", "eval"])
def test_no_dead_top_level_keys(make_cfg, command: str) -> None:
    cfg = make_cfg(command)
    assert "compile" not in cfg
    assert ("task_name" in cfg) == (command in ("generate", "eval"))  # their run dir reads it


def test_run_dirs_are_unique_per_process(tmp_path: Path) -> None:
    import subprocess
    import sys

    code = "from lofibeats.cli import RUN_ID; print(RUN_ID)"
    ids = {
        subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout
        for _ in range(2)
    }
    assert len(ids) == 2

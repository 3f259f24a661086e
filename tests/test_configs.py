"""Every config group option and preset composes, and its model and trainer instantiate."""

from __future__ import annotations

from pathlib import Path

import pytest
from hydra.utils import instantiate

CONF = Path(__file__).resolve().parents[1] / "conf"

MODELS = sorted(p.stem for p in (CONF / "model").glob("*.yaml"))
TRAINERS = sorted(p.stem for p in (CONF / "trainer").glob("*.yaml"))
EXPERIMENTS = sorted(p.stem for p in (CONF / "experiment").glob("*.yaml"))


def test_groups_are_present() -> None:
    assert "seq2seq" in MODELS
    assert {"default", "cpu", "gpu", "ddp"} <= set(TRAINERS)


@pytest.mark.parametrize("model", MODELS)
def test_model_composes_and_builds(make_cfg, model: str) -> None:
    cfg = make_cfg("train", [f"model={model}", "debug=fast"])
    module = instantiate(cfg.model, _convert_="all")
    assert module.hparams["family"] == model
    assert module.sample_rate == cfg.data.sr == 8000


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


def test_data_sr_is_the_one_rate_key(make_cfg) -> None:
    cfg = make_cfg("train", ["data.sr=16000"])
    assert cfg.model.sr == 16000


def test_run_dirs_are_unique_per_process(tmp_path: Path) -> None:
    import subprocess
    import sys

    code = "from lofibeats.cli import RUN_ID; print(RUN_ID)"
    ids = {
        subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout
        for _ in range(2)
    }
    assert len(ids) == 2

"""Sweeps: multirun run dirs + summary table, failed jobs, Optuna search, launchers, precision."""

from __future__ import annotations

import csv
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import optuna
import pytest
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf, open_dict, read_write

from lofibeats.cli import RUN_ID
from lofibeats.commands.train import train
from lofibeats.errors import ConfigError, DataError
from lofibeats.models.checkpoint import load_module
from lofibeats.training.precision import cpu_lacks_onednn_kernels
from lofibeats.training.search import ResumableTPESampler
from lofibeats.training.status import JobStatus, failure_reason
from lofibeats.training.sweep import SUMMARY_CSV, SUMMARY_MD, SweepSummary, write_summary

from helpers import CONF, REPO

# what every subprocess run adds: the tiny debug model, 2 steps, no audio generation
FAST = ["debug=fast", "callbacks.audio_samples=null", "trainer.max_steps=2"]
T0 = "2026-01-01T00:00:00+00:00"


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One built-in corpus + cache for the whole module (rendered by the first run that needs it)."""
    return tmp_path_factory.mktemp("sweep-data")


def run_train(
    *args: str, root: Path, data_dir: Path, timeout: float = 600
) -> subprocess.CompletedProcess:
    """`python train.py ...` from the repo, everything written under `root` and `data_dir`."""
    command = [sys.executable, "train.py", *args, *FAST]
    command += [f"paths.root_dir={root.as_posix()}", f"paths.data_dir={data_dir.as_posix()}"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HYDRA_FULL_ERROR": "1"}
    return subprocess.run(
        command, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout
    )


def summary_rows(sweep_dir: Path) -> list[dict[str, str]]:
    with (sweep_dir / SUMMARY_CSV).open(newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def as_multirun_job(cfg: DictConfig) -> DictConfig:
    """Make the composed config look like one job of a `-m` run to the code under test."""
    with read_write(cfg.hydra), open_dict(cfg.hydra):
        cfg.hydra.mode = RunMode.MULTIRUN
    HydraConfig.instance().set_config(cfg)
    return cfg


# --------------------------------------------------------------------------- real multiruns
def test_multirun_gives_each_job_a_run_dir_and_reports_a_failed_one(
    tmp_path: Path, data_dir: Path
) -> None:
    result = run_train(
        "-m", "model=seq2seq", "data.prev_len_min=32,64,256", root=tmp_path, data_dir=data_dir
    )
    assert result.returncode == 0, result.stderr[-3000:]

    (sweep,) = (tmp_path / "outputs" / "multirun").glob("*/*")
    assert re.fullmatch(r"\d\d-\d\d-\d\d_[0-9a-f]+", sweep.name), sweep.name  # <time>_<run id>
    for job in ("0", "1"):
        run = sweep / job
        assert list((run / "tensorboard").glob("events.out.tfevents*")), (
            f"no TensorBoard events in {run}"
        )
        assert (run / "checkpoints" / "best.ckpt").is_file()
        assert (run / "checkpoints" / "last.ckpt").is_file()

    rows = summary_rows(sweep)
    assert [r["run"] for r in rows] == ["0", "1", "2"]
    assert [r["overrides"] for r in rows] == [f"data.prev_len_min={n}" for n in (32, 64, 256)]
    for row in rows[:2]:
        assert row["status"] == "ok" and row["steps"] == "2"
        assert math.isfinite(float(row["val/loss"])) and float(row["val/bits_per_sample"]) > 0
        assert Path(row["checkpoint"]).is_file() and float(row["wall_s"]) > 0
    assert rows[2]["status"].startswith("failed: data.prev_len_min=256")
    assert "\n" not in rows[2]["status"] and rows[2]["checkpoint"] == ""

    markdown = (sweep / SUMMARY_MD).read_text(encoding="utf-8")
    assert "3 runs, 2 ok, 1 not ok" in markdown
    assert "| 1 | data.prev_len_min=64 | ok |" in markdown and "1/checkpoints/best.ckpt" in markdown
    assert "| run | overrides | status |" in result.stdout  # printed at the end too


@pytest.mark.slow
def test_optuna_search_runs_trials_and_a_rerun_adds_to_the_study(
    tmp_path: Path, data_dir: Path
) -> None:
    # pin the searched keys that make runs slow; the search keeps model.lr and the TF schedule
    search = ["hparams_search=optuna", "data.prev_len_max=128", "data.next_len=64"]
    search += ["model.hidden=16", "model.layers=1", "hydra.sweeper.study_name=test"]
    first = run_train(*search, "hydra.sweeper.n_trials=2", root=tmp_path, data_dir=data_dir)
    assert first.returncode == 0, first.stderr[-3000:]
    again = run_train(*search, "hydra.sweeper.n_trials=1", root=tmp_path, data_dir=data_dir)
    assert again.returncode == 0, again.stderr[-3000:]

    sweep = tmp_path / "outputs" / "optuna" / "test"
    study = optuna.load_study(
        study_name="test", storage=f"sqlite:///{(sweep / 'study.db').as_posix()}"
    )
    trials = study.get_trials()
    assert [t.state for t in trials] == [optuna.trial.TrialState.COMPLETE] * 3
    assert set(trials[0].params) == {"model.lr", "model.teacher_forcing.schedule"}
    assert trials[2].params != trials[0].params, "a resumed search must not replay its first trials"
    assert (sweep / "optimization_results.yaml").is_file()

    rows = summary_rows(sweep)
    assert len(rows) == 3 and all(r["status"] == "ok" for r in rows)
    assert len({r["run"].split("/")[0] for r in rows}) == 2  # one folder per invocation
    assert [float(r["val/loss"]) for r in rows] == pytest.approx(
        [t.value for t in trials], abs=1e-4
    )


@pytest.mark.slow
def test_submitit_local_jobs_land_in_the_one_sweep_dir(tmp_path: Path, data_dir: Path) -> None:
    """Jobs run in other processes, where ${run_id:} has another value: the sweep dir must hold."""
    result = run_train(
        "-m", "hydra/launcher=submitit_local", "model.hidden=8,16", root=tmp_path, data_dir=data_dir
    )
    assert result.returncode == 0, result.stderr[-3000:]
    (sweep,) = (tmp_path / "outputs" / "multirun").glob("*/*")
    rows = summary_rows(sweep)
    assert [(r["run"], r["overrides"], r["status"]) for r in rows] == [
        ("0", "model.hidden=8", "ok"),
        ("1", "model.hidden=16", "ok"),
    ]


# --------------------------------------------------------------------------- one job's record
def test_single_run_failure_raises_and_is_recorded(make_cfg) -> None:
    cfg = make_cfg("train", ["debug=fast", "data.prev_len_min=256", "data.prev_len_max=128"])
    with pytest.raises(ConfigError):
        train(cfg)
    status = JobStatus.read(Path(cfg.paths.output_dir))
    assert status is not None and status.status.startswith("failed: data.prev_len_min=256")
    assert "data.prev_len_min=256" in status.overrides


def test_a_sweep_of_the_default_family_widens_its_plan(tmp_path: Path, data_dir: Path) -> None:
    """`python train.py -m model.hidden=256,512` on the default family: the plan MLP's width."""
    result = run_train("-m", "model.hidden=16,24", root=tmp_path, data_dir=data_dir)
    assert result.returncode == 0, result.stderr[-3000:]
    (sweep,) = (tmp_path / "outputs" / "multirun").glob("*/*")
    rows = summary_rows(sweep)
    assert [(r["status"], r["overrides"]) for r in rows] == [
        ("ok", "model.hidden=16"),
        ("ok", "model.hidden=24"),
    ]
    for row, width in zip(rows, (16, 24), strict=True):
        module = load_module(row["checkpoint"])
        assert module.family == "plan" and module.net.plan.net[-1].in_features == width


def test_multirun_job_failure_returns_inf_and_strategy_ddp_is_refused(make_cfg) -> None:
    cfg = as_multirun_job(
        make_cfg(
            "train", ["debug=fast", "trainer=ddp", "trainer.accelerator=cpu", "trainer.devices=2"]
        )
    )
    assert train(cfg) == math.inf
    status = JobStatus.read(Path(cfg.paths.output_dir))
    assert status is not None and status.failed
    assert status.status.startswith("failed: trainer.strategy=ddp cannot start its processes")


def test_failure_reasons_are_one_line() -> None:
    assert (
        failure_reason(DataError("no val sources in x: add audio"))
        == "no val sources in x: add audio"
    )
    assert failure_reason(ValueError("bad shape\nmore detail")) == "ValueError: bad shape"
    assert failure_reason(RuntimeError()) == "RuntimeError"


def test_bf16_mixed_precision_trains_on_cpu(make_cfg, data_dir: Path) -> None:
    cfg = make_cfg("train", [*FAST, "trainer.precision=bf16-mixed", f"paths.data_dir={data_dir}"])
    onednn = torch.backends.mkldnn.enabled
    value = train(cfg)
    assert value is not None and math.isfinite(value)
    assert (Path(cfg.paths.output_dir) / "checkpoints" / "last.ckpt").is_file()
    assert torch.backends.mkldnn.enabled == onednn  # switched back after the fit
    assert not cpu_lacks_onednn_kernels("32-true")


# --------------------------------------------------------------------------- the summary table
def test_summary_lists_runs_in_job_order_with_what_varies(tmp_path: Path, capsys) -> None:
    for num in (0, 1, 2, 10):
        JobStatus(
            status="ok",
            overrides=["debug=fast", f"model.hidden={num + 8}"],
            value=20.0 - num,
            metrics={"val/loss": 20.0 - num, "val/bits_per_sample": 20.0 - num},
            steps=4,
            wall_s=1.5,
            checkpoint=str((tmp_path / str(num) / "checkpoints" / "best.ckpt").absolute()),
            started=T0,
        ).write(tmp_path / str(num))
    (tmp_path / "3" / ".hydra").mkdir(parents=True)  # a job that died before train() started
    (tmp_path / "3" / ".hydra" / "overrides.yaml").write_text("- debug=fast\n- model.hidden=99\n")
    JobStatus(overrides=["debug=fast", "model.hidden=4"], started=T0).write(
        tmp_path / "4"
    )  # killed

    assert write_summary(tmp_path, finished=False)
    assert summary_rows(tmp_path)[4]["status"] == "running"  # a sweep still in progress

    SweepSummary().on_multirun_end(OmegaConf.create({"hydra": {"sweep": {"dir": str(tmp_path)}}}))
    printed = capsys.readouterr().out
    rows = summary_rows(tmp_path)
    assert [r["run"] for r in rows] == ["0", "1", "2", "3", "4", "10"]
    assert [r["overrides"] for r in rows][:4] == [
        "model.hidden=8",
        "model.hidden=9",
        "model.hidden=10",
        "model.hidden=99",
    ]
    assert rows[3]["status"].startswith("failed: no status.json")
    assert rows[4]["status"].startswith("failed: ended without a final status")
    assert rows[5]["val/loss"] == "10.0000" and rows[5]["checkpoint"].endswith("best.ckpt")
    assert "best (lowest val/loss): run 10 model.hidden=18 = 10.0000" in printed
    assert (
        "| 10 | model.hidden=18 | ok | 10.0000 | 10.0000 | 4 | 1.5 | 10/checkpoints/best.ckpt |"
        in printed
    )


def test_summary_orders_the_invocations_of_a_resumed_search_by_start(tmp_path: Path) -> None:
    JobStatus(status="ok", overrides=["model.lr=1"], started="2026-01-02T00:00:00+00:00").write(
        tmp_path / "aaa" / "0"
    )
    for num in (0, 1):
        JobStatus(status="ok", overrides=[f"model.lr={num + 2}"], started=T0).write(
            tmp_path / "bbb" / str(num)
        )
    write_summary(tmp_path)
    assert [r["run"] for r in summary_rows(tmp_path)] == ["bbb/0", "bbb/1", "aaa/0"]


def test_summary_callback_makes_the_sweep_dir_first(tmp_path: Path) -> None:
    sweep = tmp_path / "outputs" / "optuna" / "study"  # where Optuna's SQLite file goes
    SweepSummary().on_multirun_start(OmegaConf.create({"hydra": {"sweep": {"dir": str(sweep)}}}))
    assert sweep.is_dir()
    assert write_summary(sweep) == "" and not (sweep / SUMMARY_CSV).exists()


# --------------------------------------------------------------------------- configs
def test_sweep_dirs_never_collide_and_the_summary_callback_is_registered(make_cfg) -> None:
    cfg = make_cfg("train", [])
    assert cfg.hydra.sweep.dir.endswith(f"_{RUN_ID}")
    assert cfg.hydra.callbacks.sweep_summary._target_ == "lofibeats.training.sweep.SweepSummary"


@pytest.mark.parametrize("search", sorted(p.stem for p in (CONF / "hparams_search").glob("*.yaml")))
def test_hparams_search_presets_compose_onto_existing_keys(
    make_cfg, search: str, tmp_path: Path
) -> None:
    cfg = make_cfg("train", [f"hparams_search={search}"])
    sweeper = cfg.hydra.sweeper
    assert sweeper._target_.endswith("OptunaSweeper") and sweeper.direction == "minimize"
    assert cfg.hydra.mode == RunMode.MULTIRUN
    assert sweeper.storage == f"sqlite:///{cfg.hydra.sweep.dir}/study.db"
    assert cfg.hydra.sweep.dir == f"{tmp_path.as_posix()}/outputs/optuna/lofi_{cfg.model.family}"
    missing = object()
    for key in sweeper.params:
        assert OmegaConf.select(cfg, key, default=missing) is not missing, f"{search}: no key {key}"
    assert isinstance(instantiate(sweeper.sampler), ResumableTPESampler)


def test_resumable_sampler_is_reproducible_and_does_not_replay_a_study() -> None:
    space = {"lr": optuna.distributions.LogUniformDistribution(1e-4, 1e-2)}
    optuna.logging.set_verbosity(optuna.logging.WARNING)

    def ask(study: optuna.Study) -> float:
        trial = study.ask(space)
        study.tell(trial, 1.0)
        return trial.params["lr"]

    storage = optuna.storages.InMemoryStorage()
    study = optuna.create_study(
        study_name="s", storage=storage, sampler=ResumableTPESampler(seed=3)
    )
    first = [ask(study), ask(study)]
    fresh = optuna.create_study(sampler=ResumableTPESampler(seed=3))
    assert [ask(fresh), ask(fresh)] == first  # same seed, same draws
    resumed = optuna.load_study(
        study_name="s", storage=storage, sampler=ResumableTPESampler(seed=3)
    )
    assert ask(resumed) not in first


def test_slurm_overlay_takes_its_shape_from_the_trainer(make_cfg) -> None:
    cfg = make_cfg(
        "train",
        [
            "hydra/launcher=slurm",
            "trainer=ddp",
            "trainer.devices=4",
            "trainer.num_nodes=2",
            "hydra.launcher.partition=gpu",
        ],
    )
    launcher = cfg.hydra.launcher
    assert launcher._target_.endswith("submitit_launcher.SlurmLauncher")
    assert (launcher.nodes, launcher.gpus_per_node, launcher.tasks_per_node) == (2, 4, 4)
    assert launcher.partition == "gpu" and launcher.timeout_min > 0
    single = make_cfg("train", ["hydra/launcher=slurm", "trainer=gpu"], run="single").hydra.launcher
    assert (single.nodes, single.gpus_per_node, single.tasks_per_node) == (1, 1, 1)


@pytest.mark.parametrize(
    ("launcher", "target"),
    [
        ("submitit_slurm", "submitit_launcher.SlurmLauncher"),
        ("submitit_local", "submitit_launcher.LocalLauncher"),
        ("joblib", "joblib_launcher.JoblibLauncher"),
    ],
)
def test_plugin_launchers_compose(make_cfg, launcher: str, target: str) -> None:
    cfg = make_cfg("train", [f"hydra/launcher={launcher}"])
    assert cfg.hydra.launcher._target_.endswith(target)

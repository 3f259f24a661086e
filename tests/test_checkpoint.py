"""Loading checkpoints: round trip, Lightning resume under weights_only (also from a v0.1
checkpoint), and every refusal."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, TensorDataset

from lofibeats.errors import CheckpointError
from lofibeats.generation.engine import continue_audio
from lofibeats.models.base import CHECKPOINT_FORMAT, migrate_checkpoint
from lofibeats.models.checkpoint import load_module
from lofibeats.models.configs import RETIRED_KEYS
from lofibeats.models.registry import family_class
from lofibeats.models.seq2seq import Seq2SeqModule

from helpers import LEGACY, tiny_trainer

pytestmark = pytest.mark.filterwarnings(
    "ignore:.*does not have many workers:UserWarning",
    "ignore:.*resuming from a checkpoint that ended before the epoch ended:UserWarning",
    "ignore:.*no `val_dataloader`:UserWarning",
    "ignore:Be aware that when using `ckpt_path`",
)

TF = {"schedule": "linear", "start": 1.0, "end": 0.0, "steps": 10}


def _model() -> Seq2SeqModule:
    torch.manual_seed(0)
    return Seq2SeqModule(
        sr=8000, prev_len_max="8ms", next_len=16, hidden=8, layers=2, embed_dim=4,
        warmup_steps=2, teacher_forcing=TF,
    )  # fmt: skip


def _fit(model: Seq2SeqModule, max_steps: int, ckpt_path: Path | None = None) -> pl.Trainer:
    torch.manual_seed(1)
    data = TensorDataset(torch.rand(8, 48) * 2 - 1, torch.rand(8, 16) * 2 - 1)
    trainer = tiny_trainer(max_steps=max_steps)
    trainer.fit(model, DataLoader(data, batch_size=4), ckpt_path=ckpt_path, weights_only=True)
    return trainer


@pytest.fixture(scope="module")
def trained_ckpt(tmp_path_factory) -> tuple[Path, Seq2SeqModule]:
    model = _model()
    trainer = _fit(model, max_steps=3)
    path = tmp_path_factory.mktemp("ckpt") / "last.ckpt"
    trainer.save_checkpoint(path)
    return path, model


def test_checkpoint_is_plain_and_round_trips(trained_ckpt) -> None:
    path, model = trained_ckpt
    raw = torch.load(path, weights_only=True)  # nothing but tensors/containers/primitives
    assert raw["hyper_parameters"]["family"] == "seq2seq"
    assert raw["hyper_parameters"]["prev_len_max"] == 64  # "8ms" at 8 kHz, stored in samples
    assert raw["lofibeats_format"] == CHECKPOINT_FORMAT
    assert (
        "net.head.proj.weight" in raw["state_dict"] and "head.proj.weight" not in raw["state_dict"]
    )

    loaded = load_module(str(path))
    assert isinstance(loaded, Seq2SeqModule) and not loaded.training
    assert dict(loaded.hparams) == dict(model.hparams)
    assert loaded.tf_schedule.step == 3
    for key, value in model.state_dict().items():
        other = loaded.state_dict()[key]  # tensors, and the schedule's extra state (a dict)
        assert torch.equal(other, value) if torch.is_tensor(value) else other == value, key
    prev = torch.rand(2, 70) * 2 - 1

    def generate(module: Seq2SeqModule) -> torch.Tensor:
        generator = torch.Generator().manual_seed(0)
        return continue_audio(module, prev, 20, generator=generator, engine="reference")

    assert torch.equal(generate(loaded), generate(model.eval()))


def test_lightning_resume_under_weights_only_keeps_the_schedule(trained_ckpt) -> None:
    path, _ = trained_ckpt
    model = _model()
    trainer = _fit(model, max_steps=5, ckpt_path=path)
    assert trainer.global_step == 5
    assert model.tf_schedule.step == 5, "the teacher-forcing step must continue, not restart"
    assert trainer.callback_metrics["train/tf_ratio"].item() == pytest.approx(0.6)  # step 4
    assert trainer.lr_scheduler_configs[0].scheduler.last_epoch == 5


class _Snapshot(pl.Callback):
    """The module's tensors as training starts: what the resume loaded, before any step."""

    def __init__(self) -> None:
        self.state: dict[str, torch.Tensor] = {}

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        state = pl_module.state_dict()
        self.state = {k: v.detach().clone() for k, v in state.items() if torch.is_tensor(v)}


@pytest.mark.parametrize("name", ["seq2seq", "vseq2seq", "frame", "gan"])
def test_lightning_resumes_from_a_v0_1_checkpoint(name: str, tmp_path: Path) -> None:
    """Trainer.fit(ckpt_path=<a lofibeats 0.1 checkpoint>): `LofiModule.on_load_checkpoint`
    migrates it (weights under `net.`, decoding knobs dropped) before Lightning loads the
    weights, the optimizer and LR scheduler states and the step counters into today's module."""
    path = LEGACY / f"{name}_v0.1.ckpt"
    old = torch.load(path, weights_only=True)
    assert "lofibeats_format" not in old
    cls = family_class(old["hyper_parameters"]["family"])
    migrated = torch.load(path, weights_only=True)
    migrate_checkpoint(cls, migrated)
    assert migrated["lofibeats_format"] == CHECKPOINT_FORMAT
    assert not set(RETIRED_KEYS) & set(migrated["hyper_parameters"])
    if name != "gan":  # v0.1 kept the network at the top and decoding knobs in the hparams
        assert "head.proj.weight" in old["state_dict"]
        assert "net.head.proj.weight" in migrated["state_dict"]
        assert set(RETIRED_KEYS) & set(old["hyper_parameters"])
    torch.manual_seed(0)
    module = cls(**migrated["hyper_parameters"])  # what train.py builds from today's config
    assert set(module.state_dict()) == set(migrated["state_dict"])

    hp = module.config
    torch.manual_seed(1)
    data = TensorDataset(torch.rand(8, hp.prev_len_max) * 2 - 1, torch.rand(8, hp.next_len) * 2 - 1)
    snapshot = _Snapshot()
    trainer = tiny_trainer(
        max_steps=old["global_step"] + 2, limit_val_batches=0, callbacks=[snapshot]
    )
    trainer.fit(module, DataLoader(data, batch_size=4), ckpt_path=path, weights_only=True)

    for key, value in migrated["state_dict"].items():  # resumed from the v0.1 weights
        if torch.is_tensor(value):
            assert torch.equal(snapshot.state[key], value), key
    assert trainer.global_step == old["global_step"] + 2
    if name == "gan":  # two warm-up batches: one G step each
        assert module.steps.g == old["state_dict"]["steps._extra_state"]["g"] + 2
    else:
        assert module.tf_schedule.step == old["state_dict"]["tf_schedule._extra_state"]["step"] + 2
    for optimizer, saved in zip(trainer.optimizers, old["optimizer_states"], strict=True):
        params = [p for group in optimizer.param_groups for p in group["params"]]
        assert len(params) == sum(len(group["params"]) for group in saved["param_groups"])
        for i, param in enumerate(params):  # the v0.1 Adam moments, matched by position
            if i in saved["state"]:
                state = optimizer.state[param]
                assert state["exp_avg"].shape == param.shape
                assert state["step"].item() == saved["state"][i]["step"].item() + 2
    assert len(trainer.lr_scheduler_configs) == len(old["lr_schedulers"])
    for config, saved in zip(trainer.lr_scheduler_configs, old["lr_schedulers"], strict=True):
        assert config.scheduler.last_epoch == saved["last_epoch"] + 2

    resaved = tmp_path / "resumed.ckpt"
    trainer.save_checkpoint(resaved)
    again = torch.load(resaved, weights_only=True)
    assert again["lofibeats_format"] == CHECKPOINT_FORMAT
    assert set(again["state_dict"]) == set(migrated["state_dict"])
    assert type(load_module(resaved)) is cls


class _OpensAFile:
    def __init__(self, target: Path) -> None:
        self.target = target

    def __reduce__(self):
        return (open, (str(self.target), "w"))


class _RunsAShell:
    def __init__(self, target: Path) -> None:
        self.target = target

    def __reduce__(self):
        return (os.system, (f'echo pwned > "{self.target}"',))


@pytest.mark.parametrize("payload", [_OpensAFile, _RunsAShell])
def test_hostile_pickle_is_refused_and_not_executed(tmp_path: Path, payload) -> None:
    marker = tmp_path / "pwned.txt"
    path = tmp_path / "evil.ckpt"
    hparams = {"family": "seq2seq"}
    torch.save({"state_dict": {"w": payload(marker)}, "hyper_parameters": hparams}, path)
    with pytest.raises(CheckpointError) as info:
        load_module(path)
    assert str(info.value) == f"refusing to load {path}: it contains code objects, not just weights"
    assert not marker.exists(), "the payload ran"


def _bad_files(tmp: Path, good: Path) -> dict[str, Path]:
    data = good.read_bytes()
    files = {
        "truncated": data[: len(data) // 2],
        "garbage": bytes(range(256)) * 4,
        "empty": b"",
        "text": b"not a checkpoint",
    }
    paths = {}
    for name, content in files.items():
        paths[name] = tmp / f"{name}.ckpt"
        paths[name].write_bytes(content)
    paths["not_lightning"] = tmp / "plain.ckpt"
    torch.save({"weights": torch.zeros(3)}, paths["not_lightning"])
    paths["unknown_family"] = tmp / "family.ckpt"
    torch.save(
        {"state_dict": {}, "hyper_parameters": {"family": "wavenet"}}, paths["unknown_family"]
    )
    raw = torch.load(good, weights_only=True)
    raw["state_dict"].pop("net.head.proj.weight")
    paths["mismatch"] = tmp / "mismatch.ckpt"
    torch.save(raw, paths["mismatch"])
    paths["missing"] = tmp / "nope.ckpt"
    paths["directory"] = tmp
    return paths


def test_bad_files_raise_one_line_checkpoint_errors(tmp_path: Path, trained_ckpt) -> None:
    expected = {
        "truncated": "corrupt or truncated",
        "garbage": "corrupt",
        "empty": "corrupt",
        "text": "corrupt",
        "not_lightning": "not a Lightning checkpoint",
        "unknown_family": "unknown model family 'wavenet'",
        "mismatch": "does not match",
        "missing": "no checkpoint at",
        "directory": "is a directory",
    }
    for name, path in _bad_files(tmp_path, trained_ckpt[0]).items():
        with pytest.raises(CheckpointError) as info:
            load_module(path)
        message = str(info.value)
        assert expected[name] in message and str(path) in message and "\n" not in message, name

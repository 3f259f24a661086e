"""Loading checkpoints: round trip, Lightning resume under weights_only, and every refusal."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, TensorDataset

from lofibeats.errors import CheckpointError
from lofibeats.models.checkpoint import load_module
from lofibeats.models.seq2seq import Seq2SeqModule

pytestmark = pytest.mark.filterwarnings(
    "ignore:.*does not have many workers:UserWarning",
    "ignore:.*resuming from a checkpoint that ended before the epoch ended:UserWarning",
    "ignore:.*no `val_dataloader`:UserWarning",
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
    trainer = pl.Trainer(
        max_steps=max_steps,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        accelerator="cpu",
        num_sanity_val_steps=0,
    )
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

    loaded = load_module(str(path))
    assert isinstance(loaded, Seq2SeqModule) and not loaded.training
    assert dict(loaded.hparams) == dict(model.hparams)
    assert loaded.tf_schedule.step == 3
    for key, value in model.state_dict().items():
        other = loaded.state_dict()[key]  # tensors, and the schedule's extra state (a dict)
        assert torch.equal(other, value) if torch.is_tensor(value) else other == value, key
    prev = torch.rand(2, 70) * 2 - 1
    expected = model.eval().continue_audio(prev, 20, generator=torch.Generator().manual_seed(0))
    got = loaded.continue_audio(prev, 20, generator=torch.Generator().manual_seed(0))
    assert torch.equal(got, expected)


def test_lightning_resume_under_weights_only_keeps_the_schedule(trained_ckpt) -> None:
    path, _ = trained_ckpt
    model = _model()
    trainer = _fit(model, max_steps=5, ckpt_path=path)
    assert trainer.global_step == 5
    assert model.tf_schedule.step == 5, "the teacher-forcing step must continue, not restart"
    assert trainer.callback_metrics["train/tf_ratio"].item() == pytest.approx(0.6)  # step 4
    assert trainer.lr_scheduler_configs[0].scheduler.last_epoch == 5


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
    raw["state_dict"].pop("head.proj.weight")
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

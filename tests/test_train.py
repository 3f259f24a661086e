"""train.py end to end on the debug preset: checkpoints, TensorBoard, samples, resume, NaN stop."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import pytorch_lightning as pl
import soundfile as sf
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.backend.event_processing.event_file_loader import EventFileLoader
from tensorboard.plugins.hparams import plugin_data_pb2

from lofibeats.callbacks.nonfinite import NonFiniteLossError, StopOnNonFiniteLoss
from lofibeats.commands.train import train

from helpers import REPO, tiny_trainer


def _tensorboard_tags(run_dir: Path) -> dict[str, list[str]]:
    tags: dict[str, list[str]] = {}
    for events in (run_dir / "tensorboard").rglob("events.out.tfevents*"):
        acc = EventAccumulator(str(events), size_guidance={"audio": 0, "images": 0, "scalars": 0})
        acc.Reload()
        for kind, names in acc.Tags().items():
            if isinstance(names, list):
                tags.setdefault(kind, []).extend(names)
    return tags


def _logged_hparams(run_dir: Path) -> set[str]:
    """The hparam names of the TensorBoard HPARAMS tab's session (what a sweep lines up by)."""
    names: set[str] = set()
    for events in (run_dir / "tensorboard").rglob("events.out.tfevents*"):
        for event in EventFileLoader(str(events)).Load():
            for value in event.summary.value:
                if value.tag == "_hparams_/session_start_info":
                    data = plugin_data_pb2.HParamsPluginData.FromString(
                        value.metadata.plugin_data.content
                    )
                    names |= set(data.session_start_info.hparams)
    return names


def test_fast_run_writes_checkpoints_tensorboard_and_samples(make_cfg, capsys) -> None:
    cfg = make_cfg("train", ["debug=fast"])
    value = train(cfg)
    run_dir = Path(cfg.paths.output_dir)
    printed = " ".join(capsys.readouterr().err.split())  # the summary (stderr), unwrapped
    last = run_dir / "checkpoints" / "last.ckpt"  # the default family generates from its last
    assert f"python generate.py ckpt={last} seconds=10" in printed
    assert f"python live.py ckpt={last}" in printed

    assert value is not None and np.isfinite(value)
    assert (run_dir / "checkpoints" / "last.ckpt").is_file()
    assert (run_dir / "checkpoints" / "best.ckpt").is_file()
    assert (run_dir / "config_resolved.yaml").is_file()

    tags = _tensorboard_tags(run_dir)
    assert {"train/loss", "val/loss"} <= set(tags["scalars"])
    assert "samples/prime0" in tags["audio"]
    assert "spectrogram/prime0" in tags["images"]
    # the HPARAMS tab: the config groups a sweep varies, with the final metrics beside them
    assert {"model.hidden", "data.sr", "trainer.max_steps", "seed"} <= _logged_hparams(run_dir)
    assert {"final/steps", "final/val/loss"} <= set(tags["scalars"])

    # generate/eval find the data the model was trained on (the debug corpus), not the default
    from lofibeats.commands.inference import load_for_inference

    _, _, data = load_for_inference(make_cfg("generate", [f"ckpt={last}"], run="generate"))
    assert data["builtin"]["tracks"] == cfg.data.builtin.tracks == 3

    audio, sr = sf.read(run_dir / "samples" / "prime0_latest.wav")
    assert sr == cfg.data.sr
    assert len(audio) == round(
        (cfg.callbacks.audio_samples.prime_seconds + cfg.callbacks.audio_samples.seconds) * sr
    )


def test_resume_continues_steps(make_cfg) -> None:
    cfg = make_cfg("train", ["debug=fast", "trainer.max_steps=4"])
    train(cfg)
    last = Path(cfg.paths.output_dir) / "checkpoints" / "last.ckpt"
    first = torch.load(last, weights_only=True)
    assert first["global_step"] == 4

    resumed = make_cfg(
        "train", ["debug=fast", "trainer.max_steps=8", "ckpt_path=last"], run="resumed"
    )
    train(resumed)
    second = torch.load(
        Path(resumed.paths.output_dir) / "checkpoints" / "last.ckpt", weights_only=True
    )
    assert second["global_step"] == 8
    assert second["optimizer_states"][0]["state"], "optimizer state must carry over"


def test_last_ckpt_is_the_last_step_when_val_loss_stops_improving(make_cfg) -> None:
    """With lr 0 val/loss never improves after the first check: best.ckpt stays there, and
    last.ckpt (what ckpt=last resumes and generates from) still follows every step."""
    overrides = ["debug=fast", "model.lr=0", "trainer.max_steps=7", "trainer.val_check_interval=2"]
    cfg = make_cfg("train", overrides)
    train(cfg)
    checkpoints = Path(cfg.paths.output_dir) / "checkpoints"
    assert torch.load(checkpoints / "best.ckpt", weights_only=True)["global_step"] == 2
    assert torch.load(checkpoints / "last.ckpt", weights_only=True)["global_step"] == 7


class _NaNModule(pl.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.w = torch.nn.Parameter(torch.ones(1))

    def training_step(self, batch, batch_idx):
        return self.w.sum() * float("nan")

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def test_nonfinite_loss_stops_with_one_line() -> None:
    data = torch.utils.data.DataLoader(torch.zeros(8, 1), batch_size=2)
    trainer = tiny_trainer(max_steps=5, callbacks=[StopOnNonFiniteLoss()])
    with pytest.raises(NonFiniteLossError) as info:
        trainer.fit(_NaNModule(), data)
    message = str(info.value)
    assert "\n" not in message and "step 1" in message and "no checkpoint" in message


def test_a_killed_run_resumes_from_its_last_checkpoint(tmp_path: Path, make_cfg) -> None:
    """kill -9 mid-training: the checkpoints on disk stay loadable and `ckpt_path=last` goes on."""
    import subprocess
    import sys
    import time

    command = [
        sys.executable,
        "train.py",
        "debug=fast",
        f"paths.root_dir={tmp_path.as_posix()}",
        "trainer.max_steps=100000",
        "trainer.val_check_interval=2",
        "callbacks.audio_samples.n_primes=0",
    ]
    process = subprocess.Popen(command, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 120
        found: list[Path] = []
        while time.monotonic() < deadline and process.poll() is None:
            found = list((tmp_path / "outputs").rglob("checkpoints/last.ckpt"))
            if found and torch.load(found[0], weights_only=True)["global_step"] >= 4:
                break
            time.sleep(0.2)
        assert found, (
            f"no checkpoint before the kill: {process.stderr.read().decode()[-2000:] if process.poll() is not None else ''}"
        )
    finally:
        process.kill()
        process.wait()

    killed_at = torch.load(found[0], weights_only=True)["global_step"]
    cfg = make_cfg(
        "train", ["debug=fast", f"trainer.max_steps={killed_at + 2}", "ckpt_path=last"], run="after"
    )
    train(cfg)
    resumed = torch.load(
        Path(cfg.paths.output_dir) / "checkpoints" / "last.ckpt", weights_only=True
    )
    assert resumed["global_step"] == killed_at + 2

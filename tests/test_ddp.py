"""DDP: `python train.py trainer=ddp` on two CPU processes (gloo) trains, shards data, checkpoints."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import pytorch_lightning as pl
import torch

from lofibeats.training.status import JobStatus

from helpers import REPO, TESTS


class RecordRanks(pl.Callback):
    """Added to the subprocess run by config: each rank writes what it saw to `rank<k>.json`."""

    def __init__(self) -> None:
        self.first_train_batch: float | None = None
        self.val_windows = 0

    def on_train_batch_start(
        self, trainer: pl.Trainer, pl_module: Any, batch: Any, batch_idx: int
    ) -> None:
        if self.first_train_batch is None:
            self.first_train_batch = float(batch[0].double().sum())

    def on_validation_batch_start(
        self,
        trainer: pl.Trainer,
        pl_module: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        self.val_windows += len(batch[0])

    def on_fit_end(self, trainer: pl.Trainer, pl_module: Any) -> None:
        record = {
            "world_size": trainer.world_size,
            "first_train_batch": self.first_train_batch,
            "val_windows": self.val_windows,
        }
        path = Path(trainer.default_root_dir) / f"rank{trainer.global_rank}.json"
        path.write_text(json.dumps(record), encoding="utf-8")


@pytest.mark.slow
def test_ddp_on_two_cpu_processes(tmp_path: Path) -> None:
    command = [
        sys.executable,
        "train.py",
        "trainer=ddp",
        "trainer.accelerator=cpu",
        "trainer.devices=2",
        "debug=fast",
        "trainer.max_steps=2",  # one validation, at step 2
        "callbacks.audio_samples=null",
        "+callbacks.record_ranks._target_=test_ddp.RecordRanks",
        f"paths.root_dir={tmp_path.as_posix()}",
    ]
    path = os.pathsep.join(p for p in (str(TESTS), os.environ.get("PYTHONPATH", "")) if p)
    env = {**os.environ, "PYTHONPATH": path, "OMP_NUM_THREADS": "1", "HYDRA_FULL_ERROR": "1"}
    result = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]

    (run,) = (tmp_path / "outputs").glob("*/*")  # both ranks wrote to the one run dir
    checkpoint = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)
    assert checkpoint["global_step"] == 2
    status = JobStatus.read(run)
    assert status is not None and status.status == "ok" and status.steps == 2

    ranks = [json.loads((run / f"rank{rank}.json").read_text(encoding="utf-8")) for rank in (0, 1)]
    assert [r["world_size"] for r in ranks] == [2, 2]
    # train: each rank draws its own windows; val: the fixed windows (debug: 8) split between ranks
    assert ranks[0]["first_train_batch"] != ranks[1]["first_train_batch"]
    assert [r["val_windows"] for r in ranks] == [4, 4]

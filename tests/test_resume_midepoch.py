"""A run resumed from a checkpoint taken mid-epoch trains on the batches an unbroken run would.

The train loader's position (epoch, batches handed out) is its `state_dict`, which Lightning keeps
in every checkpoint; without it a resumed run draws its epoch again from batch 0.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import ModelCheckpoint

from lofibeats.data.datamodule import LofiDataModule

from helpers import tiny_trainer

STEPS = 12  # 3 epochs of debug=fast's 4 batches, validated every 2


class _Tiny(pl.LightningModule):
    """Predicts the first `next` sample from the last `prev` sample: enough to have weights."""

    def __init__(self):
        super().__init__()
        self.linear = torch.nn.Linear(1, 1)

    def _loss(self, batch):
        prev, nxt = batch
        return ((self.linear(prev[:, -1:]) - nxt[:, :1]) ** 2).mean()

    def training_step(self, batch, batch_idx):
        return self._loss(batch)

    def validation_step(self, batch, batch_idx):
        self.log("val/loss", self._loss(batch))

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.5)


class _Batches(pl.Callback):
    """What the training loop is fed, by global step: (epoch, batch_idx, prev, next)."""

    def __init__(self):
        self.seen: dict[int, tuple[int, int, torch.Tensor, torch.Tensor]] = {}

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        prev, nxt = batch
        self.seen[trainer.global_step] = (
            trainer.current_epoch,
            batch_idx,
            prev.clone(),
            nxt.clone(),
        )


def _fit(data_cfg, root: Path, ckpt_path: Path | None = None, checkpoints: Path | None = None):
    """Train `_Tiny` to STEPS on the debug corpus; a checkpoint after every step into `checkpoints`."""
    recorder = _Batches()
    callbacks: list[pl.Callback] = [recorder]
    if checkpoints is not None:
        callbacks.append(
            ModelCheckpoint(
                dirpath=checkpoints, filename="{step}", every_n_train_steps=1, save_top_k=-1
            )
        )
    trainer = tiny_trainer(
        max_steps=STEPS,
        val_check_interval=2,
        limit_val_batches=1,
        enable_checkpointing=checkpoints is not None,
        default_root_dir=root,
        callbacks=callbacks,
    )
    model = _Tiny()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer.fit(
            model,
            datamodule=LofiDataModule.from_config(data_cfg),
            ckpt_path=ckpt_path,
            weights_only=True,  # as `python train.py ckpt_path=...` resumes
        )
    return recorder.seen, model, [str(w.message) for w in caught]


def test_resumed_run_sees_the_batches_of_the_unbroken_run(make_cfg, tmp_path: Path) -> None:
    data_cfg = make_cfg("train", ["debug=fast", "data.prepare_workers=1"]).data
    assert data_cfg.train_batches_per_epoch == 4 and data_cfg.num_workers == 0
    LofiDataModule.from_config(data_cfg).prepare_data()  # render the debug corpus once
    torch.manual_seed(0)
    unbroken, unbroken_model, _ = _fit(
        data_cfg, tmp_path / "unbroken", checkpoints=tmp_path / "ckpt"
    )
    assert sorted(unbroken) == list(range(STEPS))
    assert [unbroken[step][:2] for step in (3, 4, 6)] == [(0, 3), (1, 0), (1, 2)]

    # every step: mid-epoch (1-3, 5-7, 9-11, some right after a validation) and epoch ends (4, 8)
    for step in range(1, STEPS):
        ckpt = tmp_path / "ckpt" / f"step={step}.ckpt"
        torch.manual_seed(step)  # the resumed model's fresh weights are overwritten from ckpt
        resumed, resumed_model, warned = _fit(data_cfg, tmp_path / f"resumed{step}", ckpt_path=ckpt)
        assert sorted(resumed) == list(range(step, STEPS)), f"from step {step}"
        for at in range(step, STEPS):
            epoch, batch_idx, prev, nxt = resumed[at]
            assert (epoch, batch_idx) == unbroken[at][:2], f"from step {step}, step {at}"
            assert torch.equal(prev, unbroken[at][2]) and torch.equal(nxt, unbroken[at][3]), (
                f"resumed from step {step}, step {at} trains on other windows than the unbroken run"
            )
        for name, weight in resumed_model.state_dict().items():
            assert torch.equal(weight, unbroken_model.state_dict()[name]), (
                f"from step {step}: {name}"
            )
        # what Lightning kept of the loader: its position, a plain dict
        assert not [w for w in warned if "dataloader is not resumable" in w]
        state = torch.load(ckpt, weights_only=True)["loops"]["fit_loop"]["state_dict"]
        epoch, batch = divmod(step, 4)
        expected_state = (
            {"epoch": epoch - 1, "batch": 4} if batch == 0 else {"epoch": epoch, "batch": batch}
        )
        assert state["combined_loader"] == [expected_state]

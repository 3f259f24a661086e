"""data.mode=stream: rows walk through the audio window after window, and seq2seq / vseq2seq
carry their encoder state from batch to batch (truncated backpropagation through time)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from lofibeats.commands.train import train
from lofibeats.data.datamodule import LofiDataModule
from lofibeats.data.manifest import Manifest, SourceEntry
from lofibeats.errors import ConfigError
from lofibeats.models.seq2seq import Seq2SeqModule
from lofibeats.models.vseq2seq import VSeq2SeqModule

SR = 8000
WINDOW = 64
pytestmark = pytest.mark.filterwarnings(
    "ignore:.*self.log.*but the `self.trainer` reference is not registered:UserWarning"
)


def ramp_cache(root: Path, lengths: list[int]) -> Path:
    """A cache whose samples count up (every sample says where it came from): train sources of
    `lengths`, one val source."""
    import numpy as np

    sr_dir = root / f"sr{SR}"
    sr_dir.mkdir(parents=True)
    entries, parts, value = [], [], -16000
    for i, samples in enumerate([*lengths, 2000]):
        offset = sum(len(p) for p in parts)
        parts.append(np.arange(value, value + samples, dtype=np.int16))
        value += samples
        split = "val" if i == len(lengths) else "train"
        entries.append(
            SourceEntry(
                f"s{i}.wav", "h", 1, 0, samples / SR, samples, "shard-0001.npy", offset, split
            )
        )
    np.save(sr_dir / "shard-0001.npy", np.concatenate(parts))
    Manifest(sr=SR, raw_dir="/raw", sources=entries, shards=["shard-0001.npy"]).save(sr_dir)
    return root


def stream_dm(root: Path, **overrides) -> LofiDataModule:
    kwargs = dict(
        cache_dir=root,
        sr=SR,
        prev_len_min=64,
        prev_len_max=128,
        next_len=WINDOW,
        batch_size=6,
        train_batches_per_epoch=10,
        val_windows=4,
        seed=3,
        mode="stream",
        stream_segment=8 * WINDOW,
    )
    return LofiDataModule(**{**kwargs, **overrides})


def test_rows_walk_consecutive_windows_and_say_when_they_restart(tmp_path: Path) -> None:
    dataset = stream_dm(ramp_cache(tmp_path, [3000, 1000, 700])).train_dataset
    batches = [dataset.batch(i, epoch) for epoch in range(3) for i in range(10)]
    restarts = 0
    for before, after in zip(batches, batches[1:], strict=False):
        prev, nxt, reset = after
        assert prev.shape == nxt.shape == (6, WINDOW) and reset.dtype == torch.bool
        # next continues prev sample by sample (the ramp goes up by one step per sample)
        steps = torch.diff(torch.cat([prev, nxt], dim=1), dim=1)
        assert torch.allclose(steps, steps[:, :1].expand_as(steps))
        carried = ~reset
        assert torch.equal(prev[carried], before[1][carried])  # this prev = the last next
        restarts += int(reset.sum())
    assert restarts > 0  # sources end and segments restart
    assert bool(batches[0][2].all())  # every row starts fresh


def test_a_batch_is_a_function_of_its_index(tmp_path: Path) -> None:
    """Workers build batches by index and resume seeks by index: a fresh dataset agrees."""
    root = ramp_cache(tmp_path, [3000, 1000, 700])
    walked = stream_dm(root).train_dataset
    sequential = [walked.batch(i, 1) for i in range(10)]
    fresh = stream_dm(root).train_dataset
    for i in (7, 2, 9):
        for a, b in zip(fresh.batch(i, 1), sequential[i], strict=True):
            assert torch.equal(a, b)


def test_stream_mode_is_checked(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="data.mode"):
        stream_dm(tmp_path, mode="tbptt")
    with pytest.raises(ConfigError, match="data.stream_segment"):
        stream_dm(tmp_path, stream_segment="soon")


@pytest.mark.parametrize("family", [Seq2SeqModule, VSeq2SeqModule])
def test_the_encoder_state_is_carried_and_reset_per_row(family) -> None:
    torch.manual_seed(0)
    model = family(sr=SR, prev_len_max=128, next_len=WINDOW, hidden=8, layers=1, embed_dim=4)
    prev, nxt = torch.rand(3, WINDOW) - 0.5, torch.rand(3, WINDOW) - 0.5
    model.training_step((prev, nxt, torch.ones(3, dtype=torch.bool)), 0)
    first = tuple(s.clone() for s in model.carried)
    assert not first[0].requires_grad
    tokens = model.net.head.tokens(prev)
    torch.testing.assert_close(first[0], model.net.encoder_state(tokens)[0])
    model.training_step((nxt, prev, torch.tensor([False, True, False])), 1)
    fresh = model.net.encoder_state(model.net.head.tokens(nxt))
    going_on = model.net.encoder_state(model.net.head.tokens(nxt), first)
    torch.testing.assert_close(model.carried[0][:, 1], fresh[0][:, 1])
    torch.testing.assert_close(model.carried[0][:, [0, 2]], going_on[0][:, [0, 2]])


def test_a_stream_mode_run_trains(make_cfg) -> None:
    """Lengths given as durations too: the model and the data keep them in samples alike."""
    overrides = ["model=seq2seq", "data.mode=stream", "data.next_len=8ms", "data.prev_len_max=16ms"]
    cfg = make_cfg("train", ["debug=fast", *overrides])
    assert train(cfg) is not None
    assert (Path(cfg.paths.output_dir) / "checkpoints" / "last.ckpt").is_file()


def test_the_gan_says_it_trains_on_windows(make_cfg) -> None:
    cfg = make_cfg("train", ["debug=fast", "model=gan", "data.mode=stream"])
    with pytest.raises(ConfigError, match="data.mode=stream"):
        train(cfg)

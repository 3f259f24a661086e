"""LofiDataModule: (prev, next) windows memory-mapped from a hand-built cache.

Every sample of the test corpus is unique (a ramp of int16 values), so a window's values tell
exactly where in which shard it came from.
"""

from __future__ import annotations

import io
import pickle
import shutil
import types
from pathlib import Path

import numpy as np
import pytest
import pytorch_lightning as pl
import soundfile as sf
import torch
from omegaconf import OmegaConf

from lofibeats.data.datamodule import LofiDataModule
from lofibeats.data.manifest import Manifest, SourceEntry
from lofibeats.errors import ConfigError, DataError

from helpers import CONF, sine, tiny_trainer

SR = 8000
# (path, shard, samples, split): source "c" is too short for any window
SOURCES = [
    ("a.wav", "shard-0001.npy", 3000, "train"),
    ("b.wav", "shard-0001.npy", 5000, "train"),
    ("c.wav", "shard-0002.npy", 100, "train"),
    ("d.wav", "shard-0002.npy", 4000, "val"),
    ("e.wav", "shard-0002.npy", 2500, "val"),
]
FIRST_VALUE = -16000  # sample value of the first sample of the corpus; then +1 per sample
LENGTHS = {"prev_len_min": 64, "prev_len_max": 256, "next_len": 128}


def write_cache(cache_dir: Path, sources=SOURCES) -> Path:
    """cache_dir/sr8000 with int16 shards (np.save) and a manifest: the prepare contract."""
    sr_dir = cache_dir / f"sr{SR}"
    sr_dir.mkdir(parents=True)
    entries, shards, value = [], {}, FIRST_VALUE
    for path, shard, samples, split in sources:
        offset = sum(len(a) for a in shards.get(shard, []))
        shards.setdefault(shard, []).append(np.arange(value, value + samples, dtype=np.int16))
        value += samples
        entries.append(
            SourceEntry(
                path=path,
                hash="h",
                size=1,
                mtime_ns=0,
                seconds=samples / SR,
                samples=samples,
                shard=shard,
                offset=offset,
                split=split,
            )
        )
    for name, parts in shards.items():
        np.save(sr_dir / name, np.concatenate(parts))
    Manifest(sr=SR, raw_dir="/raw", sources=entries, shards=sorted(shards)).save(sr_dir)
    return sr_dir


def make_dm(cache_dir: Path, **overrides) -> LofiDataModule:
    kwargs = {
        "cache_dir": cache_dir,
        "sr": SR,
        **LENGTHS,
        "batch_size": 4,
        "train_batches_per_epoch": 12,
        "val_windows": 10,
        "seed": 7,
        **overrides,
    }
    return LofiDataModule(**kwargs)


@pytest.fixture
def cache(tmp_path: Path) -> Path:
    write_cache(tmp_path / "cache")
    return tmp_path / "cache"


def to_pcm(audio: torch.Tensor) -> np.ndarray:
    pcm = audio.numpy().astype(np.float64) * 32768
    assert np.array_equal(pcm, np.round(pcm)), "not int16 / 32768"
    return pcm.astype(np.int64)


def source_at(value: int) -> tuple[str, str, int, int]:
    """(path, split, value of its first sample, samples) of the source holding sample `value`."""
    start = FIRST_VALUE
    for path, _, samples, split in SOURCES:
        if start <= value < start + samples:
            return path, split, start, samples
        start += samples
    raise AssertionError(f"value {value} is in no source")


def check_windows(prev: torch.Tensor, nxt: torch.Tensor, split: str, sr_dir: Path) -> set[str]:
    """Each row: prev then next are contiguous raw shard samples of one source of `split`."""
    assert prev.dtype == nxt.dtype == torch.float32
    assert prev.shape[0] == nxt.shape[0] and nxt.shape[1] == LENGTHS["next_len"]
    assert prev.is_contiguous() and nxt.is_contiguous()
    assert prev.abs().max() <= 1 and nxt.abs().max() <= 1
    entries = {e.path: e for e in Manifest.load(sr_dir).sources}
    used = set()
    for row in np.concatenate([to_pcm(prev), to_pcm(nxt)], axis=1):
        path, row_split, start, samples = source_at(int(row[0]))
        assert row_split == split and row[0] - start + len(row) <= samples, f"window leaves {path}"
        entry = entries[path]
        at = entry.offset + int(row[0]) - start
        assert np.array_equal(row, np.load(sr_dir / entry.shard)[at : at + len(row)])
        used.add(path)
    return used


def batches(loader) -> list[tuple[torch.Tensor, torch.Tensor]]:
    return [(p.clone(), n.clone()) for p, n in loader]


def same(a, b) -> bool:
    return len(a) == len(b) and all(
        torch.equal(p1, p2) and torch.equal(n1, n2) for (p1, n1), (p2, n2) in zip(a, b, strict=True)
    )


def test_train_batches_are_contiguous_windows_of_one_train_source(cache: Path):
    dm = make_dm(cache)
    dm.setup("fit")
    got = batches(dm.train_dataloader())
    assert len(got) == 12
    used = set()
    for prev, nxt in got:
        assert prev.shape[0] == 4
        assert LENGTHS["prev_len_min"] <= prev.shape[1] <= LENGTHS["prev_len_max"]
        used |= check_windows(prev, nxt, "train", dm.sr_dir)
    assert used == {"a.wav", "b.wav"}  # c.wav is too short for any window
    assert len({p.shape[1] for p, _ in got}) > 3, "Tp must vary from batch to batch"


def test_train_is_reproducible_and_varies_with_seed_epoch_and_rank(cache: Path):
    loader = make_dm(cache).train_dataloader()
    epoch0, epoch1 = batches(loader), batches(loader)
    assert same(epoch0, batches(make_dm(cache).train_dataloader()))
    assert not same(epoch0, epoch1)
    assert not same(epoch0, batches(make_dm(cache, seed=8).train_dataloader()))
    dm = make_dm(cache)
    dataset = dm.train_dataset
    dm.trainer = types.SimpleNamespace(global_rank=1, current_epoch=0)  # as DDP rank 1 sees it
    assert dm.train_dataset.rank == 1
    assert not torch.equal(dataset.batch(0, 0)[1], dm.train_dataset.batch(0, 0)[1])
    assert torch.equal(dataset.batch(3, 1)[1], epoch1[3][1])


def test_train_loader_state_resumes_mid_epoch(cache: Path):
    """A loader restored from another's `state_dict` hands out what the other would have next."""
    unbroken = make_dm(cache).train_dataloader()
    epochs = [batches(unbroken) for _ in range(3)]
    assert unbroken.state_dict() == {"epoch": 2, "batch": 12}

    dm = make_dm(cache)
    dm.trainer = types.SimpleNamespace(global_rank=0, current_epoch=1)  # as the Trainer sees it
    first = dm.train_dataloader()
    assert first.state_dict() == {"epoch": 0, "batch": 0}
    drawn = iter(first)
    taken = [next(drawn) for _ in range(5)]
    assert same(taken, epochs[1][:5])
    buffer = io.BytesIO()
    torch.save(first.state_dict(), buffer)  # what a checkpoint does with it
    state = torch.load(io.BytesIO(buffer.getvalue()), weights_only=True)
    assert state == {"epoch": 1, "batch": 5}

    dm = make_dm(cache)
    dm.trainer = clock = types.SimpleNamespace(global_rank=0, current_epoch=1)
    resumed = dm.train_dataloader()
    resumed.load_state_dict(state)
    assert resumed.state_dict() == state  # saved again before it draws: still the same position
    assert same(batches(resumed), epochs[1][5:])
    assert resumed.state_dict() == {"epoch": 1, "batch": 12}
    clock.current_epoch = 2
    assert same(batches(resumed), epochs[2]), "the next epoch starts at its batch 0"

    # a checkpoint taken at the end of epoch 1 resumes with all of epoch 2
    dm = make_dm(cache)
    dm.trainer = types.SimpleNamespace(global_rank=0, current_epoch=2)
    after_epoch = dm.train_dataloader()
    after_epoch.load_state_dict({"epoch": 1, "batch": 12})
    assert same(batches(after_epoch), epochs[2])

    # without a trainer, the loader's own pass count is restored with the position
    alone = make_dm(cache).train_dataloader()
    alone.load_state_dict(state)
    assert same(batches(alone), epochs[1][5:])
    assert same(batches(alone), epochs[2])
    with pytest.raises(DataError, match="train loader state .* resume from another checkpoint"):
        alone.load_state_dict({"step": 3})


def test_spawn_workers_give_the_same_batches_as_the_main_process(cache: Path):
    dm = make_dm(cache, num_workers=2, train_batches_per_epoch=5)
    loader = dm.train_dataloader()
    assert loader.persistent_workers
    assert loader.multiprocessing_context.get_start_method() == "spawn"
    serial = make_dm(cache, train_batches_per_epoch=5).train_dataloader()
    expected = [batches(serial) for _ in range(3)]
    # resumed after 2 batches of epoch 0; then epoch 1 from the same persistent workers
    loader.load_state_dict({"epoch": 0, "batch": 2})
    assert same(batches(loader), expected[0][2:])
    assert same(batches(loader), expected[1])
    drawn = iter(loader)
    taken = [next(drawn) for _ in range(2)]
    assert same(taken, expected[2][:2])
    # the workers have built batches ahead by now; the state counts what was handed out
    assert loader.state_dict() == {"epoch": 2, "batch": 2}
    loader.load_state_dict(loader.state_dict())  # workers already running see the new start too
    assert same(batches(loader), expected[2][2:])


def test_val_windows_are_fixed_and_spread_over_val_sources(cache: Path):
    dm = make_dm(cache, batch_size=3)
    dm.setup("validate")
    first = batches(dm.val_dataloader())
    assert [p.shape for p, _ in first] == [(3, 256)] * 3 + [(1, 256)]
    assert isinstance(next(iter(dm.val_dataloader())), tuple)
    used = set()
    for prev, nxt in first:
        used |= check_windows(prev, nxt, "val", dm.sr_dir)
    assert used == {"d.wav", "e.wav"}
    assert same(first, batches(dm.val_dataloader()))
    assert same(first, batches(make_dm(cache, batch_size=3, seed=99).val_dataloader()))
    starts = [int(to_pcm(p)[i, 0]) for p, _ in first for i in range(len(p))]
    assert len(set(starts)) == 10


def test_val_clip_is_the_start_of_a_val_source(cache: Path):
    dm = make_dm(cache)
    d_start, e_start = FIRST_VALUE + 3000 + 5000 + 100, FIRST_VALUE + 12100  # after a, b, c (, d)
    clip = dm.val_clip(0, 1000)
    assert clip.dtype == np.float32 and clip.shape == (1000,)
    assert np.array_equal(clip * 32768, np.arange(d_start, d_start + 1000))
    assert np.array_equal(dm.val_clip(3, 10) * 32768, np.arange(e_start, e_start + 10))
    long = dm.val_clip(1, 3000)  # e.wav has 2500 samples: leading silence, ends on real audio
    assert long.shape == (3000,) and not long[:500].any()
    assert np.array_equal(long[500:] * 32768, np.arange(e_start, e_start + 2500))


def test_shards_are_memory_mapped_and_not_pickled(cache: Path):
    dataset = make_dm(cache).train_dataset
    expected = dataset.batch(2, 0)
    assert all(isinstance(dataset.store.shard(i), np.memmap) for i in range(2))
    payload = pickle.dumps(dataset)
    assert len(payload) < 4000  # the shards alone are 29 kB
    clone = pickle.loads(payload)
    assert clone.store._maps == clone.store._views == {}
    restored = clone.batch(2, 0)
    assert torch.equal(restored[0], expected[0]) and torch.equal(restored[1], expected[1])


@pytest.mark.parametrize(
    ("overrides", "need"), [({"prev_len_max": 4900}, 5028), ({"next_len": "0.7s"}, 5856)]
)
def test_too_short_corpus_is_a_data_error(cache: Path, overrides, need):
    dm = make_dm(cache, **overrides)
    message = f"corpus too short: .* need {need} samples per source, longest is 5000; lower data"
    with pytest.raises(DataError, match=message):
        dm.train_dataloader()
    with pytest.raises(DataError, match="no val source .* longest is 4000"):
        dm.val_dataloader()


def test_empty_val_split_is_a_data_error(tmp_path: Path):
    write_cache(tmp_path, [s[:3] + ("train",) for s in SOURCES])
    dm = make_dm(tmp_path, val_fraction=0.0)
    assert len(dm.train_dataloader()) == 12
    with pytest.raises(DataError, match=r"no val sources .*data\.val_fraction"):
        dm.val_dataloader()
    with pytest.raises(DataError, match="no val sources"):
        dm.val_clip(0, 10)


def test_missing_cache_and_wrong_rate_are_data_errors(cache: Path, tmp_path: Path):
    with pytest.raises(DataError, match="no manifest"):
        make_dm(tmp_path / "elsewhere").setup()
    shutil.copytree(cache / f"sr{SR}", cache / "sr16000")
    with pytest.raises(DataError, match=r"for 8000 Hz, data\.sr=16000"):
        make_dm(cache, sr=16000).setup()
    np.save(cache / f"sr{SR}" / "shard-0002.npy", np.zeros(10, np.int16))
    with pytest.raises(DataError, match="shard-0002.npy ends at sample 10"):
        make_dm(cache).setup()


@pytest.mark.parametrize(
    ("overrides", "key"),
    [
        ({"prev_len_min": 300}, "data.prev_len_min"),
        ({"prev_len_max": "-1s"}, "data.prev_len_max"),
        ({"next_len": "soon"}, "data.next_len"),
        ({"batch_size": 0}, "data.batch_size"),
        ({"num_workers": -1}, "data.num_workers"),
        ({"train_batches_per_epoch": 0}, "data.train_batches_per_epoch"),
        ({"val_windows": 0}, "data.val_windows"),
        ({"val_fraction": 1.0}, "data.val_fraction"),
        ({"val_fraction": -0.1}, "data.val_fraction"),
        ({"seed": -3}, "data.seed"),
        ({"sr": 0}, "data.sr"),
        ({"batch_size": 2.5}, "data.batch_size"),
        ({"num_workers": True}, "data.num_workers"),
        ({"seed": "7"}, "data.seed"),
        ({"val_fraction": "0.2"}, "data.val_fraction"),
    ],
)
def test_bad_config_values_name_their_key(tmp_path: Path, overrides, key):
    with pytest.raises(ConfigError, match=key):
        make_dm(tmp_path, **overrides)


def test_whole_floats_are_taken_as_ints(cache: Path):
    """`data.batch_size=4.0` on the command line means 4 (what every numeric knob accepts)."""
    dm = make_dm(cache, sr=8000.0, batch_size=4.0, train_batches_per_epoch=3.0, seed=7.0)
    assert (dm.sr, dm.batch_size, dm.train_batches_per_epoch, dm.seed) == (SR, 4, 3, 7)
    assert all(type(v) is int for v in (dm.sr, dm.batch_size, dm.seed))
    assert same(
        batches(dm.train_dataloader()),
        batches(make_dm(cache, train_batches_per_epoch=3).train_dataloader()),
    )


def data_config(tmp_path: Path, **values):
    cfg = OmegaConf.load(CONF / "data" / "default.yaml")
    cfg.cache_dir, cfg.raw_dir = str(tmp_path / "cache"), str(tmp_path / "raw")
    for key, value in values.items():
        cfg[key] = value
    return cfg


def test_from_config_reads_the_cache_prepare_keeps_for_the_folder(tmp_path: Path, monkeypatch):
    from lofibeats.data import prepare  # here: only the from_config tests depend on prepare

    cfg = data_config(tmp_path, prev_len_max="300ms")  # 2400 samples at 8 kHz
    sr_dir = write_cache(prepare.resolve_cache_dir(cfg))
    dm = LofiDataModule.from_config(cfg)
    assert (dm.sr, dm.sr_dir, dm.prev_len_max) == (SR, sr_dir, 2400)
    calls = []
    monkeypatch.setattr(prepare, "ensure_prepared", lambda *args: calls.append(args))
    dm.prepare_data()
    assert calls == [(cfg, SR)]
    assert len(dm.val_dataset) == 64
    del cfg["val_windows"]
    with pytest.raises(ConfigError, match="data.val_windows is missing"):
        LofiDataModule.from_config(cfg)


def test_reads_what_prepare_writes(tmp_path: Path):
    raw = tmp_path / "raw"
    raw.mkdir()
    for i in range(6):  # 1 s each of the harmonics of 110 Hz
        sf.write(raw / f"tone{i}.wav", sine(110, 0.3, 1.0, SR, ratio=i + 1), SR)
    cfg = data_config(tmp_path, prepare_workers=1, val_fraction=0.5, **LENGTHS, batch_size=2)
    dm = LofiDataModule.from_config(cfg)
    dm.prepare_data()
    prev, nxt = next(iter(dm.train_dataloader()))
    assert prev.shape[0] == nxt.shape[0] == 2 and nxt.shape[1] == 128
    prev, nxt = next(iter(dm.val_dataloader()))
    assert prev.shape == (2, 256) and nxt.shape == (2, 128) and prev.abs().max() > 0.1


class _Recorder(pl.LightningModule):
    """Records what the Trainer feeds it; learns nothing."""

    def __init__(self):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(()))
        self.seen: dict[int, list[torch.Tensor]] = {}
        self.val_shapes: list[tuple[int, int]] = []

    def training_step(self, batch, batch_idx):
        prev, nxt = batch
        self.seen.setdefault(self.current_epoch, []).append(nxt.clone())
        return (self.weight * prev.mean()) ** 2 + self.weight**2

    def validation_step(self, batch, batch_idx):
        assert isinstance(batch, tuple)
        self.val_shapes.append(tuple(batch[0].shape))

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def test_trainer_sees_a_new_draw_each_epoch(cache: Path):
    model, dm = _Recorder(), make_dm(cache, train_batches_per_epoch=3)
    trainer = tiny_trainer(max_steps=-1, max_epochs=2)
    trainer.fit(model, datamodule=dm)
    assert [len(model.seen[e]) for e in (0, 1)] == [3, 3]
    reference = make_dm(cache, train_batches_per_epoch=3).train_dataset
    for epoch in (0, 1):
        for index, nxt in enumerate(model.seen[epoch]):
            assert torch.equal(nxt, reference.batch(index, epoch)[1])
    assert model.val_shapes[:3] == [(4, 256), (4, 256), (2, 256)]

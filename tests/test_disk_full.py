"""A full disk: prepare and checkpoint saving stop with one line (how much space, where), the
previous cache and checkpoint stay intact and usable, and a rerun after space is freed completes.

Most tests make writes fail with ENOSPC through a fake `open` with a byte budget; one mounts a
real, size-limited tmpfs where the platform lets it (Linux, root).
"""

from __future__ import annotations

import builtins
import errno
import hashlib
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
from hydra.utils import instantiate

from lofibeats.data import manifest as manifest_module
from lofibeats.data import pack, process
from lofibeats.data.space import DiskFullError, human_bytes, is_disk_full
from lofibeats.errors import LofiError
from lofibeats.training import checkpoint_io
from lofibeats.training.checkpoint_io import (
    AtomicCheckpointIO,
    CheckpointDiskFullError,
    serialized_size,
)

from helpers import check_cache, prepare, tiny_trainer, write_tone

ONE_LINE = re.compile(
    r"^disk full: could not write (?P<what>.+?) in (?P<where>.+?): needs about "
    r"(?P<need>[\d.]+ (?:bytes|kB|MB|GB)) there, [\d.]+ (?:bytes|kB|MB|GB|TB) free now; "
)


class FakeDisk:
    """`open` for the modules under test: writes beyond `free` bytes (or to a file whose name
    contains `fail_on`) raise ENOSPC, as a full disk does."""

    def __init__(self, free: float = float("inf"), fail_on: str | None = None):
        self.free = free
        self.fail_on = fail_on
        self.failures = 0

    def open(self, file, mode="r", *args, **kwargs):
        fh = builtins.open(file, mode, *args, **kwargs)  # noqa: SIM115 - the caller closes it
        if any(c in mode for c in "wxa+"):
            return _LimitedFile(fh, self, Path(file))
        return fh

    def take(self, path: Path, n: int) -> None:
        if n > self.free or (self.fail_on and self.fail_on in path.name):
            self.failures += 1
            raise OSError(errno.ENOSPC, "No space left on device")
        self.free -= n


class _LimitedFile:
    def __init__(self, fh, disk: FakeDisk, path: Path):
        self._fh, self._disk, self._path = fh, disk, path

    def write(self, data):
        n = len(data) if isinstance(data, str) else memoryview(data).nbytes
        self._disk.take(self._path, n)
        return self._fh.write(data)

    def __getattr__(self, name):
        return getattr(self._fh, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self._fh.close()


@pytest.fixture
def disk(monkeypatch) -> FakeDisk:
    fake = FakeDisk()
    for module in (pack, manifest_module, process, checkpoint_io):
        monkeypatch.setattr(module, "open", fake.open, raising=False)
    return fake


def snapshot(folder: Path) -> dict[str, str]:
    """Every file under `folder` (but the lock and the unused list) with its content hash."""
    return {
        p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file() and p.name not in (".lock", "unused-files.tsv")
    }


def corpus(raw: Path, names: list[str], seconds: float = 1.0) -> None:
    for i, name in enumerate(names):
        write_tone(raw / name, seconds, freq=200 + 50 * i)


def test_enospc_writing_shards_leaves_no_cache_and_a_rerun_completes(tmp_path: Path, disk):
    raw, cache = tmp_path / "raw", tmp_path / "cache"
    corpus(raw, ["a.wav", "b.wav", "c.wav"])
    disk.free = 20_000  # the shards need ~48 kB at 8 kHz

    with pytest.raises(DiskFullError) as error:
        prepare(raw, cache, shard_mb=0.01)

    message = str(error.value)
    match = ONE_LINE.match(message)
    assert match and "\n" not in message, message
    assert match["what"].startswith("shard-") and match["where"] == str(cache / "sr8000")
    assert 40e3 < _bytes(match["need"]) < 60e3  # 3 s at 8 kHz, int16, + manifest
    assert "previous cache is intact" in message and "run prepare again" in message
    assert isinstance(error.value, LofiError) and disk.failures
    assert not any((cache / "sr8000").glob("*")), "no shard or temp file left behind"
    assert not (cache / ".staging").exists()

    disk.free = float("inf")  # space freed
    report = prepare(raw, cache, shard_mb=0.01)
    assert report.kept == 3 and len(check_cache(cache / "sr8000").sources) == 3


def test_enospc_on_an_update_keeps_the_previous_cache_byte_for_byte(tmp_path: Path, disk):
    raw, cache = tmp_path / "raw", tmp_path / "cache"
    corpus(raw, ["old 1.wav", "old 2.flac"])
    prepare(raw, cache, rates=(8000, 16000))
    before = snapshot(cache)
    corpus(raw, ["new 1.wav", "new 2.wav", "new 3.wav"], seconds=2.0)
    disk.free = 70_000  # 6 s of new audio at 8 + 16 kHz needs ~290 kB

    with pytest.raises(DiskFullError, match=r"^disk full: could not write shard-\d+\.npy in "):
        prepare(raw, cache, rates=(8000, 16000))

    assert snapshot(cache) == before
    for sr in (8000, 16000):
        assert len(check_cache(cache / f"sr{sr}").sources) == 2  # usable as it was
    disk.free = float("inf")
    prepare(raw, cache, rates=(8000, 16000))
    for sr in (8000, 16000):
        assert len(check_cache(cache / f"sr{sr}").sources) == 5


def test_enospc_writing_the_manifest_keeps_each_rate_old_or_new_and_removes_new_shards(
    tmp_path: Path, disk
):
    raw, cache = tmp_path / "raw", tmp_path / "cache"
    corpus(raw, ["a.wav", "b.wav"])
    prepare(raw, cache, rates=(8000, 16000))
    before = snapshot(cache)
    corpus(raw, ["c.wav"])
    disk.fail_on = "manifest.json"

    with pytest.raises(DiskFullError) as error:
        prepare(raw, cache, rates=(8000, 16000))

    match = ONE_LINE.match(str(error.value))
    assert match and match["what"] == "manifest.json", str(error.value)
    assert match["where"] == str(cache / "sr8000")
    assert snapshot(cache) == before  # the new shards of both rates are gone again
    disk.fail_on = None
    prepare(raw, cache, rates=(8000, 16000))
    assert {len(check_cache(cache / f"sr{sr}").sources) for sr in (8000, 16000)} == {3}


def test_a_full_disk_estimate_reads_the_remaining_files_headers(tmp_path: Path, disk):
    raw, cache = tmp_path / "raw", tmp_path / "cache"
    corpus(raw, [f"{i}.wav" for i in range(4)], seconds=1.5)
    disk.free = 5_000  # fails on the first file: the others are estimated from their headers

    with pytest.raises(DiskFullError) as error:
        prepare(raw, cache, rates=(8000, 22050))

    need = _bytes(ONE_LINE.match(str(error.value))["need"])
    exact = 4 * 1.5 * (8000 + 22050) * 2
    assert exact <= need < exact * 1.05


@pytest.mark.skipif(sys.platform != "linux", reason="mounts a tmpfs (Linux only)")
def test_a_real_full_file_system_then_more_space(tmp_path: Path):
    mount = tmp_path / "small disk"
    mount.mkdir()
    if os.geteuid() != 0 or _mount(mount, "size=128k") != 0:
        pytest.skip("cannot mount a tmpfs here (needs root and CAP_SYS_ADMIN)")
    try:
        raw, cache = tmp_path / "raw", mount / "cache"
        corpus(raw, ["a.wav", "b.wav", "c.wav"], seconds=2.0)  # ~290 kB at 8 + 16 kHz
        with pytest.raises(DiskFullError) as error:
            prepare(raw, cache, rates=(8000, 16000), shard_mb=0.05)
        print(error.value)
        assert ONE_LINE.match(str(error.value)), str(error.value)
        assert not list(cache.rglob("shard-*")) and not list(cache.rglob("*.tmp"))
        assert _mount(mount, "remount,size=2m") == 0  # space freed
        report = prepare(raw, cache, rates=(8000, 16000), shard_mb=0.05)
        assert report.kept == 3
        check_cache(cache / "sr16000")
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False, capture_output=True)


# --------------------------------------------------------------------------------- checkpoints
def test_checkpoint_enospc_keeps_the_previous_one_and_says_how_much_and_where(tmp_path: Path, disk):
    io = AtomicCheckpointIO()
    path = tmp_path / "checkpoints" / "last.ckpt"
    good = {"state_dict": {"w": torch.arange(10.0)}, "global_step": 1}
    io.save_checkpoint(good, path)
    bigger = {"state_dict": {"w": torch.randn(50_000)}, "global_step": 2}
    disk.free = 100_000  # the new one needs ~200 kB

    with pytest.raises(CheckpointDiskFullError) as error:
        io.save_checkpoint(bigger, path)

    message = str(error.value)
    match = ONE_LINE.match(message)
    assert match and match["what"] == "checkpoint last.ckpt", message
    assert match["where"] == str(path.parent) and "\n" not in message
    assert match["need"] == human_bytes(serialized_size(bigger))
    assert "previous checkpoint is intact" in message and f"ckpt_path={path}" in message
    assert os.listdir(path.parent) == ["last.ckpt"]  # no temp file left
    assert torch.load(path, weights_only=True)["global_step"] == 1

    disk.free = float("inf")
    io.save_checkpoint(bigger, path)
    assert torch.load(path, weights_only=True)["global_step"] == 2


def test_other_errors_are_not_called_a_full_disk(tmp_path: Path, monkeypatch):
    def denied(*args, **kwargs):
        raise PermissionError(errno.EACCES, "Permission denied")

    monkeypatch.setattr(checkpoint_io, "open", denied, raising=False)
    with pytest.raises(PermissionError):
        AtomicCheckpointIO().save_checkpoint({"x": 1}, tmp_path / "a.ckpt")
    assert not is_disk_full(PermissionError(errno.EACCES, "x"))
    try:  # torch wraps what a file object raised in a RuntimeError: still a full disk
        try:
            raise OSError(errno.ENOSPC, "No space left on device")
        except OSError as exc:
            raise RuntimeError("PytorchStreamWriter failed writing file") from exc
    except RuntimeError as wrapped:
        assert is_disk_full(wrapped)


class TinyModule(pl.LightningModule):
    def __init__(self):
        super().__init__()
        self.layer = torch.nn.Linear(4, 1)

    def training_step(self, batch, batch_idx):
        return self.layer(batch).pow(2).mean()

    def train_dataloader(self):
        return torch.utils.data.DataLoader(torch.randn(64, 4), batch_size=8)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.01)


def _trainer(tmp_path: Path, steps: int) -> pl.Trainer:
    return tiny_trainer(
        default_root_dir=tmp_path,
        max_steps=steps,
        enable_checkpointing=True,
        plugins=[AtomicCheckpointIO()],
        callbacks=[
            pl.callbacks.ModelCheckpoint(
                dirpath=tmp_path / "checkpoints", save_last=True, every_n_train_steps=2
            )
        ],
    )


@pytest.mark.filterwarnings("ignore:.*Checkpoint directory.*exists and is not empty")
@pytest.mark.filterwarnings("ignore:.*resuming from a checkpoint that ended before the epoch")
def test_training_stops_with_one_line_on_a_full_disk_and_resumes_from_last(tmp_path: Path, disk):
    _trainer(tmp_path, 2).fit(TinyModule())
    last = tmp_path / "checkpoints" / "last.ckpt"
    assert torch.load(last, weights_only=False)["global_step"] == 2
    before = last.read_bytes()

    disk.free = 0
    with pytest.raises(CheckpointDiskFullError, match=r"^disk full: could not write checkpoint "):
        _trainer(tmp_path, 4).fit(TinyModule(), ckpt_path=last)
    assert last.read_bytes() == before
    assert not [p for p in last.parent.iterdir() if p.name.endswith(".tmp")]

    disk.free = float("inf")
    _trainer(tmp_path, 4).fit(TinyModule(), ckpt_path=last)
    assert torch.load(last, weights_only=False)["global_step"] == 4


@pytest.mark.parametrize("trainer", ["default", "cpu"])
def test_the_trainer_config_wires_the_atomic_checkpoint_writer(make_cfg, trainer: str):
    cfg = make_cfg("train", ["debug=fast", f"trainer={trainer}"])
    built = instantiate(cfg.trainer, callbacks=[], logger=False)
    assert isinstance(built.strategy.checkpoint_io, AtomicCheckpointIO)


def _bytes(text: str) -> float:
    value, unit = text.split()
    return float(value) * {"bytes": 1, "kB": 1e3, "MB": 1e6, "GB": 1e9}[unit]


def _mount(path: Path, options: str) -> int:
    args = ["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)]
    if options.startswith("remount"):
        args = ["mount", "-o", options, str(path)]
    try:
        return subprocess.run(args, capture_output=True, timeout=10).returncode
    except (OSError, subprocess.SubprocessError):
        return 1

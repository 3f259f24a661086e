"""Checkpoints written so that a full disk (or a kill) never costs the last good one.

:class:`AtomicCheckpointIO` is the Trainer's `CheckpointIO` plugin (`conf/trainer/default.yaml`,
`plugins:`). It writes a checkpoint to a hidden temp file in the same folder, fsyncs it and only
then renames it over the old file (`os.replace`, atomic on POSIX and Windows). When the disk is
full (or a quota is exceeded) the temp file is removed and :class:`CheckpointDiskFullError` says,
in one line, which folder, how many bytes the checkpoint needs (measured by serialising it into a
byte counter, nothing written) and how many are free; `last.ckpt` and `best.ckpt` are untouched,
and `python train.py ckpt_path=<...>/last.ckpt` resumes from them once space is freed.

Paths with a URL scheme (`s3://...`) go to Lightning's own writer.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from pathlib import Path
from typing import Any

import torch
from lightning_fabric.plugins.io.torch_io import TorchCheckpointIO

from lofibeats.data.space import disk_full_message, is_disk_full
from lofibeats.errors import CheckpointError


class CheckpointDiskFullError(CheckpointError):
    """Saving a checkpoint failed for lack of space; the previous checkpoint is intact."""


class AtomicCheckpointIO(TorchCheckpointIO):
    """`torch.save` into a temp file next to the target, fsync, `os.replace`; one line on ENOSPC."""

    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None
    ) -> None:
        if storage_options is not None or "://" in str(path):
            return super().save_checkpoint(checkpoint, path, storage_options)
        path = Path(path)
        writer: _Writer | None = None
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:12]}.tmp")
            writer = _Writer(tmp)
            try:
                with writer:
                    torch.save(checkpoint, writer)
                    writer.sync()
                os.replace(tmp, path)
            except BaseException:
                with contextlib.suppress(OSError):
                    tmp.unlink(missing_ok=True)
                raise
        except Exception as exc:
            seen = writer.error if writer is not None else None
            if not (is_disk_full(exc) or (seen is not None and is_disk_full(seen))):
                raise
            raise CheckpointDiskFullError(
                disk_full_message(
                    f"checkpoint {path.name}",
                    path.parent,
                    serialized_size(checkpoint),
                    "the previous checkpoint is intact: free some space and resume with "
                    f"ckpt_path={path.parent / 'last.ckpt'}",
                )
            ) from None
        _sync_folder(path.parent)
        return None


class _Writer:
    """A binary file for `torch.save` that remembers the OSError it raised (torch may wrap it in
    a RuntimeError on its way out)."""

    def __init__(self, path: Path):
        self.path = path
        self.error: OSError | None = None
        self._fh = None

    def __enter__(self) -> _Writer:
        self._fh = open(self.path, "xb")  # noqa: SIM115 - closed in __exit__
        return self

    def __exit__(self, *exc_info: object) -> None:
        fh, self._fh = self._fh, None
        try:
            fh.close()
        except OSError as exc:
            self.error = self.error or exc
            if exc_info[0] is None:
                raise

    def write(self, data: Any) -> int:
        try:
            return self._fh.write(data)
        except OSError as exc:
            self.error = exc
            raise

    def flush(self) -> None:
        try:
            self._fh.flush()
        except OSError as exc:
            self.error = exc
            raise

    def sync(self) -> None:
        self.flush()
        try:
            os.fsync(self._fh.fileno())
        except OSError as exc:
            self.error = exc
            raise

    def tell(self) -> int:
        return self._fh.tell()

    def seek(self, *args: int) -> int:
        return self._fh.seek(*args)

    def seekable(self) -> bool:
        return True

    def writable(self) -> bool:
        return True


class _Counter:
    """A write-only sink that only counts bytes."""

    def __init__(self) -> None:
        self.size = 0

    def write(self, data: Any) -> int:
        n = memoryview(data).nbytes
        self.size += n
        return n

    def flush(self) -> None:
        pass


def serialized_size(checkpoint: dict[str, Any]) -> int | None:
    """Bytes `torch.save(checkpoint)` writes, measured without writing them (None if it fails)."""
    counter = _Counter()
    try:
        torch.save(checkpoint, counter)
    except Exception:
        return None
    return counter.size


def _sync_folder(folder: Path) -> None:
    """Make the rename durable (POSIX; a no-op where folders cannot be opened)."""
    if os.name != "posix":
        return
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

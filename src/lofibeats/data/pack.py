"""Packing sources into int16 `.npy` shards of about `shard_mb`, each written atomically.

Shards are immutable: new audio always goes into new shards (new names), which is what makes an
interrupted prepare harmless. :class:`ShardPacker` appends sources as they arrive to a temp file
and renames it once it holds `target_samples` or more, so every shard but the last of a run is at
least the target size; a source is never split across shards.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from lofibeats.errors import DataError

SHARD_DTYPE = "<i2"
SHARD_NAME = re.compile(r"^shard-(\d+)\.npy$")
COPY_CHUNK = 1 << 20


@dataclass(frozen=True)
class Piece:
    """`samples` int16 samples of source `rel`, stored in `src` from byte `src_offset` on."""

    rel: str
    samples: int
    src: Path
    src_offset: int = 0


def shard_name(number: int) -> str:
    return f"shard-{number:05d}.npy"


def next_shard_number(names: Iterable[str]) -> int:
    numbers = [int(m.group(1)) for name in names if (m := SHARD_NAME.match(name))]
    return max(numbers, default=0) + 1


def read_shard_header(path: Path) -> tuple[int, int]:
    """(samples, data offset in bytes) of a 1-D int16 shard; DataError if it is not one."""
    try:
        with open(path, "rb") as fh:
            version = np.lib.format.read_magic(fh)
            if version == (1, 0):
                shape, fortran, dtype = np.lib.format.read_array_header_1_0(fh)
            else:
                shape, fortran, dtype = np.lib.format.read_array_header_2_0(fh)
            offset = fh.tell()
        size = path.stat().st_size
    except (OSError, ValueError) as exc:
        raise DataError(f"unreadable shard {path} ({exc})") from None
    if len(shape) != 1 or dtype != np.dtype(SHARD_DTYPE) or fortran:
        raise DataError(f"shard {path} holds {dtype} {shape}, not 1-D int16")
    if size != offset + 2 * shape[0]:
        raise DataError(
            f"shard {path} is {size} bytes, its header promises {offset + 2 * shape[0]}"
        )
    return int(shape[0]), offset


class ShardPacker:
    """Append sources back to back into shards `shard-NNNNN.npy` in `folder`, numbered from `first`."""

    def __init__(self, folder: Path, first: int, target_samples: int):
        self.folder = folder
        self.number = first
        self.target_samples = target_samples
        self.written: list[str] = []  # shards renamed into place by this packer
        self._out = None
        self._tmp: Path | None = None
        self._samples = 0
        self._buf = bytearray(COPY_CHUNK)

    def add(self, source: np.ndarray | Piece) -> tuple[str, int]:
        """Append int16 samples (an array, or a piece of a file); their (shard, offset).

        An OSError (a full disk...) names the shard being written; `abort()` then cleans up.
        """
        name = shard_name(self.number)
        try:
            if self._out is None:
                self.folder.mkdir(parents=True, exist_ok=True)
                self._tmp = temp_path(self.folder / name)
                self._out = open(self._tmp, "xb")  # noqa: SIM115 - closed in _close/abort
                self._out.write(_header(0))  # rewritten with the real length on close
                self._samples = 0
            offset = self._samples
            if isinstance(source, np.ndarray):
                self._out.write(np.ascontiguousarray(source, dtype=SHARD_DTYPE).data)
                self._samples += len(source)
            else:
                _copy(source, self._out, self._buf)
                self._samples += source.samples
            if self._samples >= self.target_samples:
                self._close()
        except OSError as exc:
            raise with_filename(exc, self.folder / name) from exc
        return name, offset

    def finish(self) -> list[str]:
        """Close the last shard; every shard written."""
        if self._out is not None:
            try:
                self._close()
            except OSError as exc:
                raise with_filename(exc, self.folder / shard_name(self.number)) from exc
        return self.written

    def abort(self) -> None:
        """Delete everything this packer wrote (after a failure, before any manifest names it).

        Never raises: closing a file whose buffer cannot be flushed (a full disk) fails again.
        """
        if self._out is not None:
            with contextlib.suppress(OSError):
                self._out.close()
            self._out = None
            with contextlib.suppress(OSError):
                self._tmp.unlink(missing_ok=True)
        for name in self.written:
            with contextlib.suppress(OSError):
                (self.folder / name).unlink(missing_ok=True)
        self.written = []

    def _close(self) -> None:
        out, name = self._out, shard_name(self.number)
        out.seek(0)
        out.write(_header(self._samples))  # same length as the placeholder (128 bytes)
        out.flush()
        os.fsync(out.fileno())
        out.close()
        self._out = None
        os.replace(self._tmp, self.folder / name)
        self.written.append(name)
        self.number += 1


def _header(samples: int) -> bytes:
    """The `.npy` v1.0 header of a 1-D int16 array (128 bytes for any realistic length)."""
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        buf, {"descr": SHARD_DTYPE, "fortran_order": False, "shape": (samples,)}
    )
    return buf.getvalue()


def with_filename(exc: OSError, path: Path) -> OSError:
    """`exc` naming `path` (a write error on a temp file or buffer often names nothing)."""
    if exc.filename is not None or exc.errno is None:
        return exc
    return type(exc)(exc.errno, exc.strerror, str(path))


def temp_path(path: Path) -> Path:
    """A fresh hidden temp name next to `path` (created with the umask's permissions, unlike mkstemp)."""
    return path.with_name(f".{path.name}.{uuid.uuid4().hex[:12]}.tmp")


def _copy(piece: Piece, out, buf: bytearray) -> None:
    view = memoryview(buf)
    remaining = 2 * piece.samples
    with open(piece.src, "rb") as src:
        src.seek(piece.src_offset)
        while remaining:
            n = src.readinto(view[: min(len(buf), remaining)])
            if not n:
                raise DataError(
                    f"{piece.src} ended early while copying {piece.rel!r}: prepare again"
                )
            out.write(view[:n])
            remaining -= n

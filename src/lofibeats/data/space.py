"""A full disk, said in one line: how much space a write needed, where, and how much is free.

Used by `prepare` (shards, manifest) and by the checkpoint writer
(`lofibeats.training.checkpoint_io`). Both write to a temp file and rename it into place, so a
failed write never damages what was there; this module only turns the OSError into a message the
user can act on.
"""

from __future__ import annotations

import errno
import os
import shutil
from pathlib import Path

from lofibeats.errors import DataError

# "No space left on device", and "Disk quota exceeded" (the same thing for the user).
DISK_FULL_ERRNOS = frozenset(
    code for code in (errno.ENOSPC, getattr(errno, "EDQUOT", None)) if code is not None
)


class DiskFullError(DataError):
    """A prepare write failed for lack of space; the previous cache is intact."""


def is_disk_full(exc: BaseException) -> bool:
    """Whether `exc` (or what it wraps) is an OSError for a full disk or an exceeded quota."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, OSError) and exc.errno in DISK_FULL_ERRNOS:
            return True
        exc = exc.__cause__ or exc.__context__
    return False


def free_bytes(folder: Path) -> int | None:
    """Free space for an unprivileged user on the file system holding `folder` (or its nearest
    existing ancestor); None when it cannot be asked."""
    path = Path(folder).absolute()
    while not path.exists() and path.parent != path:
        path = path.parent
    try:
        return shutil.disk_usage(path).free
    except OSError:
        return None


def human_bytes(n: float) -> str:
    """1234567 -> "1.2 MB" (decimal units, as file managers and `df -H` show them)."""
    for unit in ("bytes", "kB", "MB", "GB", "TB"):
        if abs(n) < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1000
    raise AssertionError("unreachable")


def disk_full_message(what: str, folder: Path, needed: int | None, after: str) -> str:
    """One line: `what` could not be written in `folder`, `needed` bytes (an estimate), free now."""
    free = free_bytes(folder)
    need = f"needs about {human_bytes(needed)} there" if needed else "needs more space there"
    have = f", {human_bytes(free)} free now" if free is not None else ""
    return f"disk full: could not write {what} in {os.fspath(folder)}: {need}{have}; {after}"

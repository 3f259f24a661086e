"""The prepare cache on disk: one lock per cache folder, a staging area, and stale-file cleanup.

Every prepare holds `cache_dir/.lock` (a `filelock.FileLock`, released by the OS if the process
dies) for its whole run, so two prepares of the same folder never interleave: the second waits and
then finds the work done. While the lock is held, anything in the staging area or any temp file is
a leftover of a killed run and is deleted.
"""

from __future__ import annotations

import logging
import shutil
import uuid
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

from filelock import FileLock, Timeout

from lofibeats.data.pack import SHARD_NAME

log = logging.getLogger(__name__)

LOCK_NAME = ".lock"
STAGING_NAME = ".staging"


@contextmanager
def cache_lock(cache_dir: Path) -> Iterator[None]:
    """Hold the cache folder's lock, saying so if another prepare has it first."""
    cache_dir.mkdir(parents=True, exist_ok=True)
    lock = FileLock(cache_dir / LOCK_NAME)
    try:
        lock.acquire(timeout=1.0)
    except Timeout:
        log.warning("another prepare is writing %s: waiting for it to finish", cache_dir)
        lock.acquire()
    try:
        yield
    finally:
        lock.release()


@contextmanager
def staging_area(cache_dir: Path) -> Iterator[Path]:
    """A fresh folder for this run's intermediate files, removed afterwards (call under the lock).

    Each run gets its own subfolder, so a worker of an interrupted run that is still finishing a
    file can never write into the next run's files.
    """
    root = cache_dir / STAGING_NAME
    shutil.rmtree(root, ignore_errors=True)
    path = root / uuid.uuid4().hex[:12]
    path.mkdir(parents=True)
    try:
        yield path
    finally:
        shutil.rmtree(root, ignore_errors=True)


def remove_stale_files(sr_dir: Path, keep_shards: Iterable[str]) -> None:
    """Delete temp files and shards the manifest does not name: what a killed run leaves behind."""
    keep = set(keep_shards)
    if not sr_dir.is_dir():
        return
    for path in sr_dir.iterdir():
        stale_temp = path.name.startswith(".") and path.name.endswith(".tmp")
        if stale_temp or (SHARD_NAME.match(path.name) and path.name not in keep):
            remove_quietly(path)


def remove_quietly(path: Path) -> None:
    """Delete a file; if it cannot go now (open on Windows), a later prepare retries."""
    try:
        path.unlink(missing_ok=True)
    except OSError as exc:
        log.warning("could not delete %s (%s): the next prepare will retry", path, exc)

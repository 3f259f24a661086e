"""Run prepare's per-file jobs in spawned worker processes, with a rich progress bar.

The "spawn" start method is used on every OS, so behaviour never depends on state a fork would
copy. One worker (or one job) runs inline: no process start-up for small updates.

A killed prepare leaves nothing running: each worker starts a watchdog thread that waits on the
parent's sentinel (`multiprocessing.parent_process()`: a pipe that closes when the parent dies on
POSIX, the parent's process handle on Windows) and also polls the parent's pid, and ends the
worker with `os._exit` the moment the parent is gone, even while its main thread is blocked
writing a result into a pipe nobody reads. With the workers gone, multiprocessing's resource
tracker sees its pipe close and exits too.
"""

from __future__ import annotations

import multiprocessing
import multiprocessing.connection
import os
import threading
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from contextlib import contextmanager

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from lofibeats.data.process import SourceJob, SourceResult, process_source
from lofibeats.errors import DataError

WATCHDOG_SECONDS = 0.5  # how often a worker checks its parent's pid (the sentinel is immediate)
ORPHAN_EXIT_CODE = 70  # a worker that outlived its parent


def default_workers() -> int:
    """The CPU cores this process may use."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return max(1, os.cpu_count() or 1)


class PrepareProgress(Progress):
    """A rich progress display that appears only once `ensure_started()` is called.

    A prepare that finds nothing to do (every training start) then prints nothing at all.
    """

    def __init__(self, *args: object, show: bool = True, **kwargs: object):
        super().__init__(*args, disable=not show, **kwargs)
        self.show = show
        self._live_started = False

    def ensure_started(self) -> None:
        if self.show and not self._live_started:
            self._live_started = True
            self.start()

    def __enter__(self) -> PrepareProgress:
        return self  # started on demand

    def __exit__(self, *exc_info: object) -> None:
        if self._live_started:
            self.stop()


@contextmanager
def progress_bar(show: bool) -> Iterator[PrepareProgress]:
    """The progress display prepare shows on stderr while it scans and decodes (or a disabled one)."""
    columns = (
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("{task.fields[speed]}"),
    )
    with PrepareProgress(*columns, console=Console(stderr=True), show=show) as bar:
        yield bar


def run_jobs(
    jobs: Sequence[SourceJob], workers: int, show: bool, bar: PrepareProgress | None = None
) -> Iterator[SourceResult]:
    """Results as they finish, in spawned worker processes (or inline for one worker or job).

    Progress goes to `bar` when given, else to a bar of its own (when `show`).
    """
    if not jobs:
        return
    if bar is None:
        with progress_bar(show) as own:
            yield from run_jobs(jobs, workers, show, own)
        return
    bar.ensure_started()
    task = bar.add_task("preparing audio", total=len(jobs), speed="")
    started, audio = time.perf_counter(), 0.0
    for result in _results(jobs, workers):
        audio += result.input_seconds
        speed = f"{audio / max(time.perf_counter() - started, 1e-9):.0f}x real time"
        bar.update(task, advance=1, speed=speed)
        yield result


def _results(jobs: Sequence[SourceJob], workers: int) -> Iterator[SourceResult]:
    if workers <= 1 or len(jobs) == 1:
        yield from map(process_source, jobs)
        return
    context = multiprocessing.get_context("spawn")  # the same on every OS; no fork-only state
    with ProcessPoolExecutor(
        min(workers, len(jobs)),
        mp_context=context,
        initializer=watch_parent,
        initargs=(os.getpid(),),
    ) as pool:
        futures = [pool.submit(process_source, job) for job in jobs]
        try:
            for future in as_completed(futures):
                yield future.result()
        except BrokenProcessPool:
            raise DataError(
                "a prepare worker process died (out of memory? or a script without an "
                "`if __name__ == '__main__':` guard): run again with data.prepare_workers=1"
            ) from None
        finally:
            for future in futures:
                future.cancel()


def watch_parent(parent_pid: int) -> None:
    """Pool initializer: end this worker process as soon as `parent_pid` (its parent) is gone."""
    parent = multiprocessing.parent_process()
    threading.Thread(
        target=_watchdog, args=(parent, parent_pid), name="parent-watchdog", daemon=True
    ).start()


def _watchdog(parent: multiprocessing.process.BaseProcess | None, parent_pid: int) -> None:
    try:
        sentinel = parent.sentinel if parent is not None else None
    except (AttributeError, ValueError):
        sentinel = None
    while True:
        if sentinel is not None:
            try:
                gone = bool(multiprocessing.connection.wait([sentinel], WATCHDOG_SECONDS))
            except (OSError, ValueError):
                sentinel, gone = None, False
        else:
            time.sleep(WATCHDOG_SECONDS)
            gone = False
        if gone or not _alive(parent_pid):
            os._exit(ORPHAN_EXIT_CODE)


def _alive(parent_pid: int) -> bool:
    """False once the parent has died (on POSIX an orphan is re-parented, so its ppid changes)."""
    if os.name == "posix":
        return os.getppid() == parent_pid
    return True  # Windows keeps the old ppid; the sentinel (a process handle) tells instead

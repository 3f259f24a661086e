"""Run prepare's per-file jobs in spawned worker processes, with a rich progress bar.

The "spawn" start method is used on every OS, so behaviour never depends on state a fork would
copy. One worker (or one job) runs inline: no process start-up for small updates.
"""

from __future__ import annotations

import multiprocessing
import os
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from lofibeats.data.process import SourceJob, SourceResult, process_source
from lofibeats.errors import DataError


def default_workers() -> int:
    """The CPU cores this process may use."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return max(1, os.cpu_count() or 1)


def run_jobs(jobs: Sequence[SourceJob], workers: int, show: bool) -> Iterator[SourceResult]:
    """Results as they finish, in spawned worker processes (or inline for one worker or job)."""
    if not jobs:
        return
    columns = (
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("{task.fields[speed]}"),
    )
    console = Console(stderr=True)
    with Progress(*columns, console=console, disable=not show) as bar:
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
    with ProcessPoolExecutor(min(workers, len(jobs)), mp_context=context) as pool:
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

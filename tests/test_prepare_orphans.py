"""A killed prepare leaves nothing running: after `kill -9` of a prepare in the middle of a run,
its pool workers (even one blocked writing a result into a pipe nobody reads) and
multiprocessing's resource tracker exit within seconds.

The processes are found through /proc (Linux); elsewhere the test is skipped. The mechanism it
checks (a watchdog thread per worker waiting on the parent's sentinel) is portable.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

pytestmark = pytest.mark.skipif(
    not Path("/proc/self/stat").exists(), reason="finds the worker processes through /proc"
)

# What `python prepare.py` does, without Hydra's start-up time: two spawned workers, five rates.
SCRIPT = """
import sys
from lofibeats.data.prepare import prepare_corpus

if __name__ == "__main__":
    prepare_corpus(
        sys.argv[1], sys.argv[2], [8000, 11025, 16000, 22050, 32000], workers=2, shard_mb=64,
        normalize_loudness=True, target_dbfs=-20.0, trim_silence=False, silence_dbfs=-60.0,
        val_fraction=0.2, progress=False,
    )
"""
WORKERS_SEEN_TIMEOUT = 30.0
EXIT_TIMEOUT = 5.0


def stat_of(pid: int) -> tuple[str, int] | None:
    """(state, parent pid) of a process, None once it is gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text[text.rindex(")") + 2 :].split()  # the name in parentheses may hold spaces
    return fields[0], int(fields[1])


def cmdline(pid: int) -> str:
    try:
        return (
            Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        )
    except OSError:
        return ""


def descendants(pid: int) -> set[int]:
    """Every live process below `pid`."""
    parents = {}
    for name in os.listdir("/proc"):
        if name.isdigit() and (st := stat_of(int(name))) is not None and st[0] != "Z":
            parents[int(name)] = st[1]
    found, frontier = set(), {pid}
    while frontier:
        frontier = {child for child, parent in parents.items() if parent in frontier} - found
        found |= frontier
    return found


def running(pid: int) -> bool:
    st = stat_of(pid)
    return st is not None and st[0] != "Z"  # a zombie has exited (its new parent may not reap)


def test_kill_9_of_prepare_ends_its_workers_and_resource_tracker(tmp_path: Path):
    raw = tmp_path / "raw"
    raw.mkdir()
    rng = np.random.default_rng(0)
    for i in range(6):  # 3 min of audio: seconds of work for two workers at five rates
        noise = 0.1 * rng.standard_normal((44100 * 30, 2))
        sf.write(raw / f"track {i}.wav", noise.astype(np.float32), 44100, subtype="PCM_16")

    proc = subprocess.Popen(
        [sys.executable, "-c", SCRIPT, str(raw), str(tmp_path / "cache")],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    family: set[int] = set()
    try:
        deadline = time.monotonic() + WORKERS_SEEN_TIMEOUT
        while True:
            family = descendants(proc.pid)
            workers = [p for p in family if "spawn_main" in cmdline(p)]
            if len(workers) >= 2:
                break
            assert proc.poll() is None, "prepare ended before its workers were seen"
            assert time.monotonic() < deadline, "no prepare workers appeared"
            time.sleep(0.02)
        time.sleep(0.3)  # let them start decoding
        family |= descendants(proc.pid)
        assert proc.poll() is None, "prepare finished before the kill: give it more audio"
        os.kill(proc.pid, signal.SIGKILL) if hasattr(signal, "SIGKILL") else proc.kill()
        proc.wait(timeout=10)

        deadline = time.monotonic() + EXIT_TIMEOUT
        while (left := {p for p in family if running(p)}) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not left, "still running after the parent was killed: " + "; ".join(
            f"{p}: {cmdline(p)[:120]}" for p in sorted(left)
        )
    finally:
        if proc.poll() is None:
            proc.kill()
        for pid in family:  # never leave a stray process behind, even when the test fails
            if running(pid):
                os.kill(pid, signal.SIGKILL)

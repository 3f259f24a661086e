"""prepare reruns: incremental updates, compaction, setting changes, crashes, concurrent runs."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from lofibeats.audio.decode import MonoReader
from lofibeats.data import process
from lofibeats.data.cache import cache_lock
from lofibeats.data.manifest import Manifest
from lofibeats.data.pack import ShardPacker

from helpers import PREPARE_OPTIONS, check_cache, prepare, source_audio, write_tone

TINY_SHARDS = 0.001  # every 0.5 s source at 8 kHz fills a shard of its own
FOUR_PER_SHARD = 4 * 4000 * 2 / 2**20  # four 0.5 s sources at 8 kHz per shard


@pytest.fixture
def decoded(monkeypatch) -> list[str]:
    """Names of the files prepare opens for decoding (in-process runs)."""
    calls: list[str] = []

    class Spy(MonoReader):
        def __enter__(self):
            calls.append(self.path.name)
            return super().__enter__()

    monkeypatch.setattr(process, "MonoReader", Spy)
    return calls


def snapshot(folder: Path) -> dict[str, tuple[int, int]]:
    """name -> (inode, mtime_ns) of every file under `folder`: equal means nothing rewritten."""
    return {
        p.relative_to(folder).as_posix(): (p.stat().st_ino, p.stat().st_mtime_ns)
        for p in sorted(folder.rglob("*"))
        if p.is_file() and p.name != ".lock"
    }


def make_corpus(raw: Path, n: int) -> list[str]:
    names = [f"t{i}.wav" for i in range(n)]
    for i, name in enumerate(names):
        write_tone(raw / name, 0.5, freq=200 + 60 * i)
    return names


def test_rerun_with_nothing_changed_decodes_and_rewrites_nothing(
    tmp_path: Path, decoded: list[str]
):
    raw, cache = tmp_path / "raw", tmp_path / "cache"
    make_corpus(raw, 4)
    (raw / "broken.wav").write_text("not audio")
    first = prepare(raw, cache, rates=(8000, 16000))
    assert first.decoded == 5 and len(decoded) == 5
    before = snapshot(cache)
    decoded.clear()

    started = time.perf_counter()
    again = prepare(raw, cache, rates=(8000, 16000))
    assert time.perf_counter() - started < 1.0
    assert decoded == [] and again.decoded == 0 and again.kept == 4
    assert [s.path for s in again.skipped] == ["broken.wav"]
    assert snapshot(cache) == before
    assert "all up to date" in again.headline()


def test_touched_file_is_hashed_not_decoded(tmp_path: Path, decoded: list[str]):
    raw, cache = tmp_path / "raw", tmp_path / "cache"
    make_corpus(raw, 2)
    prepare(raw, cache)
    shards = {name: value for name, value in snapshot(cache).items() if name.endswith(".npy")}
    decoded.clear()
    stat = (raw / "t0.wav").stat()
    os.utime(raw / "t0.wav", ns=(stat.st_atime_ns, stat.st_mtime_ns + 5 * 10**9))

    report = prepare(raw, cache)
    assert decoded == [] and report.decoded == 0
    entry = next(s for s in check_cache(cache / "sr8000").sources if s.path == "t0.wav")
    assert entry.mtime_ns == stat.st_mtime_ns + 5 * 10**9
    assert {n: v for n, v in snapshot(cache).items() if n.endswith(".npy")} == shards


def test_added_changed_and_deleted_files_update_only_their_shards(
    tmp_path: Path, decoded: list[str]
):
    raw, cache = tmp_path / "raw", tmp_path / "cache"
    sr_dir = cache / "sr8000"
    make_corpus(raw, 4)
    prepare(raw, cache, shard_mb=TINY_SHARDS)
    old = check_cache(sr_dir)
    shard_of = {s.path: s.shard for s in old.sources}
    assert len(old.shards) == 4
    kept_audio = source_audio(sr_dir, "t1.wav")
    before = snapshot(sr_dir)
    decoded.clear()

    write_tone(raw / "new.wav", 0.5, freq=1000)
    write_tone(raw / "t0.wav", 0.7, freq=1500)  # changed: other length and content
    (raw / "t3.wav").unlink()
    report = prepare(raw, cache, shard_mb=TINY_SHARDS)

    assert sorted(decoded) == ["new.wav", "t0.wav"] and report.kept == 4
    manifest = check_cache(sr_dir)
    after = snapshot(sr_dir)
    for rel in ("t1.wav", "t2.wav"):  # untouched sources keep their shard, byte for byte
        assert after[shard_of[rel]] == before[shard_of[rel]]
    assert shard_of["t0.wav"] not in after and shard_of["t3.wav"] not in after
    by_path = {s.path: s for s in manifest.sources}
    assert "t3.wav" not in by_path and by_path["t0.wav"].samples == 5600
    assert by_path["new.wav"].shard not in before and by_path["t0.wav"].shard not in before
    np.testing.assert_array_equal(source_audio(sr_dir, "t1.wav"), kept_audio)


def test_shards_with_little_live_audio_are_compacted(tmp_path: Path, decoded: list[str]):
    raw, cache = tmp_path / "raw", tmp_path / "cache"
    sr_dir = cache / "sr8000"
    make_corpus(raw, 8)
    prepare(raw, cache, shard_mb=FOUR_PER_SHARD)
    first = check_cache(sr_dir)
    assert len(first.shards) == 2
    survivor = source_audio(sr_dir, "t3.wav")
    full_shard = next(s.shard for s in first.sources if s.path == "t7.wav")
    before = snapshot(sr_dir)
    decoded.clear()

    for name in ("t0.wav", "t1.wav", "t2.wav"):
        (raw / name).unlink()
    prepare(raw, cache, shard_mb=FOUR_PER_SHARD)

    assert decoded == []
    manifest = check_cache(sr_dir)
    moved = next(s for s in manifest.sources if s.path == "t3.wav")
    assert (
        moved.shard not in before
    )  # rewritten into a new shard, which the old one's 25% live did not merit
    assert snapshot(sr_dir)[full_shard] == before[full_shard]
    np.testing.assert_array_equal(source_audio(sr_dir, "t3.wav"), survivor)


def test_only_settings_that_change_samples_rebuild(tmp_path: Path, decoded: list[str]):
    raw, cache = tmp_path / "raw", tmp_path / "cache"
    make_corpus(raw, 8)
    prepare(raw, cache)
    decoded.clear()

    resplit = prepare(raw, cache, val_fraction=0.75)
    repacked = prepare(raw, cache, val_fraction=0.75, shard_mb=2.0)
    assert decoded == [] and resplit.decoded == repacked.decoded == 0
    manifest = check_cache(cache / "sr8000")
    assert manifest.settings["val_fraction"] == 0.75 and manifest.settings["shard_mb"] == 2.0
    assert len(manifest.split("val")) > 2

    rebuilt = prepare(raw, cache, target_dbfs=-14.0)
    assert rebuilt.decoded == 8 and len(decoded) == 8
    assert check_cache(cache / "sr8000").settings["target_dbfs"] == -14.0
    decoded.clear()
    prepare(raw, cache, normalize_loudness=False, target_dbfs=-14.0)
    assert len(decoded) == 8
    decoded.clear()
    unused = prepare(raw, cache, normalize_loudness=False, target_dbfs=-30.0)
    assert unused.decoded == 0 and decoded == []


def test_adding_a_rate_leaves_the_others_untouched(tmp_path: Path, decoded: list[str], monkeypatch):
    raw, cache = tmp_path / "raw", tmp_path / "cache"
    make_corpus(raw, 3)
    prepare(raw, cache, rates=(8000,))
    before = snapshot(cache / "sr8000")
    rates = []
    real = process.MultiRateResampler
    monkeypatch.setattr(
        process, "MultiRateResampler", lambda sr, out: rates.append(tuple(out)) or real(sr, out)
    )

    prepare(raw, cache, rates=(8000, 16000))
    assert rates == [(16000,)] * 3
    assert snapshot(cache / "sr8000") == before
    assert len(check_cache(cache / "sr16000").sources) == 3


def test_a_lost_shard_or_corrupt_manifest_is_rebuilt(tmp_path: Path, decoded: list[str]):
    raw, cache = tmp_path / "raw", tmp_path / "cache"
    sr_dir = cache / "sr8000"
    make_corpus(raw, 3)
    prepare(raw, cache, shard_mb=TINY_SHARDS)
    lost = next(s for s in Manifest.load(sr_dir).sources if s.path == "t1.wav")
    (sr_dir / lost.shard).unlink()
    decoded.clear()
    prepare(raw, cache, shard_mb=TINY_SHARDS)
    assert decoded == ["t1.wav"]
    check_cache(sr_dir)

    (sr_dir / "manifest.json").write_text("{ not json")
    decoded.clear()
    prepare(raw, cache, shard_mb=TINY_SHARDS)
    assert sorted(decoded) == ["t0.wav", "t1.wav", "t2.wav"]
    assert len(check_cache(sr_dir).sources) == 3


@pytest.mark.parametrize("crash_in", ["write_shard", "save", "worker"])
def test_a_crash_mid_run_leaves_the_old_cache_and_the_next_run_finishes(
    tmp_path: Path, monkeypatch, crash_in: str
):
    raw, cache = tmp_path / "raw", tmp_path / "cache"
    sr_dir = cache / "sr8000"
    make_corpus(raw, 3)
    prepare(raw, cache, shard_mb=TINY_SHARDS)
    old = Manifest.load(sr_dir).to_json()
    write_tone(raw / "new1.wav", 0.5, freq=900)
    write_tone(raw / "new2.wav", 0.5, freq=950)

    with monkeypatch.context() as patch:
        if crash_in == "write_shard":  # the second new shard fails after the first was written
            real_close, calls = ShardPacker._close, []

            def flaky(self):
                calls.append(self.number)
                if len(calls) == 2:
                    raise OSError("disk full")
                real_close(self)

            patch.setattr(ShardPacker, "_close", flaky)
        elif crash_in == "save":
            patch.setattr(
                Manifest, "save", lambda self, sr_dir: (_ for _ in ()).throw(OSError("disk full"))
            )
        else:
            real_process = process.process_source

            def dying(job):
                if job.rel == "new2.wav":
                    raise MemoryError
                return real_process(job)

            patch.setattr("lofibeats.data.workers.process_source", dying)
        with pytest.raises((OSError, MemoryError)):
            prepare(raw, cache, shard_mb=TINY_SHARDS)

    assert Manifest.load(sr_dir).to_json() == old  # the cache a reader sees is the old one
    assert not (cache / ".staging").exists()
    report = prepare(raw, cache, shard_mb=TINY_SHARDS)
    assert report.decoded == 2 and report.kept == 5
    assert len(check_cache(sr_dir).sources) == 5


SCRIPT = """
import sys
from pathlib import Path
from lofibeats.data.prepare import prepare_corpus
options = {options!r}
report = prepare_corpus(Path(sys.argv[1]), Path(sys.argv[2]), [8000, 16000], **options)
print(report.decoded)
"""


def run_script(raw: Path, cache: Path) -> subprocess.Popen:
    options = {**PREPARE_OPTIONS, "shard_mb": TINY_SHARDS}
    code = SCRIPT.format(options=options)
    return subprocess.Popen(
        [sys.executable, "-c", code, str(raw), str(cache)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


@pytest.mark.parametrize("kill_when", [".staging", "sr*/shard-*.npy"], ids=["starting", "packing"])
def test_a_killed_prepare_is_finished_by_the_next_run(tmp_path: Path, kill_when: str):
    raw, cache = tmp_path / "raw", tmp_path / "cache"
    for i in range(12):
        write_tone(raw / f"t{i}.wav", 2.0, sr=44100, freq=200 + 30 * i, channels=2)
    proc = run_script(raw, cache)
    deadline = time.monotonic() + 30
    while not list(cache.glob(kill_when)) and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.002)
    proc.kill()  # SIGKILL: no cleanup of any kind
    proc.wait()
    assert proc.returncode != 0, "the run finished before it could be killed"

    for sr_dir in cache.glob("sr*"):  # whatever was committed before the kill is consistent
        if (sr_dir / "manifest.json").exists():
            manifest = Manifest.load(sr_dir)
            assert all((sr_dir / name).is_file() for name in manifest.shards)
    report = prepare(raw, cache, rates=(8000, 16000), shard_mb=TINY_SHARDS)
    assert report.kept == 12
    for sr in (8000, 16000):
        assert len(check_cache(cache / f"sr{sr}").sources) == 12


def test_two_prepares_at_once_leave_one_consistent_cache(tmp_path: Path):
    raw, cache = tmp_path / "raw", tmp_path / "cache"
    make_corpus(raw, 6)
    with cache_lock(cache):  # both start while the cache is busy, so they really contend
        procs = [run_script(raw, cache) for _ in range(2)]
        time.sleep(1.0)
    outputs = [proc.communicate(timeout=60) for proc in procs]
    assert [proc.returncode for proc in procs] == [0, 0], outputs
    assert sorted(int(out.split()[-1]) for out, _ in outputs) == [
        0,
        6,
    ]  # one waited, then had nothing to do
    for sr in (8000, 16000):
        assert len(check_cache(cache / f"sr{sr}").sources) == 6


def test_adding_files_never_moves_old_ones_across_the_split(tmp_path: Path):
    raw, cache = tmp_path / "raw", tmp_path / "cache"
    for i in range(16):
        write_tone(raw / f"old {i}.wav", 0.1, freq=200 + 20 * i)
    prepare(raw, cache, val_fraction=0.3)
    before = {s.path: s.split for s in check_cache(cache / "sr8000").sources}
    assert {"train", "val"} == set(before.values())
    for i in range(16):
        write_tone(raw / "more" / f"new {i}.wav", 0.1, freq=300 + 20 * i)
    prepare(raw, cache, val_fraction=0.3)
    after = {s.path: s.split for s in check_cache(cache / "sr8000").sources}
    assert len(after) == 32 and {path: after[path] for path in before} == before

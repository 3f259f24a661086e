"""Benchmark `prepare` throughput (x real time) against a bare soundfile decode + soxr resample.

    python benchmarks/prepare.py [--files 20] [--seconds 60] [--workers N] [--rates 8000 16000 22050]

Writes its own corpus (44.1 kHz stereo noise + tones, PCM16 WAV) to a temp folder. Both sides run
in the same process pool setup (spawn, same worker count, pool start-up timed) on the same files,
already in the page cache, interleaved `--repeat` times; the best run counts. Besides wall time it
reports CPU time (this process + its workers, POSIX only), which other load on the machine
disturbs much less. The baseline
does only what any pipeline must: read the file in blocks, mix to mono, stream-resample it to
every rate (discarding the output).
`prepare` also hashes the file, measures loudness, normalises, limits, converts to int16, writes
shards and the manifest, with fsync. Goal: ratio >= 0.8.
"""

from __future__ import annotations

import argparse
import multiprocessing
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

from lofibeats.data.prepare import prepare_corpus
from lofibeats.data.workers import default_workers

try:
    import resource
except ImportError:  # Windows
    resource = None

SR = 44100


def make_corpus(folder: Path, files: int, seconds: float) -> list[Path]:
    rng = np.random.default_rng(0)
    t = np.arange(int(seconds * SR)) / SR
    paths = []
    for i in range(files):
        left = 0.2 * np.sin(2 * np.pi * (110 + 20 * i) * t) + 0.05 * rng.standard_normal(len(t))
        right = 0.2 * np.sin(2 * np.pi * (165 + 20 * i) * t) + 0.05 * rng.standard_normal(len(t))
        path = folder / f"track {i:02d}.wav"
        sf.write(path, np.stack([left, right], axis=1).astype(np.float32), SR, subtype="PCM_16")
        paths.append(path)
    return paths


def bare_decode_resample(path: Path, rates: tuple[int, ...]) -> float:
    """Read in blocks, mix to mono, stream-resample to every rate; the seconds of audio.

    The lean version of what prepare must do (numpy's `mean(axis=1)` on [frames, 2] is several
    times slower than adding the columns, so the columns are added: the fastest bare code).
    """
    with sf.SoundFile(path) as f:
        streams = [soxr.ResampleStream(f.samplerate, rate, 1, dtype="float32") for rate in rates]
        for block in f.blocks(blocksize=1 << 16, dtype="float32", always_2d=True):
            mono = block[:, 0].copy()
            for c in range(1, block.shape[1]):
                mono += block[:, c]
            mono *= np.float32(1.0 / block.shape[1])
            for stream in streams:
                stream.resample_chunk(mono)
        for stream in streams:
            stream.resample_chunk(np.zeros(0, np.float32), last=True)
        return f.frames / f.samplerate


def measure(run) -> tuple[float, float, float]:
    """(audio seconds, wall seconds, CPU seconds of this process and its pool workers) of `run()`."""
    cpu_before = _cpu_seconds()
    started = time.perf_counter()
    audio = run()
    return audio, time.perf_counter() - started, _cpu_seconds() - cpu_before


def _cpu_seconds() -> float:
    if resource is None:  # Windows: wall time only
        return float("nan")
    own, children = (
        resource.getrusage(resource.RUSAGE_SELF),
        resource.getrusage(resource.RUSAGE_CHILDREN),
    )
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def bare(paths: list[Path], rates: tuple[int, ...], workers: int) -> float:
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(workers, mp_context=context) as pool:
        return sum(pool.map(bare_decode_resample, paths, [rates] * len(paths)))


def prepare(raw: Path, cache: Path, rates: tuple[int, ...], workers: int) -> float:
    report = prepare_corpus(
        raw,
        cache,
        rates,
        workers=workers,
        shard_mb=64,
        normalize_loudness=True,
        target_dbfs=-20.0,
        trim_silence=False,
        silence_dbfs=-60.0,
        val_fraction=0.2,
        progress=False,
    )
    return report.decoded_seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=20)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--workers", type=int, default=default_workers())
    parser.add_argument("--rates", type=int, nargs="+", default=[8000, 16000, 22050])
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    rates = tuple(args.rates)

    with tempfile.TemporaryDirectory(prefix="lofibeats-bench-") as tmp:
        raw = Path(tmp) / "raw"
        raw.mkdir()
        paths = make_corpus(raw, args.files, args.seconds)
        for path in paths:  # both sides read from the page cache
            path.read_bytes()
        runs: dict[str, list[tuple[float, float, float]]] = {"bare": [], "prepare": []}
        for i in range(args.repeat):  # interleaved, so a busy moment hits both sides alike
            runs["bare"].append(measure(lambda: bare(paths, rates, args.workers)))
            cache = Path(tmp) / f"cache{i}"
            runs["prepare"].append(
                measure(lambda cache=cache: prepare(raw, cache, rates, args.workers))
            )
        rerun = measure(lambda: prepare(raw, Path(tmp) / "cache0", rates, args.workers))

    audio = runs["bare"][0][0]
    print(
        f"corpus: {args.files} files x {args.seconds:g} s of 44.1 kHz stereo -> {rates} Hz, workers={args.workers}"
    )
    figures = {}
    for name, results in runs.items():
        wall = min(r[1] for r in results)
        cpu = min(r[2] for r in results)
        figures[name] = (audio / wall, audio / cpu)
        print(
            f"{name:8s}: {audio / wall:7.1f}x real time (wall, best of {args.repeat}), "
            f"{audio / cpu:7.1f}x real time per CPU second"
        )
    (bare_wall, bare_cpu), (prep_wall, prep_cpu) = figures["bare"], figures["prepare"]
    print(
        f"ratio prepare / bare: {prep_wall / bare_wall:.2f} wall, {prep_cpu / bare_cpu:.2f} CPU  (goal >= 0.8)"
    )
    print(f"rerun with nothing changed: {rerun[1]:.3f} s wall, decoded {rerun[0]:g} s of audio")


if __name__ == "__main__":
    main()

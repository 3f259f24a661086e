"""Train dataloader throughput vs a bare numpy slicing loop, and peak RSS vs corpus size.

    python benchmarks/dataloader.py [--sr 8000] [--batch-size 32] [--batches 200] [--workers 0]

Writes synthetic int16 shards (noise) for a small and a large corpus to a temp folder, then:
1. batches/s of `LofiDataModule.train_dataloader()` and of a bare loop that slices the same
   memmaps with the same batch size and window lengths (the ceiling), and their ratio;
2. in a fresh process per corpus size, the peak RSS after iterating one epoch, to show RAM does
   not grow with the corpus (the shards are memory-mapped; touched pages are file-backed and
   reclaimable, so anonymous memory is printed too).
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from lofibeats.data.datamodule import LofiDataModule
from lofibeats.data.manifest import Manifest, SourceEntry

TRACK_SECONDS = 180
SHARD_SAMPLES = 32 * 1024 * 1024  # 64 MB of int16, like prepare's default shard_mb


def write_corpus(sr_dir: Path, sr: int, seconds: float) -> None:
    """Noise 'tracks' of TRACK_SECONDS packed into shards, written chunk by chunk (low RAM)."""
    sr_dir.mkdir(parents=True)
    rng = np.random.default_rng(0)
    track = TRACK_SECONDS * sr
    n_tracks = max(2, round(seconds * sr / track))
    per_shard = max(1, SHARD_SAMPLES // track)
    entries, shards = [], []
    for first in range(0, n_tracks, per_shard):
        count = min(per_shard, n_tracks - first)
        name = f"shard-{len(shards) + 1:04d}.npy"
        out = np.lib.format.open_memmap(
            sr_dir / name, mode="w+", dtype=np.int16, shape=(count * track,)
        )
        for i in range(count):
            out[i * track : (i + 1) * track] = rng.integers(-8000, 8000, track, dtype=np.int16)
            split = "val" if first + i == n_tracks - 1 else "train"
            entry = SourceEntry(
                path=f"track{first + i:04d}.wav",
                hash="-",
                size=0,
                mtime_ns=0,
                seconds=TRACK_SECONDS,
                samples=track,
                shard=name,
                offset=i * track,
                split=split,
            )
            entries.append(entry)
        out.flush()
        del out
        shards.append(name)
    Manifest(sr=sr, raw_dir="synthetic", sources=entries, shards=shards).save(sr_dir)


def make_dm(cache_dir: Path, args: argparse.Namespace) -> LofiDataModule:
    return LofiDataModule(
        cache_dir=cache_dir,
        sr=args.sr,
        prev_len_min=512,
        prev_len_max=2048,
        next_len=512,
        batch_size=args.batch_size,
        num_workers=args.workers,
        train_batches_per_epoch=args.batches,
        seed=0,
    )


def bare_pass(dm: LofiDataModule, rng: np.random.Generator) -> float:
    """One epoch of the same windows drawn with plain numpy (random Tp, uniform valid starts,
    slice the memmaps, convert to float): the ceiling. Returns batches/s."""
    store, spans = dm.store, dm.train_dataset.spans
    maps = [store.shard(i) for i in range(len(store.names))]
    started = time.perf_counter()
    for _ in range(dm.train_batches_per_epoch):
        prev_len = int(rng.integers(dm.prev_len_min, dm.prev_len_max + 1))
        window = prev_len + dm.next_len
        valid = np.maximum(spans.samples - window + 1, 0)
        ends = np.cumsum(valid)
        pos = rng.integers(0, ends[-1], dm.batch_size)
        src = np.searchsorted(ends, pos, side="right")
        starts = spans.offset[src] + pos - (ends[src] - valid[src])
        batch = np.empty((dm.batch_size, window), dtype=np.int16)
        for row, (s, a) in enumerate(zip(src, starts, strict=True)):
            batch[row] = maps[spans.shard[s]][a : a + window]
        audio = batch.astype(np.float32) / 32768
        _prev, _next = audio[:, :prev_len].copy(), audio[:, prev_len:].copy()
    return dm.train_batches_per_epoch / (time.perf_counter() - started)


def loader_pass(loader) -> float:
    """One epoch of the train dataloader; returns batches/s."""
    started = time.perf_counter()
    n = sum(1 for _ in loader)
    return n / (time.perf_counter() - started)


def throughput(dm: LofiDataModule, rounds: int) -> tuple[float, float]:
    """Best-of-`rounds` batches/s of (dataloader, bare loop), passes interleaved after a warm-up
    of each (which starts workers and maps the shards), so both see the same machine state."""
    loader, rng = dm.train_dataloader(), np.random.default_rng(1)
    loader_pass(loader)
    bare_pass(dm, rng)
    rates = [(loader_pass(loader), bare_pass(dm, rng)) for _ in range(rounds)]
    return max(r[0] for r in rates), max(r[1] for r in rates)


def memory_mb() -> dict[str, float]:
    """Peak RSS and current RSS (anonymous / file-backed where known) of this process, in MB."""
    status = Path("/proc/self/status")
    if status.is_file():
        fields = dict(line.split(":", 1) for line in status.read_text().splitlines() if ":" in line)
        keys = ("VmHWM", "VmRSS", "RssAnon", "RssFile")
        return {k: int(fields[k].split()[0]) / 1024 for k in keys if k in fields}
    try:
        import psutil
    except ImportError:
        return {}
    info = psutil.Process().memory_info()
    return {"VmRSS": info.rss / 2**20, "VmHWM": getattr(info, "peak_wset", info.rss) / 2**20}


def measure_memory(cache_dir: str, args: argparse.Namespace, results: mp.Queue) -> None:
    """Child process: iterate one epoch and report memory before/after."""
    import torch

    torch.set_num_threads(1)
    dm = make_dm(Path(cache_dir), args)
    loader = dm.train_dataloader()
    before = memory_mb()
    for _ in loader:
        pass
    results.put((before, memory_mb()))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sr", type=int, default=8000)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--batches", type=int, default=200)
    parser.add_argument("--workers", type=int, default=0)
    parser.add_argument("--rounds", type=int, default=3, help="timed passes of each (best is kept)")
    parser.add_argument("--small-minutes", type=float, default=10)
    parser.add_argument("--large-hours", type=float, default=2)
    args = parser.parse_args()
    nan = float("nan")
    sizes = {"small": args.small_minutes * 60, "large": args.large_hours * 3600}

    with tempfile.TemporaryDirectory(prefix="lofibeats-bench-") as tmp:
        for name, seconds in sizes.items():
            write_corpus(Path(tmp, name, f"sr{args.sr}"), args.sr, seconds)
        print(
            f"sr={args.sr} batch={args.batch_size} prev=512..2048 next=512 workers={args.workers}"
        )

        dm = make_dm(Path(tmp, "large"), args)
        loader_rate, bare_rate = throughput(dm, args.rounds)
        print(f"train dataloader : {loader_rate:8.1f} batches/s")
        print(f"bare numpy slices: {bare_rate:8.1f} batches/s")
        print(f"ratio dataloader/bare: {loader_rate / bare_rate:.2f}")

        ctx = mp.get_context("spawn")
        for name, seconds in sizes.items():
            results = ctx.Queue()
            child = ctx.Process(target=measure_memory, args=(str(Path(tmp, name)), args, results))
            child.start()
            before, after = results.get()
            child.join()
            if not after:
                print("peak RSS: not measurable here (no /proc, no psutil)")
                break
            corpus_mb = seconds * args.sr * 2 / 2**20
            print(
                f"{name:5s} corpus {seconds / 60:4.0f} min ({corpus_mb:4.0f} MB int16): "
                f"peak RSS {after['VmHWM']:4.0f} MB (before iterating {before['VmHWM']:.0f}); "
                f"after: anon {after.get('RssAnon', nan):.0f} MB (before {before.get('RssAnon', nan):.0f}), "
                f"file-backed (libraries + touched shard pages) {after.get('RssFile', nan):.0f} MB "
                f"(before {before.get('RssFile', nan):.0f})"
            )


if __name__ == "__main__":
    sys.exit(main())

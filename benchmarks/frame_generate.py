"""Benchmark generation speed of the frame tier: `model.frame_size` 1 vs 4 vs 16.

    python benchmarks/frame_generate.py [--seconds 1.0] [--threads 1] [--hidden 256] [--repeats 3]

A 2 x `hidden` LSTM mu-law seq2seq with random weights (speed does not depend on the weights),
one stream, 16 kHz, `continue_audio` with sampled decoding, chunk after chunk of `next_len` =
4096 samples. Prints samples/s, the real-time factor (audio seconds per wall second) and the
ratio to frame_size=1 measured in the same run (the best of `--repeats` runs each).
"""

from __future__ import annotations

import argparse
import time

import torch

from lofibeats.models.seq2seq import Seq2SeqModule

SR = 16000
FRAME_SIZES = (1, 4, 16)


def build(frame_size: int, hidden: int) -> Seq2SeqModule:
    torch.manual_seed(0)
    return Seq2SeqModule(
        sr=SR, prev_len_max=1024, next_len=4096, hidden=hidden, layers=2, frame_size=frame_size
    ).eval()


def best_time(module: Seq2SeqModule, prime: torch.Tensor, n_samples: int, repeats: int) -> float:
    times = []
    for seed in range(repeats):
        generator = torch.Generator().manual_seed(seed)
        started = time.perf_counter()
        produced = 0
        while produced < n_samples:
            n = min(module.chunk_len, n_samples - produced)
            module.continue_audio(prime, n, generator=generator)
            produced += n
        times.append(time.perf_counter() - started)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=1.0, help="audio generated per run")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    n_samples = round(args.seconds * SR)
    prime = 0.1 * torch.randn(1, 1024, generator=torch.Generator().manual_seed(0))
    print(
        f"2 x {args.hidden} LSTM, mu-law, 1 stream, {SR} Hz, {n_samples} samples, "
        f"{args.threads} thread(s)"
    )
    baseline = None
    for frame_size in FRAME_SIZES:
        module = build(frame_size, args.hidden)
        seconds = best_time(module, prime, n_samples, args.repeats)
        rate = n_samples / seconds
        baseline = baseline or rate
        print(
            f"frame_size={frame_size:>2}: {rate:9.0f} samples/s  RTF {rate / SR:6.2f}x  "
            f"ratio to frame_size=1: {rate / baseline:5.2f}"
        )


if __name__ == "__main__":
    main()

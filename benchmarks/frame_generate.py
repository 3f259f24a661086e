"""Benchmark generation speed of the frame tier: `model.frame_size` 1 vs 4 vs 16, reference vs kernel.

    python benchmarks/frame_generate.py [--seconds 1.0] [--threads 1] [--hidden 256] [--repeats 3]

A 2 x `hidden` LSTM mu-law seq2seq with random weights (speed does not depend on the weights),
one stream, 16 kHz, sampled decoding, chunk after chunk of `next_len` = 4096 samples, through
two paths: "reference" (`Continuation(module, "reference")`: `ReferenceBackend`, for frame
models the frame LSTM in torch and the per-sample NumPy loop of `FrameSampler`) and "engine"
(what `engine=auto` runs: the C kernel, `FusedBackend` for frame_size 1 and
`FusedFrameBackend` above); each chunk is `net.start` + the backend's decode. Prints
samples/s, the real-time factor (audio seconds per wall second), the ratio engine / reference
per frame size and the ratio to the reference at frame_size=1, all measured in the same run
(the best of `--repeats` runs each). Then the same for vseq2seq frame models with z at every
frame step (`z_every_step`, the default, which style change needs): z inferred from each chunk's
`prev`, the frame LSTM conditioned on it (the kernel's conditioned frame path).
"""

from __future__ import annotations

import argparse
import time

import torch

from lofibeats.generation.engine import Continuation
from lofibeats.models.seq2seq import Seq2SeqModule
from lofibeats.models.vseq2seq import VSeq2SeqModule

SR = 16000
FRAME_SIZES = (1, 4, 16)


def build(frame_size: int, hidden: int, latent: bool = False) -> Seq2SeqModule:
    """A seq2seq, or (`latent`) a vseq2seq with z at every decoder step, with random weights."""
    torch.manual_seed(0)
    cls = VSeq2SeqModule if latent else Seq2SeqModule
    return cls(
        sr=SR, prev_len_max=1024, next_len=4096, hidden=hidden, layers=2, frame_size=frame_size
    ).eval()


def best_time(run: Continuation, chunk: int, prime: torch.Tensor, n: int, repeats: int) -> float:
    times = []
    for seed in range(repeats):
        generator = torch.Generator().manual_seed(seed)
        started = time.perf_counter()
        produced = 0
        while produced < n:
            step = min(chunk, n - produced)
            run(prime, step, generator=generator)
            produced += step
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
    baseline = family = None
    cases = [(False, k) for k in FRAME_SIZES] + [(True, k) for k in FRAME_SIZES[1:]]
    for latent, frame_size in cases:
        module = build(frame_size, args.hidden, latent)
        if family != (family := "vseq2seq, z_every_step" if latent else "seq2seq"):
            print(family)
        paths = {"reference": Continuation(module, "reference"), "engine": Continuation(module)}
        rates = {}
        for name, run in paths.items():
            seconds = best_time(run, module.chunk_len, prime, n_samples, args.repeats)
            rates[name] = rate = n_samples / seconds
            baseline = baseline or rate
            label = run.name if name == "engine" else name
            print(
                f"frame_size={frame_size:>2} {label:<17}: {rate:9.0f} samples/s  "
                f"RTF {rate / SR:6.2f}x  ratio to frame_size=1 reference: {rate / baseline:6.2f}"
            )
        print(
            f"frame_size={frame_size:>2} engine / reference: {rates['engine'] / rates['reference']:.2f}x"
        )


if __name__ == "__main__":
    main()

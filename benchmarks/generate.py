"""Benchmark sample-level generation: the naive eager loop vs the fused engine.

    python benchmarks/generate.py [--threads 1] [--hidden 256] [--layers 2] [--repeats 3]
        [--streams 1 4 16] [--chunks 2] [--backend c|torch|both]

The model is a 2 x 256 LSTM mu-law seq2seq with random weights (speed does not depend on the
weights), context 2048 / chunk 512 samples. Everything below is measured in this one run, each
variant timed `--repeats` times interleaved with the others (so background load hits all alike),
best time kept. Columns: samples/s over all streams ("per CPU-s": divided by process CPU time
instead of wall time, what an unshared core would give on a busy machine), GFLOP/s achieved, the
real-time factor of one stream at 8 / 16 / 22.05 kHz (audio seconds per wall second) and the
speed-up over the naive loop and over the reference (the second row). The machine's own matvec
speed (torch.mv of a 1024 x 1024 fp32 matrix in a loop, same threads) is printed beside ("% mv"),
as the yardstick for what one core sustains.

1. decode: the per-sample loop alone, from an encoded state (`net.start`, timed once beside).
   The naive loop is what one writes first: per sample, `nn.LSTM` on a length-1 sequence, a
   softmax, `torch.multinomial`. The reference is `ReferenceBackend.decode` (the decoder's step +
   head.sample per sample); the engine rows are `FusedBackend.decode` on the same `DecodeStart`
   ("fp16": with the decoder's and head's weights stored as float16, `fused.PRECISIONS`).
   FLOPs count the model's own work per sample (LSTM matmuls + head, ~1.7 MFLOP for 2 x 256).
2. long-form: `generate_long` as generate.py runs it, `--chunks` chunks per stream. Every chunk
   re-encodes the 2048-sample context, so FLOPs per sample add 2048/512 = 4 encoder steps.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable

import torch

from lofibeats.audio.mulaw import dequantize, quantize
from lofibeats.generation.engine import FusedBackend
from lofibeats.generation.kernel import load_kernel
from lofibeats.generation.longform import generate_long
from lofibeats.generation.reference import ReferenceBackend
from lofibeats.models.decoding import DecodeStart
from lofibeats.models.sampling import Sampling
from lofibeats.models.seq2seq import Seq2SeqModule

RATES = (8000, 16000, 22050)
CONTEXT, CHUNK = 2048, 512


@torch.inference_mode()
def naive_decode(module: Seq2SeqModule, state, token: torch.Tensor, n: int, seed: int = 0):
    """The baseline loop: length-1 nn.LSTM, softmax, multinomial, dequantise, per sample."""
    generator = torch.Generator().manual_seed(seed)
    net = module.net
    samples = []
    for _ in range(n):
        h, state = net.decoder.lstm(net.embed(token)[:, None], state)
        probs = torch.softmax(net.head.proj(h[:, 0]), dim=-1)
        token = torch.multinomial(probs, 1, generator=generator)[:, 0]
        samples.append(dequantize(token))
    return torch.stack(samples, dim=1)


@torch.inference_mode()
def naive_generate(module: Seq2SeqModule, prime: torch.Tensor, n_samples: int) -> torch.Tensor:
    """The long-form baseline: chunk by chunk like generate_long, re-encoding the context."""
    history, pieces, produced = prime, [], 0
    while produced < n_samples:
        prev_tokens = quantize(history[:, -CONTEXT:])
        state = module.net.encoder(module.net.embed(prev_tokens))
        n = min(CHUNK, n_samples - produced)
        piece = naive_decode(module, state, prev_tokens[:, -1], n, seed=produced)
        pieces.append(piece)
        produced += n
        history = torch.cat([history, piece], dim=1)
    return torch.cat(pieces, dim=1)


def matvec_gflops(threads: int, seconds: float = 0.3) -> float:
    """The machine's torch.mv speed on a 1024 x 1024 fp32 matrix (4 MiB: L2/L3, like the model)."""
    torch.set_num_threads(threads)
    a, x = torch.randn(1024, 1024), torch.randn(1024)
    for _ in range(20):
        torch.mv(a, x)
    calls, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        for _ in range(50):
            torch.mv(a, x)
        calls += 50
    return 2 * 1024 * 1024 * calls / (time.perf_counter() - started) / 1e9


def load() -> str:
    """The 1-minute load average, where the OS reports one (timings on a busy machine drop)."""
    if not hasattr(os, "getloadavg"):
        return "load average unknown"
    return f"load average {os.getloadavg()[0]:.1f}"


def decode_flops(hidden: int, layers: int, classes: int = 256) -> int:
    """FLOPs of one decode step: layer 0 recurrence (its input is a table row), layers > 0 on
    [input, recurrent], the head."""
    return 2 * (4 * hidden * hidden + (layers - 1) * 8 * hidden * hidden + classes * hidden)


def encode_flops(hidden: int, layers: int) -> int:
    """FLOPs of one encoder step, counted the same way (no head)."""
    return decode_flops(hidden, layers, classes=0)


class Variant:
    """One timed thing: `run()` produces `streams * samples` samples."""

    def __init__(self, name: str, streams: int, samples: int, run: Callable[[], object]) -> None:
        self.name, self.streams, self.samples, self.run = name, streams, samples, run
        self.best = self.best_cpu = float("inf")

    def time_once(self) -> None:
        started, started_cpu = time.perf_counter(), time.process_time()
        self.run()
        self.best = min(self.best, time.perf_counter() - started)
        self.best_cpu = min(self.best_cpu, time.process_time() - started_cpu)

    @property
    def rate(self) -> float:
        return self.streams * self.samples / self.best

    @property
    def cpu_rate(self) -> float:
        return self.streams * self.samples / max(self.best_cpu, 1e-9)


def timed(variants: list[Variant], repeats: int) -> None:
    for v in variants:
        v.time_once()  # warm-up (kernel build and load, allocator, caches)
        v.best = v.best_cpu = float("inf")
    for _ in range(repeats):
        for v in variants:
            v.time_once()


def report(title: str, variants: list[Variant], flops_per_sample: float, matvec: float) -> None:
    """One table; ratios are against the first row (naive) and the second (reference)."""
    naive, ref = variants[0].rate, variants[1].rate
    print(f"\n{title}")
    rates = "".join(f"{f'RTF@{sr / 1000:g}k':>11}" for sr in RATES)
    print(
        f"{'variant':<26}{'streams':>8}{'samples/s':>11}{'per CPU-s':>11}{'GFLOP/s':>9}"
        f"{'% mv':>6}{rates}{'vs naive':>10}{'vs ref':>8}"
    )
    for v in variants:
        gflops = v.rate * flops_per_sample / 1e9
        rtfs = "".join(f"{v.rate / v.streams / sr:>10.2f}x" for sr in RATES)
        print(
            f"{v.name:<26}{v.streams:>8}{v.rate:>11.0f}{v.cpu_rate:>11.0f}{gflops:>9.1f}"
            f"{100 * gflops / matvec:>5.0f}%{rtfs}{v.rate / naive:>9.2f}x{v.rate / ref:>7.2f}x"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3, help="best of this many timings each")
    parser.add_argument("--streams", type=int, nargs="+", default=[1, 4, 16])
    parser.add_argument("--chunks", type=int, default=2, help="long-form chunks per stream")
    parser.add_argument("--backend", choices=("c", "torch", "both"), default="both")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    module = Seq2SeqModule(
        sr=16000, prev_len_max=CONTEXT, next_len=CHUNK, hidden=args.hidden, layers=args.layers
    ).eval()
    net = module.net
    weights = net.decoder_weights()
    fused_c = fused_h = fused_t = None
    if args.backend in ("c", "both"):
        lib = load_kernel()
        if lib is None:
            sys.exit("--backend c: the C kernel is unavailable here (no compiler?); use torch")
        fused_c = FusedBackend(weights, lib)
        fused_h = FusedBackend(module.net.decoder_weights(), lib, "float16")
    if args.backend in ("torch", "both"):
        fused_t = FusedBackend(weights, None)
    reference = ReferenceBackend(weights)
    matvec = matvec_gflops(args.threads)
    step = decode_flops(args.hidden, args.layers)
    print(
        f"{args.layers} x {args.hidden} LSTM mu-law seq2seq: {step / 1e6:.2f} MFLOP per decoded "
        f"sample; {args.threads} thread(s); best of {args.repeats}"
    )
    print(
        f"machine: torch.mv 1024 x 1024 fp32 in a loop = {matvec:.1f} GFLOP/s ('% mv' below); "
        f"{load()} on {os.cpu_count()} cores"
    )

    streams = max(args.streams)
    prime = torch.rand(streams, CONTEXT, generator=torch.Generator().manual_seed(1)) * 0.2 - 0.1
    with torch.inference_mode():
        start = net.start(prime, CHUNK)  # the encoder over the context, in torch
        started = time.perf_counter()
        for _ in range(max(1, args.repeats)):
            net.start(prime[:1], CHUNK)
        start_ms = (time.perf_counter() - started) / max(1, args.repeats) * 1e3
    print(
        f"net.start (the encoder over {CONTEXT} context samples, 1 stream): {start_ms:.1f} ms "
        f"per chunk = {start_ms / CHUNK * 1e3:.1f} us per decoded sample of a {CHUNK} chunk"
    )

    def rows(b: int) -> DecodeStart:
        (h, c), context = start.state, start.context
        return DecodeStart((h[:, :b].contiguous(), c[:, :b].contiguous()), context[:b])

    sampling = Sampling()

    def backend_decode(backend, b: int, n: int) -> Callable[[], object]:
        first = rows(b)

        @torch.inference_mode()
        def run() -> object:
            return backend.decode(first, n, sampling, torch.Generator().manual_seed(0))

        return run

    one = rows(1)
    (h1, c1), x1 = one.state, one.context[:, -1]
    decode = [
        Variant("naive eager loop", 1, 300, lambda: naive_decode(module, (h1, c1), x1, 300)),
        Variant("reference backend", 1, 300, backend_decode(reference, 1, 300)),
    ]
    if fused_t is not None:
        decode.append(Variant("fused, torch", 1, 600, backend_decode(fused_t, 1, 600)))
    if fused_c is not None:
        for b in args.streams:
            n = max(256, 4096 // b)
            decode.append(Variant("fused, C kernel", b, n, backend_decode(fused_c, b, n)))
            decode.append(Variant("fused, C kernel fp16", b, n, backend_decode(fused_h, b, n)))
    timed(decode, args.repeats)
    report("1. decode: the per-sample loop from net.start's state", decode, step, matvec)

    n_long = args.chunks * CHUNK
    long_form = [
        Variant("naive eager loop", 1, n_long, lambda: naive_generate(module, prime[:1], n_long))
    ]

    def long_run(b: int, engine: str) -> Callable[[], object]:
        return lambda: generate_long(module, prime[:b], n_long, engine=engine)

    for b in sorted({1, max(args.streams)}):
        for engine in ("reference", "fused"):
            long_form.append(Variant(f"generate_long {engine}", b, n_long, long_run(b, engine)))
    timed(long_form, max(1, args.repeats - 1))
    per_sample = step + CONTEXT / CHUNK * encode_flops(args.hidden, args.layers)
    report(
        f"2. long-form: generate_long, {args.chunks} chunks of {CHUNK} per stream, each "
        f"re-encoding {CONTEXT} samples ({per_sample / 1e6:.1f} MFLOP per sample)",
        long_form,
        per_sample,
        matvec,
    )
    print(f"\n{load()} at the end")


if __name__ == "__main__":
    main()

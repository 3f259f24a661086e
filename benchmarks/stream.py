"""Benchmark a long streamed take: real-time factor and memory minute by minute.

    python benchmarks/stream.py [--minutes 10] [--sr 16000] [--threads 1] [--models sample-level ...]

Two models with random weights (speed does not depend on the weights), one stream each, read in
0.5-s pieces as a player would:

- sample-level: a 2 x 256 mu-law seq2seq (frame_size 1), context 1024, chunk 1024;
- tiered: the same LSTMs with frame_size 16 and a slow top tier top_frame_size 256;
- lookback: the tiered model hearing 4 s with a 4-s lookback and copy head
  (`experiment=music_16k`); it decodes in the C kernel too (one kernel call per 16-ms search
  hop, the search's FFT in torch between calls), and its bare reference decode (the Python
  frame loop it ran before) is printed beside the fused one.

For each, `carry=state` (the encoder's running state moves on over every new chunk: in the C
kernel for the sample-level model, `engine.encoder_for`; the tiered model's top tier in torch),
for the sample-level model also `state/torch` (the same stream with the torch encoder, what
carry=state ran before the fused encoder), `state/fp16` (carry=state with the fused decoder's and
encoder's weights stored as float16, `fused.PRECISIONS`: half the bytes per step, float32 sums;
its bare fused decode is printed too), and `carry=window` (every chunk re-encodes the last
`context_len` samples). Printed per minute of audio: the real-time factor (audio seconds per
wall second; "CPU RTF" per second of this process's CPU time, what an unshared core would give
on a busy machine) and the process's resident memory; then minute N's cost per sample against minute
1's (flat = 1.00) and the streamed rate against the baseline measured in the same run: the bare
fused decode of one chunk after another from one encoded state (`backend.decode`, no encoder,
no stream bookkeeping).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

from lofibeats.generation.stream import Stream
from lofibeats.models.sampling import Sampling
from lofibeats.models.seq2seq import Seq2SeqModule

READ_S = 0.5


def rss_mb() -> float:
    """Resident memory of this process in MB (Linux /proc; 0 where it cannot be read)."""
    status = Path("/proc/self/status")
    if not status.exists():
        return 0.0
    for line in status.read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


MODELS = {
    "sample-level 2x256": {},
    "tiered 16/256 2x256": {"frame_size": 16, "top_frame_size": 256},
    "lookback 4 s, tiered 16/256": {
        "frame_size": 16,
        "top_frame_size": 256,
        "prev_len_max": "4s",
        "lookback": "4s",
    },
}


def build(sr: int, config: dict) -> Seq2SeqModule:
    torch.manual_seed(0)
    config = {"prev_len_max": 1024, **config}
    return Seq2SeqModule(sr=sr, next_len=1024, hidden=256, layers=2, **config).eval()


def bare_decode_rate(
    module: Seq2SeqModule, seconds: float, engine: str = "auto", precision: str = "float32"
) -> float:
    """Samples/s of the stream's backend alone (the one `engine` picks, its weights at
    `precision`), chunk after chunk from one encoded state."""
    prime = torch.zeros(1, module.context_len)
    stream = Stream(module, prime, carry="state", engine=engine, precision=precision)
    backend, net = stream.continuation.backend, module.net
    start = net.start(stream.history, module.chunk_len)
    n, done = module.chunk_len, 0
    began = time.perf_counter()
    with torch.inference_mode():
        while done < seconds * module.sample_rate:
            backend.decode(start, n, Sampling(), stream.generator)
            done += n
    return done / (time.perf_counter() - began)


def minutes_of(
    module: Seq2SeqModule, carry: str, minutes: float
) -> list[tuple[float, float, float]]:
    """(RTF, RTF per CPU second, RSS MB) of each minute of one streamed take; carry "state/torch" is carry=state
    with the family's torch encoder instead of the fused one, "state/fp16" with the fused
    decoder and encoder at float16 weights."""
    sr = module.sample_rate
    prime = 0.1 * torch.sin(torch.arange(module.context_len) * 0.05)[None]
    precision = "float16" if carry == "state/fp16" else "float32"
    stream = Stream(
        module, prime, sampling=Sampling(0.9), carry=carry.split("/")[0], precision=precision
    )
    if carry == "state/torch":
        stream.encoder = None
    piece, per_minute = round(READ_S * sr), round(60 * sr)
    rows = []
    for _ in range(max(1, round(minutes))):
        began, began_cpu, done = time.perf_counter(), time.process_time(), 0
        while done < per_minute:
            done += stream.read(min(piece, per_minute - done)).shape[1]
        wall, cpu = time.perf_counter() - began, time.process_time() - began_cpu
        rows.append((60.0 / wall, 60.0 / max(cpu, 1e-9), rss_mb()))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=10.0, help="audio minutes per take")
    parser.add_argument("--sr", type=int, default=16000)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument(
        "--models",
        nargs="+",
        choices=[n.split()[0] for n in MODELS],
        default=None,
        help="the models to run (default: all)",
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"python {' '.join(sys.argv)}  (threads {args.threads}, {args.sr} Hz)")
    for name, config in MODELS.items():
        if args.models and name.split()[0] not in args.models:
            continue
        module = build(args.sr, config)
        baseline = bare_decode_rate(module, seconds=5.0)
        engine = Stream(module, carry="state").engine
        print(f"\n{name}: bare {engine} decode {baseline / args.sr:.2f}x real time (baseline)")
        if "lookback" in config:
            reference = bare_decode_rate(module, seconds=5.0, engine="reference")
            print(f"{name}: bare reference decode {reference / args.sr:.2f}x real time")
        if not config:
            half = bare_decode_rate(module, seconds=5.0, precision="float16")
            print(f"{name}: bare {engine} decode, float16 weights {half / args.sr:.2f}x real time")
        print(
            f"{'carry':11} {'minute':>6} {'RTF':>7} {'CPU RTF':>8} {'RSS MB':>8} {'cost vs min 1':>14} {'vs baseline':>12}"
        )
        carries = (
            ("state", "window") if config else ("state", "state/fp16", "state/torch", "window")
        )
        for carry in carries:
            rows = minutes_of(module, carry, args.minutes)
            first = rows[0][0]
            for minute, (rtf, cpu_rtf, rss) in enumerate(rows, start=1):
                print(
                    f"{carry:11} {minute:>6} {rtf:>6.2f}x {cpu_rtf:>7.2f}x {rss:>8.0f} {first / rtf:>14.2f} "
                    f"{rtf * args.sr / baseline:>12.2f}"
                )


if __name__ == "__main__":
    main()

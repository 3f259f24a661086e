"""Benchmark long-form generation: `generate_long` vs a naive eager per-sample loop.

    python benchmarks/generate.py [--batch 4] [--seconds 0.25] [--threads 1] [--hidden 256]

The model is a 2 x 256 LSTM mu-law seq2seq with random weights (speed does not depend on the
weights). For each rate it prints samples/s per stream and in total, the real-time factor (audio
seconds per wall second, per stream) and the ratio to the baseline measured in the same run.

The baseline is what one writes first: a Python loop that, per chunk, re-encodes the context
and then, per sample, runs `nn.LSTM` on a length-1 sequence, a softmax, `torch.multinomial`,
and appends the dequantised sample. `generate_long` does the same work through
`Seq2SeqModule.continue_audio`, so today's ratio is about 1: the number to beat for a faster
decode engine.
"""

from __future__ import annotations

import argparse
import time

import torch

from lofibeats.audio.mulaw import dequantize, quantize
from lofibeats.generation.longform import generate_long
from lofibeats.models.seq2seq import Seq2SeqModule

RATES = (8000, 16000, 22050)


@torch.inference_mode()
def naive_generate(
    module: Seq2SeqModule, prime: torch.Tensor, n_samples: int, temperature: float, seed: int
) -> torch.Tensor:
    """The baseline: chunk by chunk like generate_long, one eager step per sample."""
    generator = torch.Generator().manual_seed(seed)
    history, pieces, produced = prime, [], 0
    while produced < n_samples:
        prev_tokens = quantize(history[:, -module.context_len :])
        state = module.encoder(module.embed(prev_tokens))
        token = prev_tokens[:, -1]
        samples = []
        for _ in range(min(module.chunk_len, n_samples - produced)):
            h, state = module.decoder.lstm(module.embed(token)[:, None], state)
            probs = torch.softmax(module.head.proj(h[:, 0]) / temperature, dim=-1)
            token = torch.multinomial(probs, 1, generator=generator)[:, 0]
            samples.append(dequantize(token))
        piece = torch.stack(samples, dim=1)
        pieces.append(piece)
        produced += piece.shape[1]
        history = torch.cat([history, piece], dim=1)
    return torch.cat(pieces, dim=1)


def timed(fn, *args, **kwargs) -> float:
    started = time.perf_counter()
    fn(*args, **kwargs)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--batch", type=int, default=4, help="streams generated together (generate.py n)"
    )
    parser.add_argument(
        "--seconds", type=float, default=0.25, help="audio per stream per measurement"
    )
    parser.add_argument(
        "--threads", type=int, default=1, help="torch CPU threads (generate.py threads)"
    )
    parser.add_argument("--rates", type=int, nargs="+", default=list(RATES), help="sample rates")
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=2, help="best of this many timings each")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(
        f"{args.layers} x {args.hidden} LSTM mu-law seq2seq, batch {args.batch}, "
        f"{args.threads} thread(s), context 2048 / chunk 512 samples, best of {args.repeats}"
    )
    print("ratio = baseline time / generate_long time (> 1: generate_long is faster)")
    print(
        f"{'rate':>6} {'samples/s/stream':>17} {'total':>9} {'RTF':>7} {'baseline':>9} {'ratio':>6}"
    )
    for sr in args.rates:
        torch.manual_seed(0)
        module = Seq2SeqModule(
            sr=sr, prev_len_max=2048, next_len=512, hidden=args.hidden, layers=args.layers
        ).eval()
        n = round(args.seconds * sr)
        prime = torch.rand(args.batch, 2048) * 0.2 - 0.1
        generate_long(module, prime, 64, temperature=1.0, seed=0)  # warm-up
        ours, base = float("inf"), float("inf")
        for _ in range(args.repeats):  # interleaved, so both see the same background load
            ours = min(ours, timed(generate_long, module, prime, n))
            base = min(base, timed(naive_generate, module, prime, n, 1.0, 0))
        rate, base_rate = n / ours, n / base
        print(
            f"{sr:>6} {rate:>17.0f} {rate * args.batch:>9.0f} {rate / sr:>6.3f}x "
            f"{base_rate:>9.0f} {base / ours:>5.2f}x"
        )


if __name__ == "__main__":
    main()

"""Probe (not part of the package): which join lets grains keep the beat? The real codes of
held-out clips (an oracle plan, so only the renderer differs) played by a plan checkpoint's grain
bank, its grains chosen by the log-spectrum join (the package's) or by the squared difference of
waveforms (the join before it), next to the real continuations (DESIGN.md, "Rendering with
grains"):

    OMP_NUM_THREADS=1 python docs/probes/grain_join.py --ckpt <plan run>/checkpoints/last.ckpt \
        --test data/cache/<test>/sr16000 --clips 16
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
from oracle_render import segments, shards

from lofibeats.metrics.music import music_stats
from lofibeats.models.checkpoint import load_module
from lofibeats.models.grains import GrainBank

PRIME, TAKE, SR = 4 * 16000, 10 * 16000, 16000


class WaveformJoin(GrainBank):
    """The join before spectra: the least squared difference between the last grain's second
    half and a candidate's first half, at the candidate's best start in its slack."""

    def _join(self, code: torch.Tensor, grain: torch.Tensor) -> torch.Tensor:
        kept = self.grains[code].float()  # (B, size, 2 * hop + 2 * shift)
        heads = kept[:, :, self.starts[:, None] + self.head_span]
        return (heads - grain[:, None, None, self.hop :]).pow(2).mean(-1).amin(-1)


def medians(audio: torch.Tensor, prime: torch.Tensor) -> str:
    stats = [music_stats(a.numpy(), SR, past=p.numpy()) for a, p in zip(audio, prime, strict=True)]
    return "  ".join(f"{k} {np.median([s[k] for s in stats]):.4f}" for k in ("beat", "flatness"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ckpt", type=Path, required=True, help="a plan checkpoint (grains)")
    parser.add_argument("--test", type=Path, required=True, help="a prepared sr16000 cache")
    parser.add_argument("--clips", type=int, default=16)
    args = parser.parse_args()
    torch.set_num_threads(1)
    net = load_module(args.ckpt).eval().net
    clips = segments(
        shards(args.test), args.clips, PRIME + TAKE, np.random.default_rng(1), min_rms=0.03
    )
    prime, real = clips[:, :PRIME], clips[:, PRIME:]
    with torch.no_grad():
        codes = net.codebook.encode(net.frames(clips))[:, PRIME // net.hop :]
    print(f"real          {medians(real, prime)}")
    bank = net.grains
    waveform = WaveformJoin(len(bank.count), bank.size, bank.hop, bank.memory, bank.shift)
    waveform.load_state_dict(bank.state_dict())
    for name, joins in (("spectra", bank), ("waveform", waveform)):
        audio, _ = joins.render(codes, joins.begin(prime))
        print(f"{name:13s} {medians(audio, prime)}")


if __name__ == "__main__":
    main()

"""Probe (not part of the package): can a cheap frame-rate model write the plan? It learns
80-band log-mel frames (16 ms) one after another, hearing through a lookback in mel space (every
frame, the frame that followed the best match of the last 0.5 s among lags of 0.5-4 s), then
continues held-out real primes frame by frame; `oracle_render.py`'s renderer turns those plans
into audio, judged with the same measures as its oracle renders. DESIGN.md, "Plan, then render",
has the figures; the command that made them (after oracle_render.py wrote its renderer):

    OMP_NUM_THREADS=1 python docs/probes/mel_plan.py --train data/cache/<train>/sr16000 \
        --test data/cache/<test>/sr16000 --minutes 23 \
        --renderer outputs/probes/oracle_render/renderer.pt
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch
from oracle_render import (
    HOP,
    N_MELS,
    TAKE,
    MelFrames,
    judge,
    load_renderer,
    plan_arguments,
    shards,
    test_clips,
    update,
)
from torch import nn
from torch.nn import functional as F

WINDOW, LAG_MIN, LAG_MAX = 32, 32, 250  # frames: a 0.5-s match, lags of 0.5-4 s


def recall(frames: torch.Tensor, start: int) -> tuple[torch.Tensor, torch.Tensor]:
    """For every frame t >= start of `frames` (B, T, N_MELS): the frame at t - lag, where lag
    (LAG_MIN..LAG_MAX, fitting in t - WINDOW) is the one whose WINDOW frames before t - lag best
    match the WINDOW before t (normalised cross-correlation), and that score. All lags at once,
    from one Gram matrix summed along its diagonals."""
    b, length, _ = frames.shape
    z = frames - frames.mean(dim=2, keepdim=True)
    gram = torch.bmm(z, z.transpose(1, 2))
    t = torch.arange(length)[:, None]
    lags = torch.arange(LAG_MIN, LAG_MAX + 1)[None]
    diagonals = gram[:, t, (t - lags).clamp(min=0)] * (t - lags >= 0)  # z_t . z_{t - lag}
    sums = F.pad(diagonals.cumsum(1), (0, 0, 1, 0))
    energy = F.pad((z * z).sum(2).cumsum(1), (1, 0))
    now = torch.arange(start, length)
    dots = sums[:, now] - sums[:, now - WINDOW]
    then = (now[:, None] - lags).clamp(min=WINDOW)
    norms = (energy[:, now] - energy[:, now - WINDOW])[..., None] * (
        energy[:, then] - energy[:, then - WINDOW]
    )
    score = (dots / (norms + 1e-6).sqrt()).masked_fill((then - WINDOW < 0)[None], -2.0)
    best, pick = score.max(dim=2)
    source = now[None] - lags[0][pick]
    return frames[torch.arange(b)[:, None], source], best


class MelPlan(nn.Module):
    """Next frame ~ Normal(gate * recall + (1 - gate) * mean, std), all from an LSTM over the
    previous frame, the recall and its score."""

    def __init__(self, hidden: int = 512) -> None:
        super().__init__()
        self.inp = nn.Linear(2 * N_MELS + 1, hidden)
        self.rnn = nn.LSTM(hidden, hidden, batch_first=True)
        self.out = nn.Linear(hidden, 2 * N_MELS)
        self.gate = nn.Linear(hidden, N_MELS)

    def forward(self, prev, recalled, score, state=None):
        x = torch.relu(self.inp(torch.cat([prev, recalled, score[..., None]], -1)))
        h, state = self.rnn(x, state)
        mean, log_std = self.out(h).chunk(2, -1)
        gate = torch.sigmoid(self.gate(h))
        return gate * recalled + (1 - gate) * mean, log_std.clamp(-5, 2), state

    def warm(self, frames: torch.Tensor):
        """The state after teacher-forcing `frames` (no recall: the lookback needs a past)."""
        b, length, _ = frames.shape
        zeros = torch.zeros(b, length - 1, N_MELS)
        return self(frames[:, :-1], zeros, torch.zeros(b, length - 1))[2]


def train_frames(folder: Path, mels: MelFrames, cache: Path) -> list[np.ndarray]:
    """Every shard's log-mel frames (float16), computed once and kept in `cache`."""
    if cache.exists():
        stored = np.load(cache)
        return [stored[k] for k in sorted(stored.files)]
    out = []
    for audio in shards(folder):
        step = HOP * 4096
        parts = [
            mels(torch.from_numpy(np.asarray(audio[s : s + step], dtype=np.float32) / 32768.0))
            for s in range(0, len(audio), step)
        ]
        out.append(torch.cat(parts, dim=-1).T.numpy().astype(np.float16))
    np.savez(cache, **{f"shard{i:03d}": f for i, f in enumerate(out)})
    return out


def train(frames: list[np.ndarray], minutes: float, batch: int = 32, target: int = 250):
    gen = np.random.default_rng(0)
    net = MelPlan()
    opt = torch.optim.Adam(net.parameters(), 1e-3)
    context = LAG_MAX + WINDOW
    started, step = time.monotonic(), 0
    while time.monotonic() - started < minutes * 60:
        rows = []
        while len(rows) < batch:
            shard = frames[gen.integers(len(frames))]
            start = gen.integers(0, len(shard) - context - target)
            row = shard[start : start + context + target].astype(np.float32)
            if row.mean() >= -0.3:  # skip stretches that are mostly silence
                rows.append(row)
        m = torch.from_numpy(np.stack(rows))
        recalled, score = recall(m, context)
        with torch.no_grad():
            state = net.warm(m[:, :context])
        mean, log_std, _ = net(m[:, context - 1 : -1], recalled, score, state)
        target_frames = m[:, context:]
        nll = (log_std + 0.5 * ((target_frames - mean) / log_std.exp()) ** 2).mean()
        update(opt, nll, clip=1.0)
        step += 1
        if step % 50 == 0:
            l1 = (target_frames - mean).abs().mean().item()
            hold = (target_frames - m[:, context - 1 : -1]).abs().mean().item()
            print(
                f"step {step}, {time.monotonic() - started:.0f} s: L1 {l1:.3f} (last frame {hold:.3f})"
            )
    return net


@torch.no_grad()
def continue_plan(net: MelPlan, prime: torch.Tensor, count: int, temperature: float):
    frames = prime.clone()
    state = net.warm(frames)
    for _ in range(count):
        recalled, score = recall(torch.cat([frames, frames[:, -1:]], 1), frames.shape[1])
        mean, log_std, state = net(frames[:, -1:], recalled, score, state)
        frames = torch.cat([frames, mean + temperature * log_std.exp() * torch.randn_like(mean)], 1)
    return frames[:, prime.shape[1] :]


@torch.no_grad()
def loop_plan(prime: torch.Tensor, count: int) -> torch.Tensor:
    """No model: every frame is the lookback's recall, so the plan loops the prime's frames."""
    frames = prime.clone()
    for _ in range(count):
        recalled, _ = recall(torch.cat([frames, frames[:, -1:]], 1), frames.shape[1])
        frames = torch.cat([frames, recalled], 1)
    return frames[:, prime.shape[1] :]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train", type=Path, required=True, help="a prepared sr16000 cache")
    plan_arguments(parser, temperatures=[0.0, 0.5, 1.0])
    parser.add_argument("--out", type=Path, default=Path("outputs/probes/mel_plan"))
    args = parser.parse_args()
    renderer = load_renderer(args.renderer)  # a missing one stops the probe before it trains
    torch.set_num_threads(1)
    args.out.mkdir(parents=True, exist_ok=True)
    mels = MelFrames()
    net = train(train_frames(args.train, mels, args.out / "train_frames.npz"), args.minutes)
    prime, _ = test_clips(args.test)
    for temperature in args.temperatures:
        plan = continue_plan(net, mels(prime).transpose(1, 2), TAKE // HOP, temperature)
        audio = renderer.render(prime, plan.transpose(1, 2), TAKE, args.render_temperature)
        judge(f"plan T {temperature}", audio, prime)
    looped = loop_plan(mels(prime).transpose(1, 2), TAKE // HOP)
    audio = renderer.render(prime, looped.transpose(1, 2), TAKE, args.render_temperature)
    judge("plan = the lookback's recall alone (the prime's frames looped)", audio, prime)


if __name__ == "__main__":
    main()

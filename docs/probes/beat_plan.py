"""Probe (not part of the package): does a plan model keep the beat when it hears the music in
beats rather than in frames? `code_plan.py`'s LSTM must find the beat itself in a stream of 16-ms
codes and does not within 20 minutes. Here the beat period P is measured (the peak of the onset
envelope's autocorrelation over 0.3-1.0 s, on the 4 s before the frames it predicts, as at
generation on the prime), and the model predicts the next code from the codes 1 and 2 frames
back and those 1, 2, 3 and 4 beats back (and one frame either side of a beat back). What the
previous bars did at this point of the beat is then an input, not something to discover. It is
an MLP, so training is one parallel pass over many targets; the plans go through
`oracle_render.py`'s renderer. The command, after `mel_plan.py` cached the training frames:

    OMP_NUM_THREADS=1 python docs/probes/beat_plan.py --frames outputs/probes/mel_plan/train_frames.npz \
        --test data/cache/<test>/sr16000 --renderer outputs/probes/oracle_render/renderer.pt \
        --minutes 10
"""

from __future__ import annotations

import argparse
import copy
import time
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
from code_plan import CODES, coded_frames, encode
from oracle_render import (
    HOP,
    PRIME,
    SR,
    TAKE,
    MelFrames,
    judge,
    load_renderer,
    plan_arguments,
    test_clips,
    update,
)
from torch import nn
from torch.nn import functional as F

from lofibeats.audio.spectrogram import save_spectrogram_png

CONTEXT = 250  # frames (4 s): what the period is measured on, and the prime's length
PERIOD_MIN, PERIOD_MAX = 19, 62  # frames: 0.3-1.0 s, so four periods fit in CONTEXT
BEATS = (1, 2, 3, 4)
NEAR = (1, 2)
NGRAM = 12  # codes (0.19 s): a run this long found in training is a copy
SLOTS = len(NEAR) + len(BEATS) + 2  # the +2: one frame either side of one beat back


def onset_flux(frames: torch.Tensor) -> torch.Tensor:
    """(..., T, N_MELS) log-mel frames -> (..., T) half-wave rectified flux."""
    return F.pad(F.relu(frames.diff(dim=-2)).mean(-1), (1, 0))


def beat_period(frames: torch.Tensor) -> torch.Tensor:
    """(B, T, N_MELS) -> (B,) the lag in frames (PERIOD_MIN..PERIOD_MAX) where the onset
    envelope's autocorrelation peaks."""
    env = onset_flux(frames)
    env = env - env.mean(-1, keepdim=True)
    lags = torch.arange(PERIOD_MIN, PERIOD_MAX + 1)
    ac = torch.stack([(env[:, lag:] * env[:, :-lag]).mean(-1) for lag in lags.tolist()], -1)
    return lags[ac.argmax(-1)]


def offsets(period: torch.Tensor) -> torch.Tensor:
    """(N,) periods -> (N, SLOTS) how far back each input code lies."""
    near = torch.tensor(NEAR).expand(len(period), -1)
    beats = period[:, None] * torch.tensor(BEATS)[None]
    jitter = period[:, None] + torch.tensor([-1, 1])[None]
    return torch.cat([near, beats, jitter], 1)


class BeatPlan(nn.Module):
    """logits of the next code from the codes at `offsets` back."""

    def __init__(self, width: int = 96, hidden: int = 768, dropout: float = 0.0) -> None:
        super().__init__()
        self.embed = nn.Embedding(CODES, width)
        self.slot = nn.Parameter(torch.zeros(SLOTS, width))
        self.net = nn.Sequential(
            nn.Dropout(dropout),
            nn.Linear(SLOTS * width, hidden),
            nn.GELU(),
            nn.Dropout(dropout),
            nn.Linear(hidden, hidden),
            nn.GELU(),
            nn.Dropout(dropout),
            nn.Linear(hidden, CODES),
        )

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        return self.net((self.embed(inputs) + self.slot).flatten(1))


class Targets:
    """Every frame with four periods of past before it, as (shard, frame, period) rows; the
    period is measured on the CONTEXT frames before its block of CONTEXT frames."""

    def __init__(self, frames: list[torch.Tensor], codes: list[torch.Tensor]) -> None:
        self.codes = codes
        rows = []
        for i, shard in enumerate(frames):
            starts = torch.arange(CONTEXT, len(shard) - CONTEXT, CONTEXT)
            before = torch.stack([shard[s - CONTEXT : s] for s in starts.tolist()])
            periods = beat_period(before)
            audible = before.mean((1, 2)) >= -0.3  # skip stretches that are mostly silence
            for start, period in zip(
                starts[audible].tolist(), periods[audible].tolist(), strict=True
            ):
                t = torch.arange(start, start + CONTEXT)
                rows.append(torch.stack([torch.full_like(t, i), t, torch.full_like(t, period)], 1))
        self.rows = torch.cat(rows)

    def batch(self, index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        shard, t, period = self.rows[index].T
        back = t[:, None] - offsets(period)
        inputs = torch.empty_like(back)
        target = torch.empty_like(t)
        for i, codes in enumerate(self.codes):
            mine = shard == i
            inputs[mine] = codes[back[mine]]
            target[mine] = codes[t[mine]]
        return inputs, target


def train(
    targets: Targets,
    held_out: Targets,
    minutes: float,
    dropout: float,
    keep_best: bool,
    batch: int = 4096,
) -> BeatPlan:
    """The net after `minutes`, or at its best held-out loss (checked every 250 steps)."""
    net = BeatPlan(dropout=dropout)
    opt = torch.optim.AdamW(net.parameters(), 1e-3, weight_decay=0.05 if dropout else 0.0)
    gen = torch.Generator().manual_seed(0)
    check = held_out.batch(torch.randperm(len(held_out.rows), generator=gen)[:20_000])
    best, kept = float("inf"), None
    started, step = time.monotonic(), 0
    while time.monotonic() - started < minutes * 60:
        net.train()
        inputs, target = targets.batch(torch.randint(len(targets.rows), (batch,), generator=gen))
        update(opt, F.cross_entropy(net(inputs), target))
        step += 1
        if step % 250 == 0:
            net.eval()
            with torch.no_grad():
                held = F.cross_entropy(net(check[0]), check[1]).item()
            if held < best:
                best = held
                if keep_best:
                    kept = copy.deepcopy(net.state_dict())
            print(
                f"step {step}, {time.monotonic() - started:.0f} s: held-out {held:.3f} nats/frame"
            )
    checked = f"best held-out {best:.3f}" if step >= 250 else "no held-out check yet"
    print(f"{step} steps of {batch} targets in {minutes} min; {checked}")
    if kept is not None:
        net.load_state_dict(kept)
    return net.eval()


@torch.no_grad()
def continue_codes(
    net: BeatPlan, prime_codes: torch.Tensor, period: torch.Tensor, count: int, temperature: float
) -> torch.Tensor:
    codes = prime_codes.clone()
    back = offsets(period)
    rows = torch.arange(len(codes))[:, None]
    for _ in range(count):
        inputs = codes[rows, codes.shape[1] - back]
        probs = torch.softmax(net(inputs) / temperature, -1)
        codes = torch.cat([codes, torch.multinomial(probs, 1)], 1)
    return codes[:, prime_codes.shape[1] :]


def beat_copies(codes: torch.Tensor, period: torch.Tensor) -> float:
    """How often a code equals the one a period back: a plan that only loops reads 1."""
    t = torch.arange(int(period.max()), codes.shape[1])
    rows = torch.arange(len(codes))[:, None]
    return (codes[rows, t[None]] == codes[rows, t[None] - period[:, None]]).float().mean().item()


def ngram_hashes(codes: torch.Tensor, n: int = NGRAM) -> np.ndarray:
    """(..., T) codes -> a hash of every run of n consecutive codes (wrapping uint64 arithmetic)."""
    runs = codes.unfold(-1, n, 1).reshape(-1, n).numpy().astype(np.uint64)
    weights = np.uint64(CODES + 1) ** np.arange(n, dtype=np.uint64)
    with np.errstate(over="ignore"):
        return (runs * weights).sum(1, dtype=np.uint64)


def copied_from_training(plan: torch.Tensor, training: np.ndarray) -> float:
    """The share of the plan's NGRAM-code runs (0.19 s) found verbatim in the training codes."""
    return float(np.isin(ngram_hashes(plan), training).mean())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=Path, required=True, help="mel_plan.py's frame cache")
    plan_arguments(parser, temperatures=[0.8, 1.0])
    parser.add_argument("--dropout", type=float, default=0.0)
    parser.add_argument("--out", type=Path, default=Path("outputs/probes/beat_plan"))
    parser.add_argument("--keep-best", action="store_true", help="the best held-out step's net")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    renderer = load_renderer(args.renderer)  # a missing one stops the probe before it trains
    torch.set_num_threads(1)
    frames, centroids, codes = coded_frames(args.frames)
    training = np.unique(np.concatenate([ngram_hashes(c) for c in codes[1:]]))
    net = train(
        Targets(frames[1:], codes[1:]),
        Targets(frames[:1], codes[:1]),
        args.minutes,
        args.dropout,
        args.keep_best,
    )
    mels = MelFrames()
    prime, real = test_clips(args.test)
    prime_frames = mels(prime).transpose(1, 2)
    period = beat_period(prime_frames)
    prime_codes = encode(prime_frames, centroids)
    print("beat periods of the primes (s):", [round(p * HOP / SR, 2) for p in period.tolist()])

    def report(name: str, plan_codes: torch.Tensor) -> None:
        plan = centroids[plan_codes].transpose(1, 2)
        audio = renderer.render(prime, plan, TAKE, args.render_temperature)
        whole = torch.cat([prime_codes, plan_codes], 1)
        print(
            f"{name}: codes equal to the one a beat back {beat_copies(whole, period):.2f}, "
            f"runs of {NGRAM} codes found in training {copied_from_training(plan_codes, training):.3f}"
        )
        judge(name, audio, prime)
        take = torch.cat([prime[0], audio[0]])
        stem = name.replace(" ", "_").replace(",", "")
        sf.write(args.out / f"{stem}.wav", take.numpy(), SR)
        title = f"{name}: real prime | continuation"
        save_spectrogram_png(take, SR, args.out / f"{stem}.png", title=title, split_at=PRIME / SR)

    report("real frames, coded", encode(mels(real).transpose(1, 2), centroids))
    for temperature in args.temperatures:
        plan = continue_codes(net, prime_codes, period, TAKE // HOP, temperature)
        report(f"beat plan T {temperature}", plan)


if __name__ == "__main__":
    main()

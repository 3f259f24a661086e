"""Probe (not part of the package): does a plan of discrete frame codes keep the beat where
`mel_plan.py`'s Gaussian frames lose it? Log-mel frames (16 ms) are clustered into 256 codes
(k-means); an LSTM learns the next code (categorical, so "a hit here, or none" is one draw, not an
average), hearing the code that followed the best match in mel space 0.5-4 s back (`mel_plan`'s
lookback). Its plans (each code's centroid frame) go through `oracle_render.py`'s renderer, next
to the real frames coded the same way (the cost of the codes alone). The command, after
`mel_plan.py` cached the training frames in its --out:

    OMP_NUM_THREADS=1 python docs/probes/code_plan.py --frames outputs/probes/mel_plan/train_frames.npz \
        --test data/cache/<test>/sr16000 --renderer outputs/probes/oracle_render/renderer.pt \
        --minutes 20
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch
from mel_plan import LAG_MAX, WINDOW, recall
from oracle_render import (
    HOP,
    TAKE,
    MelFrames,
    judge,
    load_renderer,
    plan_arguments,
    test_clips,
    update,
)
from torch import nn

CODES = 256


def kmeans(frames: torch.Tensor, k: int = CODES, iterations: int = 15) -> torch.Tensor:
    gen = torch.Generator().manual_seed(0)
    centroids = frames[torch.randperm(len(frames), generator=gen)[:k]].clone()
    for _ in range(iterations):
        nearest = torch.cdist(frames, centroids).argmin(1)
        for c in range(k):
            members = frames[nearest == c]
            if len(members):
                centroids[c] = members.mean(0)
    return centroids


def encode(frames: torch.Tensor, centroids: torch.Tensor) -> torch.Tensor:
    flat = frames.reshape(-1, frames.shape[-1])
    codes = torch.cat([torch.cdist(part, centroids).argmin(1) for part in flat.split(65536)])
    return codes.reshape(frames.shape[:-1])


def coded_frames(cache: Path) -> tuple[list[torch.Tensor], torch.Tensor, list[torch.Tensor]]:
    """`mel_plan.py`'s cached frames per shard, the k-means centroids of 100,000 of them, and
    every shard's codes."""
    stored = np.load(cache)
    frames = [torch.from_numpy(stored[k].astype(np.float32)) for k in sorted(stored.files)]
    pick = torch.randperm(sum(len(f) for f in frames), generator=torch.Generator().manual_seed(0))
    centroids = kmeans(torch.cat(frames)[pick[:100_000]])
    return frames, centroids, [encode(f, centroids) for f in frames]


class CodePlan(nn.Module):
    """logits of the next code from the previous code, the recalled code and its score."""

    def __init__(self, hidden: int = 512) -> None:
        super().__init__()
        self.prev = nn.Embedding(CODES, hidden)
        self.recalled = nn.Embedding(CODES + 1, hidden)  # CODES: nothing recalled yet
        self.score = nn.Linear(1, hidden)
        self.rnn = nn.LSTM(hidden, hidden, batch_first=True)
        self.out = nn.Linear(hidden, CODES)

    def forward(self, prev, recalled, score, state=None):
        x = self.prev(prev) + self.recalled(recalled) + self.score(score[..., None])
        h, state = self.rnn(torch.relu(x), state)
        return self.out(h), state


def recalled_codes(codes: torch.Tensor, centroids: torch.Tensor, start: int):
    """The code at the lookback's pick for every frame >= start, found on the centroid frames."""
    frames = centroids[codes]
    picked, score = recall(frames, start)
    return encode(picked, centroids), score


def train(codes: list[torch.Tensor], centroids: torch.Tensor, minutes: float, batch: int = 32):
    gen = np.random.default_rng(0)
    net = CodePlan()
    opt = torch.optim.Adam(net.parameters(), 1e-3)
    context, target = LAG_MAX + WINDOW, 250
    started, step = time.monotonic(), 0
    while time.monotonic() - started < minutes * 60:
        rows = []
        for _ in range(batch):
            shard = codes[gen.integers(len(codes))]
            start = int(gen.integers(0, len(shard) - context - target))
            rows.append(shard[start : start + context + target])
        c = torch.stack(rows)
        rec, score = recalled_codes(c, centroids, context)
        rec = torch.cat([torch.full((batch, context - 1), CODES), rec], 1)
        score = torch.cat([torch.zeros(batch, context - 1), score], 1)
        logits, _ = net(c[:, :-1], rec, score)
        loss = nn.functional.cross_entropy(
            logits[:, context - 1 :].flatten(0, 1), c[:, context:].flatten()
        )
        update(opt, loss, clip=1.0)
        step += 1
        if step % 50 == 0:
            hold = (c[:, context:] == c[:, context - 1 : -1]).float().mean().item()
            print(
                f"step {step}, {time.monotonic() - started:.0f} s: {loss.item():.3f} nats/frame, last code repeats {hold:.2f}"
            )
    return net


@torch.no_grad()
def continue_codes(net, centroids, prime_codes, count, temperature):
    codes = prime_codes.clone()
    b, length = codes.shape
    _, state = net(codes[:, :-1], torch.full((b, length - 1), CODES), torch.zeros(b, length - 1))
    for _ in range(count):
        rec, score = recalled_codes(torch.cat([codes, codes[:, -1:]], 1), centroids, codes.shape[1])
        logits, state = net(codes[:, -1:], rec, score, state)
        probs = torch.softmax(logits[:, -1] / temperature, -1)
        codes = torch.cat([codes, torch.multinomial(probs, 1)], 1)
    return codes[:, length:]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=Path, required=True, help="mel_plan.py's frame cache")
    plan_arguments(parser, temperatures=[0.8, 1.0])
    args = parser.parse_args()
    renderer = load_renderer(args.renderer)  # a missing one stops the probe before it trains
    torch.set_num_threads(1)
    frames, centroids, codes = coded_frames(args.frames)
    net = train(codes, centroids, args.minutes)
    mels = MelFrames()
    prime, real = test_clips(args.test)

    def report(name: str, plan_codes: torch.Tensor) -> None:
        plan = centroids[plan_codes].transpose(1, 2)
        audio = renderer.render(prime, plan, TAKE, args.render_temperature)
        judge(name, audio, prime)

    report("real frames, coded", encode(mels(real).transpose(1, 2), centroids))
    prime_codes = encode(mels(prime).transpose(1, 2), centroids)
    for temperature in args.temperatures:
        report(
            f"code plan T {temperature}",
            continue_codes(net, centroids, prime_codes, TAKE // HOP, temperature),
        )


if __name__ == "__main__":
    main()

"""Probe (not part of the package): how much of the gap between generated audio and music is the
plan (what happens when) and how much the rendering (what each sample sounds like)?

It trains a cheap sample-level renderer conditioned on 80-band log-mel frames (16 ms hop) of the
audio it predicts, then renders held-out continuations from the *real* continuation's frames
(an oracle plan) after 4-s real primes, and prints the quality benchmark's measures for the
renders and the real audio. A render that keeps the beat shows a plan is
enough for the beat; what stays wrong (flatness) is the renderer's. DESIGN.md, "Plan, then
render", has the figures; the commands that made them (the second judges a trained renderer;
`--train` with `--renderer` trains it on):

    OMP_NUM_THREADS=1 python docs/probes/oracle_render.py \
        --train data/cache/<train>/sr16000 --test data/cache/<test>/sr16000 --minutes 25
    OMP_NUM_THREADS=1 python docs/probes/oracle_render.py \
        --renderer outputs/probes/oracle_render/renderer.pt --test data/cache/<test>/sr16000

(`<train>` / `<test>`: the caches `python benchmarks/quality.py --data <real corpus>` prepared.)
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
import torchaudio
from torch import nn

from lofibeats.audio.mulaw import N_CLASSES, dequantize, quantize
from lofibeats.metrics.music import music_stats

SR, HOP, N_MELS, PAST = 16000, 256, 80, 256
PRIME, TAKE = 4 * SR, 10 * SR
MEASURES = ("beat", "flatness", "repeat", "copy_span", "rms")


class MelFrames(nn.Module):
    """(B, T) audio -> (B, N_MELS, T // HOP) log-mel frames, roughly unit scale; frame f is
    centred on sample f * HOP."""

    def __init__(self) -> None:
        super().__init__()
        self.mel = torchaudio.transforms.MelSpectrogram(
            SR, n_fft=1024, hop_length=HOP, n_mels=N_MELS, center=True
        )

    def forward(self, audio: torch.Tensor) -> torch.Tensor:
        frames = (torch.log(self.mel(audio) + 1e-5) + 5.0) / 4.0
        return frames[..., : audio.shape[-1] // HOP]


class Renderer(nn.Module):
    """p(sample t | the PAST samples before it, the mel frames around t): an MLP, so training
    is one parallel pass and a step of generation three small matrix products. Past samples
    come in companded (mu-law values in [-1, 1]), so quiet passages are as visible as loud ones."""

    def __init__(self, hidden: int = 256) -> None:
        super().__init__()
        self.plan = nn.Sequential(
            nn.Conv1d(N_MELS, hidden, 3, padding=1),
            nn.GELU(),
            nn.Conv1d(hidden, hidden, 3, padding=1),
        )
        self.past = nn.Linear(PAST, hidden)
        self.head = nn.Sequential(
            nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(), nn.Linear(hidden, N_CLASSES)
        )

    def forward(self, past: torch.Tensor, plan: torch.Tensor) -> torch.Tensor:
        return self.head(self.past(past) + plan)

    @torch.no_grad()
    def render(
        self, prime: torch.Tensor, mels: torch.Tensor, n: int, temperature: float
    ) -> torch.Tensor:
        """n samples after `prime` (B, >= PAST) following `mels` (B, N_MELS, n // HOP), through
        `dc_free`."""
        plan = self.plan(mels).transpose(1, 2)
        past = companded(quantize(prime[:, -PAST:]))
        out = torch.empty(prime.shape[0], n)
        for t in range(n):
            logits = self(past, plan[:, t // HOP]) / temperature
            token = torch.multinomial(torch.softmax(logits, -1), 1)
            out[:, t] = dequantize(token[:, 0])
            past = torch.cat([past[:, 1:], companded(token)], 1)
        return dc_free(out)


def companded(tokens: torch.Tensor) -> torch.Tensor:
    """Mu-law classes as values in [-1, 1], evenly spaced."""
    return tokens.float() * (2.0 / (N_CLASSES - 1)) - 1.0


def dc_free(audio: torch.Tensor, pole: float = 0.995) -> torch.Tensor:
    """A one-pole DC blocker (corner ~13 Hz at 16 kHz) over (B, T) renders: causal, so a stream
    can run it sample by sample. The renderer's output drifts off zero; music does not."""
    return torchaudio.functional.lfilter(
        audio, torch.tensor([1.0, -pole]), torch.tensor([1.0, -1.0]), clamp=False
    )


def update(opt: torch.optim.Optimizer, loss: torch.Tensor, clip: float | None = None) -> None:
    """One optimiser step on `loss`, its gradients clipped to norm `clip` if given."""
    opt.zero_grad()
    loss.backward()
    if clip is not None:
        params = [p for group in opt.param_groups for p in group["params"]]
        nn.utils.clip_grad_norm_(params, clip)
    opt.step()


def judge(name: str, audio: torch.Tensor, prime: torch.Tensor) -> None:
    """Print the medians of the quality benchmark's measures over the takes, and the verdicts."""
    stats = [music_stats(a.numpy(), SR, past=p.numpy()) for a, p in zip(audio, prime, strict=True)]
    medians = {k: round(float(np.median([s[k] for s in stats])), 4) for k in MEASURES}
    print(name, json.dumps(medians), "verdicts:", [s["verdict"] for s in stats], flush=True)


def shards(folder: Path) -> list[np.ndarray]:
    paths = sorted(folder.glob("shard-*.npy"))
    if not paths:
        raise SystemExit(
            f"{folder}: no shard-*.npy here; give a prepared data/cache/<name>/sr16000"
        )
    return [np.load(p, mmap_mode="r") for p in paths]


def test_clips(folder: Path) -> tuple[torch.Tensor, torch.Tensor]:
    """The 8 held-out (prime, real continuation) pairs every probe judges: 4 s, then 10 s."""
    clips = segments(shards(folder), 8, PRIME + TAKE, np.random.default_rng(1), min_rms=0.03)
    return clips[:, :PRIME], clips[:, PRIME:]


def load_renderer(path: Path) -> Renderer:
    if not path.is_file():
        raise SystemExit(f"{path}: no renderer here; run docs/probes/oracle_render.py first")
    renderer = Renderer()
    renderer.load_state_dict(torch.load(path, weights_only=True))
    return renderer


def plan_arguments(parser: argparse.ArgumentParser, temperatures: list[float]) -> None:
    """The options of the probes that write a plan and render it with oracle_render's renderer."""
    parser.add_argument("--test", type=Path, required=True, help="a prepared sr16000 cache")
    parser.add_argument("--renderer", type=Path, required=True, help="oracle_render.py's")
    parser.add_argument("--minutes", type=float, default=20.0)
    parser.add_argument("--temperatures", type=float, nargs="+", default=temperatures)
    parser.add_argument("--render-temperature", type=float, default=0.85)


def segments(
    arrays: list[np.ndarray], count: int, length: int, gen, min_rms: float
) -> torch.Tensor:
    """`count` random stretches of `length` samples whose RMS is at least `min_rms`."""
    rows: list[np.ndarray] = []
    while len(rows) < count:
        audio = arrays[gen.integers(len(arrays))]
        start = gen.integers(0, len(audio) - length)
        row = np.asarray(audio[start : start + length], dtype=np.float32) / 32768.0
        if np.sqrt((row**2).mean()) >= min_rms:
            rows.append(row)
    return torch.from_numpy(np.stack(rows))


def train(
    folder: Path,
    minutes: float,
    mels: MelFrames,
    net: Renderer,
    batch: int = 16,
    length: int = 2048,
) -> Renderer:
    gen = np.random.default_rng(0)
    data = shards(folder)
    opt = torch.optim.Adam(net.parameters(), 1e-3)
    started, step = time.monotonic(), 0
    while time.monotonic() - started < minutes * 60:
        audio = segments(data, batch, PAST + length, gen, min_rms=0.01)
        gain = torch.exp(torch.empty(batch, 1).uniform_(-0.7, 0.3))
        audio = audio * gain * torch.randn(batch, 1).sign()
        tokens = quantize(audio)
        plan = net.plan(mels(audio[:, PAST:])).repeat_interleave(HOP, dim=2).transpose(1, 2)
        past = companded(tokens).unfold(1, PAST, 1)[:, :length]
        logits = net(past, plan)
        loss = nn.functional.cross_entropy(logits.flatten(0, 1), tokens[:, PAST:].flatten())
        update(opt, loss)
        step += 1
        if step % 100 == 0:
            bits = loss.item() / math.log(2)
            print(f"step {step}, {time.monotonic() - started:.0f} s: {bits:.3f} bits/sample")
    return net


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train", type=Path, help="a prepared sr16000 cache to train on")
    parser.add_argument(
        "--renderer", type=Path, help="a trained renderer: judged, or trained on with --train"
    )
    parser.add_argument("--test", type=Path, required=True, help="a prepared sr16000 cache")
    parser.add_argument("--minutes", type=float, default=25.0)
    parser.add_argument("--temperatures", type=float, nargs="+", default=[1.0, 0.85, 0.7])
    parser.add_argument("--out", type=Path, default=Path("outputs/probes/oracle_render"))
    args = parser.parse_args()
    if args.train is None and args.renderer is None:
        parser.error("give --train (to train a renderer), --renderer (to judge one) or both")
    torch.set_num_threads(1)
    mels = MelFrames()
    args.out.mkdir(parents=True, exist_ok=True)
    net = Renderer() if args.renderer is None else load_renderer(args.renderer)
    if args.train is not None:
        net = train(args.train, args.minutes, mels, net)
        torch.save(net.state_dict(), args.out / "renderer.pt")  # the plan probes render with it
    prime, real = test_clips(args.test)

    judge("real", real, prime)
    for temperature in args.temperatures:
        renders = net.render(prime, mels(real), TAKE, temperature)
        judge(f"rendered from the real frames, T {temperature}", renders, prime)
        sf.write(args.out / f"T{temperature}_take0.wav", torch.cat([prime[0], renders[0]]), SR)


if __name__ == "__main__":
    main()

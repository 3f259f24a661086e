"""Benchmark the plan family's render loop: the C kernel (`lofi_render`) vs `render_reference`, and
whole streams with either renderer.

    python benchmarks/plan_render.py [--seconds 4] [--reference-seconds 1] [--sr 16000]
        [--hidden 256] [--threads 1] [--repeats 3] [--no-stream]

Random weights throughout (speed does not depend on them), batch 1, measured in this one run:

1. render: `Renderer` (hidden `--hidden`, past 256, hop 16 ms) rendering `--seconds` of audio
   from random conditioning, in the C kernel (`backend_render.CRenderLoop`, best of
   `--repeats`) and in PyTorch (`plan_net.render_reference`, the baseline; timed on
   `--reference-seconds`, its cost per sample being flat).
2. stream: a whole `Stream` of an untrained default-size `PlanModule` (its codebook and grains
   fitted on noise) reading `--seconds` in 0.5-s pieces after a 4-s prime: the sample renderer
   with engine=reference (the baseline) and engine=fused (the plan, the renderer's
   conditioning, the render loop and the DC blocker), and the default grains (the plan and
   the grains' joins and overlap-add), beside the same grains with the join's head spectra
   computed for every frame's candidates, as before `GrainBank.heads` kept them, and the
   default grains drawing the plan without its beat prior (`beat_prior=0`).

Printed: samples/s, the real-time factor (audio seconds per wall second; "CPU RTF" per second
of this process's CPU time, what an unshared core would give on a busy machine) and the
speed-up over the reference measured in the same run.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable

import torch

from lofibeats.generation.backend_render import render_loop_for, render_loop_name
from lofibeats.generation.kernel import load_kernel
from lofibeats.generation.stream import Stream
from lofibeats.models.grains import GrainBank
from lofibeats.models.plan import PlanModule
from lofibeats.models.plan_net import PLAN_BEAT_PRIOR, Renderer, companded, render_reference
from lofibeats.models.sampling import Sampling

READ_S = 0.5


def load() -> str:
    """The 1-minute load average, where the OS reports one (timings on a busy machine drop)."""
    if not hasattr(os, "getloadavg"):
        return "load average unknown"
    return f"load average {os.getloadavg()[0]:.1f}"


def best_of(run: Callable[[], object], repeats: int) -> tuple[float, float]:
    """(wall, CPU) seconds of the fastest of `repeats` runs."""
    wall = cpu = float("inf")
    for _ in range(max(1, repeats)):
        started, started_cpu = time.perf_counter(), time.process_time()
        run()
        wall = min(wall, time.perf_counter() - started)
        cpu = min(cpu, time.process_time() - started_cpu)
    return wall, cpu


def row(name: str, samples: int, wall: float, cpu: float, sr: int, baseline: float) -> float:
    rate = samples / wall
    print(
        f"{name:<44}{rate:>11.0f}{rate / sr:>9.2f}x{samples / max(cpu, 1e-9) / sr:>9.2f}x"
        f"{rate / baseline:>10.1f}x"
    )
    return rate


def header(title: str) -> None:
    print(f"\n{title}")
    print(f"{'loop':<44}{'samples/s':>11}{'RTF':>10}{'CPU RTF':>10}{'vs ref':>11}")


def bench_render(args: argparse.Namespace) -> None:
    hop = round(0.016 * args.sr)
    torch.manual_seed(0)
    renderer = Renderer(n_mels=80, hidden=args.hidden, past=256, hop=hop).eval()
    loop = render_loop_for(renderer, "fused", torch.device("cpu"))
    n, n_ref = round(args.seconds * args.sr), round(args.reference_seconds * args.sr)
    gen = torch.Generator().manual_seed(1)
    past = companded(torch.randint(0, 256, (1, 256), generator=gen))
    cond = torch.randn(1, -(-n // hop), args.hidden, generator=gen)
    uniforms = torch.rand(1, n, generator=gen)

    def fused() -> object:
        return loop(renderer, past, cond, uniforms)

    def reference() -> object:
        return render_reference(renderer, past, cond, uniforms[:, :n_ref])

    with torch.inference_mode():
        fused()  # warm-up
        ref_wall, ref_cpu = best_of(reference, 1)
        wall, cpu = best_of(fused, args.repeats)
        same = (fused()[0][:, :n_ref] == reference()[0]).float().mean()
    header(
        f"1. render: hidden {args.hidden}, past 256, hop {hop}, batch 1, {args.sr} Hz "
        f"({n} samples fused, {n_ref} reference)"
    )
    baseline = n_ref / ref_wall
    row("render_reference (torch)", n_ref, ref_wall, ref_cpu, args.sr, baseline)
    row(render_loop_name(loop), n, wall, cpu, args.sr, baseline)
    print(f"tokens equal to the reference's on {100 * float(same):.2f}% of {n_ref} samples")


class PerFrameSpectra(GrainBank):
    """The join before the cache: each frame's candidates' head spectra computed anew."""

    def _join(self, code: torch.Tensor, grain: torch.Tensor) -> torch.Tensor:
        heads = self.grains[code][:, :, self.shift + self.head_span].float()
        return (self._spectrum(heads) - self._spectrum(grain[:, None, self.hop :])).pow(2).mean(-1)


def per_frame_spectra(module: PlanModule) -> PlanModule:
    """A copy of the grains `module` whose bank recomputes its join spectra every frame."""
    copy = PlanModule(**dict(module.hparams)).eval()
    copy.load_state_dict(module.state_dict())
    bank = module.net.grains
    copy.net.grains = PerFrameSpectra(len(bank.count), bank.size, bank.hop, bank.memory, bank.shift)
    copy.net.grains.load_state_dict(bank.state_dict())
    return copy


def untrained(args: argparse.Namespace, render: str) -> PlanModule:
    """A default-size PlanModule with random weights, its codebook (and grains) fitted on noise."""
    torch.manual_seed(0)
    module = PlanModule(sr=args.sr, prev_len_max=4 * args.sr, next_len=16384, render=render).eval()
    module.net.fit_codes([0.2 * torch.randn(8, 4 * args.sr)])
    return module


def timed_stream(
    module: PlanModule,
    prime: torch.Tensor,
    engine: str,
    n: int,
    beat_prior: float = PLAN_BEAT_PRIOR,
) -> tuple[torch.Tensor, float, float, str]:
    """(audio, wall s, CPU s, engine name) of a stream reading `n` samples in READ_S pieces,
    the plan drawn at temperature 1 under `beat_prior`."""
    sampling = Sampling(beat_prior=beat_prior)
    stream = Stream(module, prime, sampling=sampling, carry="state", engine=engine, seed=0)
    piece = round(READ_S * module.sample_rate)
    started, started_cpu, pieces, done = time.perf_counter(), time.process_time(), [], 0
    while done < n:
        pieces.append(stream.read(min(piece, n - done)))
        done += pieces[-1].shape[1]
    wall, cpu = time.perf_counter() - started, time.process_time() - started_cpu
    return torch.cat(pieces, 1), wall, cpu, stream.engine


def bench_stream(args: argparse.Namespace) -> None:
    samples, grains = untrained(args, "samples"), untrained(args, "grains")
    prime = 0.2 * torch.randn(1, samples.context_len, generator=torch.Generator().manual_seed(2))
    n = round(args.seconds * args.sr)
    runs = {
        "render=samples, engine=reference": timed_stream(samples, prime, "reference", n),
        "render=samples, engine=fused": timed_stream(samples, prime, "fused", n),
        "render=grains (the default)": timed_stream(grains, prime, "auto", n),
        "render=grains, join spectra per frame": timed_stream(
            per_frame_spectra(grains), prime, "auto", n
        ),
        "render=grains, beat_prior=0": timed_stream(grains, prime, "auto", n, beat_prior=0.0),
    }
    header(
        f"2. stream: PlanModule(sr={args.sr}, prev_len_max={4 * args.sr}, next_len=16384), "
        f"untrained, {args.seconds:g} s read in {READ_S:g}-s pieces"
    )
    baseline = n / runs["render=samples, engine=reference"][1]
    for name, (_, wall, cpu, engine) in runs.items():
        row(f"Stream, {name}", n, wall, cpu, args.sr, baseline)
        print(f"  (engine {engine!r})")
    fused, reference = runs["render=samples, engine=fused"][0], runs[next(iter(runs))][0]
    same = (fused == reference).float().mean()
    print(f"fused audio equal to the reference stream's on {100 * float(same):.2f}% of {n} samples")
    cached, per_frame = (
        runs["render=grains (the default)"],
        runs["render=grains, join spectra per frame"],
    )
    print(
        f"grains: the cached join spectra run {per_frame[1] / cached[1]:.2f}x the per-frame join "
        f"(the same audio: {bool(torch.equal(cached[0], per_frame[0]))}); the beat prior costs "
        f"{cached[1] / runs['render=grains, beat_prior=0'][1]:.2f}x the plan alone's time"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=4.0, help="audio seconds rendered")
    parser.add_argument(
        "--reference-seconds", type=float, default=1.0, help="seconds the reference renders"
    )
    parser.add_argument("--sr", type=int, default=16000)
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--repeats", type=int, default=3, help="best of this many (fused)")
    parser.add_argument("--no-stream", action="store_true", help="skip the Stream benchmark")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if load_kernel() is None:
        sys.exit("the C kernel is unavailable here (no compiler, or LOFIBEATS_KERNEL=off)")
    print(f"{args.threads} thread(s); {load()} on {os.cpu_count()} cores")
    bench_render(args)
    if not args.no_stream:
        bench_stream(args)
    print(f"\n{load()} at the end")


if __name__ == "__main__":
    main()

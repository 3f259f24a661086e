"""Quality benchmark: train a family for a wall-clock budget, then judge it on held-out audio.

    python benchmarks/quality.py --family plan|seq2seq|vseq2seq|gan --data builtin|<folder>
        [--sr 16000] [--minutes 15] [--takes 8] [--seconds 10] [--prime-seconds 4]
        [--windows 16] [--temperature auto|T] [--top-p P] [--loop 0|auto|L] [--seed 0] [--out DIR]
        [--run DIR] [--carry auto|window|state] [--beat-prior B] [key=value ...]

Trains with `python train.py model=<family> data.sr=<sr> +trainer.max_time=<budget>
trainer.max_steps=-1` (a subprocess, exactly what a user runs; trailing `key=value` arguments are
passed on to it as Hydra overrides and win over these defaults: `trainer.max_steps=600` keeps
the plan to its budget), then loads its last checkpoint.
Held-out audio: `<folder>/test/` when it exists (the model then trains on `<folder>/train/`),
else the run's val split; it is prepared (resampled, loudness-normalised) like training audio.

One table compares, side by side, `--takes` generated continuations of `--seconds` s (each
continuing a real `--prime-seconds` prime, `generate_long` as generate.py runs it), the real
continuations of the same primes, and white noise at the real audio's RMS (the ceiling): beat,
flatness (`lofibeats.metrics.music`, issue 11); repeat, loop and copy span (how much of each
clip copies its prime and its own past, at what lag, for how long:
`lofibeats.metrics.repetition`); DC, RMS and the sanity verdicts. Below it, the
model's bits/sample of `--windows` held-out windows given 64 ms, 1 s and 4 s of past
(`lofibeats.metrics.context_nll`) and eval.py's teacher-forced held-out bits/sample. A spectrogram
of the first prime and its continuation (`take0.png`) and the report (`quality.md`) go to the
output folder; the command line is printed first, so every figure can be reproduced.
"""

from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np
import torch
from omegaconf import OmegaConf
from torch.utils.data import DataLoader

from lofibeats.audio.spectrogram import save_spectrogram_png
from lofibeats.commands.evaluate import EvalAudio, teacher_forced
from lofibeats.data.windows import ValWindows, collate_pairs
from lofibeats.errors import ConfigError
from lofibeats.generation.longform import generate_long
from lofibeats.generation.stream import resolve_carry
from lofibeats.metrics.context_nll import CONTEXT_SECONDS, context_nll
from lofibeats.metrics.music import music_stats
from lofibeats.models.base import LofiModule
from lofibeats.models.checkpoint import load_module
from lofibeats.models.decoding import auto_beat_prior, auto_temperature, has_lookback
from lofibeats.models.sampling import Sampling

REPO = Path(__file__).resolve().parents[1]
FAMILIES = ("seq2seq", "vseq2seq", "gan", "plan")


def knob(text: str) -> str | float:
    """A sampling knob as generate.py takes it: "auto" or a number."""
    return text if text == "auto" else float(text)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--family", choices=FAMILIES, default="plan")
    parser.add_argument("--data", default="builtin", help="builtin, or a folder of audio files")
    parser.add_argument("--sr", type=int, default=16000)
    parser.add_argument("--minutes", type=float, default=15.0, help="training wall-clock budget")
    parser.add_argument("--takes", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=10.0, help="length of each take")
    parser.add_argument("--prime-seconds", type=float, default=4.0)
    parser.add_argument("--windows", type=int, default=16, help="held-out windows for the NLL")
    parser.add_argument(
        "--temperature", type=knob, default="auto", help="auto (as generate.py resolves it) or T"
    )
    parser.add_argument("--top-p", type=float, default=None)
    parser.add_argument(
        "--loop",
        type=knob,
        default=0.0,
        help="lookback models: the least share on the recall; auto as generate.py resolves it",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=None, help="default: outputs/quality/<time>")
    parser.add_argument(
        "--run", type=Path, default=None, help="judge this training run folder instead of training"
    )
    parser.add_argument(
        "--carry",
        choices=("auto", "window", "state"),
        default="auto",
        help="how takes connect chunks (auto: as generate.py decides, see resolve_carry)",
    )
    parser.add_argument(
        "--beat-prior", type=knob, default="auto", help="plan models: auto (15) or B (0: off)"
    )
    parser.add_argument("overrides", nargs="*", help="Hydra overrides for train.py")
    args = parser.parse_args()
    try:  # a bad knob stops the benchmark before it trains
        Sampling.parse(args.temperature, args.top_p, loop=args.loop, beat_prior=args.beat_prior)
    except ConfigError as exc:
        parser.error(str(exc))
    return args


def data_folders(data: str) -> tuple[Path | None, Path | None]:
    """(what to train on, the held-out folder): None, None for the built-in corpus (its val
    split is held out); `<data>/train` and `<data>/test` when `<data>/test` exists."""
    if data == "builtin":
        return None, None
    folder = Path(data).expanduser().absolute()
    test = folder / "test"
    if not test.is_dir():
        return folder, None
    if not (folder / "train").is_dir():
        sys.exit(f"error: {folder} has test/ but no train/: put the training audio in train/")
    return folder / "train", test


def train(args: argparse.Namespace, raw_dir: Path | None, run_dir: Path) -> dict:
    """Run train.py for the budget; returns its status.json."""
    budget = round(args.minutes * 60)
    defaults = {
        "model": args.family,
        "data.sr": str(args.sr),
        "data.raw_dir": "null" if raw_dir is None else str(raw_dir),
        "trainer.max_steps": "-1",
        "+trainer.max_time": f"00:{budget // 3600:02d}:{budget // 60 % 60:02d}:{budget % 60:02d}",
        "paths.root_dir": str(REPO),
        "hydra.run.dir": str(run_dir),
    }
    given = {o.split("=", 1)[0].lstrip("+~") for o in args.overrides}
    overrides = [f"{k}={v}" for k, v in defaults.items() if k.lstrip("+") not in given]
    command = [sys.executable, str(REPO / "train.py"), *overrides, *args.overrides]
    print(f"train: {shlex.join(command)}", flush=True)
    subprocess.run(command, cwd=REPO, check=True)
    return json.loads((run_dir / "status.json").read_text(encoding="utf-8"))


def heldout(run_dir: Path, test_dir: Path | None) -> EvalAudio:
    """The held-out audio, prepared like the training audio of the run in `run_dir`."""
    data = OmegaConf.to_container(OmegaConf.load(run_dir / "config_resolved.yaml").data)
    if test_dir is None:
        return EvalAudio.prepare(data, "val", progress=False)
    return EvalAudio.prepare({**data, "raw_dir": str(test_dir)}, "all", progress=False)


def pairs_tensors(pairs: ValWindows) -> tuple[torch.Tensor, torch.Tensor]:
    """All (prev, next) windows stacked: [N, Tp], [N, Tn]."""
    items = [pairs[i] for i in range(len(pairs))]
    return torch.stack([p for p, _ in items]), torch.stack([n for _, n in items])


def set_row(name: str, clips: np.ndarray, primes: np.ndarray, sr: int) -> str:
    """One markdown row: means over clips (each continuing its prime) of beat, flatness, repeat,
    loop, copy span, DC, RMS; max |DC|; verdicts."""
    stats = [music_stats(c, sr, p) for c, p in zip(clips, primes, strict=True)]

    def mean(key: str) -> float:
        return float(np.mean([s[key] for s in stats]))

    verdicts = Counter(str(s["verdict"]) for s in stats)
    worst_dc = max(abs(float(s["dc_offset"])) for s in stats)
    counts = ", ".join(f"{v} {n}/{len(stats)}" for v, n in sorted(verdicts.items()))
    return (
        f"| {name} | {mean('beat'):.3f} | {mean('flatness'):.4f} | {mean('repeat'):.3f} "
        f"| {mean('loop'):.2f} | {mean('copy_span'):.2f} | {mean('dc_offset'):+.4f} "
        f"| {worst_dc:.4f} | {mean('rms'):.4f} | {counts} |"
    )


def nll_lines(module: LofiModule, audio: EvalAudio, windows: int) -> list[str]:
    """NLL given 64 ms / 1 s / 4 s of past, and eval.py's teacher-forced held-out figure."""
    sr = module.sample_rate
    tf_pairs = audio.windows(windows, module.context_len, module.chunk_len, "add longer files")
    loader = DataLoader(tf_pairs, batch_size=16, collate_fn=collate_pairs)
    metrics = teacher_forced(module, loader)["metrics"]
    held = f"held-out (eval.py, {len(tf_pairs)} windows, prev {module.context_len} samples): "
    held += ", ".join(f"{k} {v:.4f}" for k, v in sorted(metrics.items()))
    contexts = [round(s * sr) for s in CONTEXT_SECONDS]
    remedy = f"add files longer than {(contexts[-1] + module.chunk_len) / sr:.1f} s"
    prev, nxt = pairs_tensors(audio.windows(windows, contexts[-1], module.chunk_len, remedy))
    nll = context_nll(module, prev, nxt, contexts)
    if nll is None:
        return [f"NLL against context: n/a ({module.family} has no likelihood)", held]
    figures = " / ".join(f"{nll[c]:.4f}" for c in contexts)
    gain = nll[contexts[0]] - nll[contexts[-1]]
    labels = " / ".join(f"{s * 1000:g} ms" if s < 1 else f"{s:g} s" for s in CONTEXT_SECONDS)
    return [
        f"NLL bits/sample of {len(prev)} held-out windows of {module.chunk_len} samples given "
        f"{labels} of past: {figures} (4 s is {gain:+.4f} better than 64 ms)",
        held,
    ]


def main() -> None:
    args = parse_args()
    command = shlex.join(["python", "benchmarks/quality.py", *sys.argv[1:]])
    print(f"command: {command}", flush=True)
    stamp = time.strftime("%Y-%m-%d/%H-%M-%S")
    out = (args.out or REPO / "outputs" / "quality" / f"{stamp}_{args.family}").absolute()
    raw_dir, test_dir = data_folders(args.data)

    run_dir = args.run.absolute() if args.run else out / "train"
    if args.run is None:
        status = train(args, raw_dir, run_dir)
    else:
        status = json.loads((run_dir / "status.json").read_text(encoding="utf-8"))
    module = load_module(run_dir / "checkpoints" / "last.ckpt").eval()
    sr = module.sample_rate
    audio = heldout(run_dir, test_dir)
    out.mkdir(parents=True, exist_ok=True)
    data_mode = OmegaConf.load(run_dir / "config_resolved.yaml").data.get("mode", "windows")
    carry = resolve_carry(args.carry, module, data_mode)

    prime_len, take_len = round(args.prime_seconds * sr), round(args.seconds * sr)
    remedy = "lower --seconds or --prime-seconds"
    primes, real = pairs_tensors(audio.windows(args.takes, prime_len, take_len, remedy))
    started = time.perf_counter()
    sampling = Sampling.parse(
        args.temperature,
        args.top_p,
        loop=args.loop,
        beat_prior=args.beat_prior,
        lookback=has_lookback(module.net),
        model_temperature=auto_temperature(module.net),
        model_beat_prior=auto_beat_prior(module.net),
    )
    generated = generate_long(
        module, primes, take_len, sampling=sampling, seed=args.seed, carry=carry
    )
    gen_wall = time.perf_counter() - started
    rms = float(real.pow(2).mean().sqrt())
    noise = np.random.default_rng(args.seed).normal(0.0, rms, real.shape).clip(-1.0, 1.0)
    save_spectrogram_png(
        torch.cat([primes[0], generated[0]]),
        sr,
        out / "take0.png",
        title=f"{module.family}: real prime | generated continuation",
        split_at=args.prime_seconds,
    )

    held = "test/" if test_dir is not None else "val split"
    lines = [
        f"command: {command}",
        f"trained: {status.get('steps')} steps in {float(status.get('wall_s', 0)) / 60:.1f} min, "
        f"{status.get('metric')} {status.get('value')}; {module.family} at {sr} Hz; "
        f"held-out audio: {held} ({len(audio.spans)} files)",
        f"takes: {args.takes} x {args.seconds:g} s after {args.prime_seconds:g} s real primes, "
        f"{sampling}, carry={carry}, seed {args.seed}; generated in {gen_wall:.0f} s "
        f"(RTF {args.takes * args.seconds / gen_wall:.2f}x for all takes)",
        "",
        "| audio | beat | flatness | repeat | loop s | copy span s | DC | max abs DC | RMS "
        "| verdicts |",
        "|---|---|---|---|---|---|---|---|---|---|",
        set_row("generated", generated.numpy(), primes.numpy(), sr),
        set_row("real", real.numpy(), primes.numpy(), sr),
        set_row("white noise", noise, primes.numpy(), sr),
        "",
        *nll_lines(module, audio, args.windows),
        f"spectrogram of prime 0 and its continuation: {out / 'take0.png'}",
    ]
    report = "\n".join(lines)
    print(report)
    (out / "quality.md").write_text(report + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()

"""Seq2seq training throughput (next-samples/s) vs a bare PyTorch model with the same LSTM shapes.

    python benchmarks/train_step.py [--rounds 2] [--steps 4] [--warmup 1] [--batch 32] [--prev 2048]
        [--next 512] [--hidden 128] [--layers 2] [--embed 64] [--device cpu] [--threads N]

Shapes default to conf/model/seq2seq.yaml and conf/data/default.yaml (prev = prev_len_max, the
longest window). Three variants, run in turn for `--rounds` rounds (so background load hits each
alike), each timed as the median seconds per step over its steps after `--warmup` per round:

1. baseline: embedding + encoder LSTM + decoder LSTM + linear + cross-entropy, forward +
   backward + AdamW, on pre-quantised int64 tokens (the least work a training step can do);
2. Seq2SeqModule.training_step + backward + AdamW in a plain loop;
3. Seq2SeqModule under a real `pl.Trainer` (logging, hooks, grad-norm, LR warm-up;
   no gradient clipping unless `--clip`), timed between consecutive `on_train_batch_end`s.

Prints samples/s (B * next_len / step time) and each one's ratio against the baseline.
"""

from __future__ import annotations

import argparse
import statistics
import time
import warnings
from pathlib import Path

import pytorch_lightning as pl
import torch
from omegaconf import OmegaConf
from torch import nn

from lofibeats.audio.mulaw import quantize
from lofibeats.models.seq2seq import Seq2SeqModule

CONF = Path(__file__).resolve().parents[1] / "conf"


class BareSeq2Seq(nn.Module):
    """The baseline: the same LSTM shapes, nothing else."""

    def __init__(self, hidden: int, layers: int, embed: int) -> None:
        super().__init__()
        self.embed = nn.Embedding(256, embed)
        self.encoder = nn.LSTM(embed, hidden, layers, batch_first=True)
        self.decoder = nn.LSTM(embed, hidden, layers, batch_first=True)
        self.out = nn.Linear(hidden, 256)

    def forward(self, prev: torch.Tensor, inputs: torch.Tensor, target: torch.Tensor):
        _, state = self.encoder(self.embed(prev))
        h, _ = self.decoder(self.embed(inputs), state)
        return nn.functional.cross_entropy(self.out(h).flatten(0, 1), target.flatten())


class StepTimes(pl.Callback):
    def __init__(self, device: torch.device) -> None:
        self.device, self.ends = device, []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        _sync(self.device)
        self.ends.append(time.perf_counter())


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _batches(n: int, args: argparse.Namespace) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Smooth random audio (noise through a one-pole low-pass), like real audio in range."""
    gen = torch.Generator().manual_seed(0)
    out = []
    for _ in range(n):
        x = torch.randn(args.batch, args.prev + args.next, generator=gen) * 0.3
        x = torch.cumsum(x, dim=1) * 0.05
        x = (x - x.mean(dim=1, keepdim=True)).clamp(-1, 1)
        out.append((x[:, : args.prev].contiguous(), x[:, args.prev :].contiguous()))
    return out


def time_bare(args, batches, device) -> list[float]:
    torch.manual_seed(0)
    model = BareSeq2Seq(args.hidden, args.layers, args.embed).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3)
    times = []
    for prev, nxt in batches:
        _sync(device)
        t0 = time.perf_counter()
        prev_tok, next_tok = quantize(prev).to(device), quantize(nxt).to(device)
        inputs = torch.cat([prev_tok[:, -1:], next_tok[:, :-1]], dim=1)
        loss = model(prev_tok, inputs, next_tok)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        _sync(device)
        times.append(time.perf_counter() - t0)
    return times[args.warmup :]


def _module(args, device) -> Seq2SeqModule:
    torch.manual_seed(0)
    kwargs = {**args.model, "hidden": args.hidden, "layers": args.layers, "embed_dim": args.embed}
    return Seq2SeqModule(**kwargs).to(device)


def time_module_loop(args, batches, device) -> list[float]:
    model = _module(args, device)
    opt = model.configure_optimizers()["optimizer"]
    times = []
    for prev, nxt in batches:
        _sync(device)
        t0 = time.perf_counter()
        loss = model.training_step((prev.to(device), nxt.to(device)), 0)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        _sync(device)
        times.append(time.perf_counter() - t0)
    return times[args.warmup :]


def time_module_trainer(args, batches, device) -> list[float]:
    model = _module(args, device)
    timer = StepTimes(device)
    trainer = pl.Trainer(
        max_steps=len(batches),
        accelerator=device.type,
        devices=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        limit_val_batches=0,
        gradient_clip_val=args.clip,
        callbacks=[timer],
    )
    # a list of ready batches is a valid map-style dataset; batch_size=None passes them through
    trainer.fit(model, torch.utils.data.DataLoader(batches, batch_size=None))
    deltas = [b - a for a, b in zip(timer.ends, timer.ends[1:], strict=False)]
    return deltas[max(args.warmup - 1, 0) :]


def main() -> None:
    cfg = OmegaConf.create(
        {"data": OmegaConf.load(CONF / "data" / "default.yaml"), "paths": {"data_dir": "."}}
    )
    cfg.model = OmegaConf.load(CONF / "model" / "seq2seq.yaml")
    model_cfg = OmegaConf.to_container(cfg.model, resolve=True)
    model_cfg.pop("_target_")
    sr = cfg.data.sr
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=4, help="timed steps per variant and round")
    parser.add_argument("--warmup", type=int, default=1, help="untimed steps per variant and round")
    parser.add_argument("--rounds", type=int, default=2, help="rounds of bare, loop, trainer")
    parser.add_argument("--batch", type=int, default=cfg.data.batch_size)
    parser.add_argument("--prev", type=int, default=Seq2SeqModule(**model_cfg).context_len)
    parser.add_argument("--next", type=int, default=Seq2SeqModule(**model_cfg).chunk_len)
    parser.add_argument("--hidden", type=int, default=model_cfg["hidden"])
    parser.add_argument("--layers", type=int, default=model_cfg["layers"])
    parser.add_argument("--embed", type=int, default=model_cfg["embed_dim"])
    parser.add_argument("--clip", type=float, default=None, help="trainer gradient_clip_val")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    args.model = {**model_cfg, "prev_len_max": args.prev, "next_len": args.next, "sr": sr}
    device = torch.device(args.device)
    warnings.filterwarnings("ignore", ".*does not have many workers.*")
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    warnings.filterwarnings("ignore", ".*self.trainer` reference is not registered.*")
    warnings.filterwarnings("ignore", ".*no `val_dataloader`.*")

    batches = _batches(args.warmup + args.steps, args)
    samples = args.batch * args.next
    print(
        f"device={device} threads={torch.get_num_threads()} batch={args.batch} "
        f"prev={args.prev} next={args.next} hidden={args.hidden} layers={args.layers} "
        f"embed={args.embed} head=mulaw rounds={args.rounds} x {args.steps} steps "
        f"(+{args.warmup} warm-up)"
    )
    times = {"bare": [], "loop": [], "trainer": []}
    for _ in range(args.rounds):  # alternate, so load from elsewhere hits every variant alike
        times["bare"] += time_bare(args, batches, device)
        times["loop"] += time_module_loop(args, batches, device)
        times["trainer"] += time_module_trainer(args, batches, device)
    base = statistics.median(times["bare"])
    print(f"{'variant':<34}{'s/step':>9}{'samples/s':>12}{'ratio':>8}")
    rows = [
        ("bare torch (baseline)", "bare"),
        ("Seq2SeqModule.training_step loop", "loop"),
        ("Seq2SeqModule under pl.Trainer", "trainer"),
    ]
    for name, key in rows:
        seconds = statistics.median(times[key])
        print(f"{name:<34}{seconds:>9.4f}{samples / seconds:>12.0f}{base / seconds:>8.2f}")
    spread = {k: f"{min(v):.4f}-{max(v):.4f}" for k, v in times.items()}
    print(f"(medians of {len(times['bare'])} steps each; min-max s/step: {spread})")


if __name__ == "__main__":
    main()

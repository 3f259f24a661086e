"""Long-form generation: a finite read of a `Stream` (see `stream.py`), with a progress bar.

Every model family continues audio the same way: block after block of `module.chunk_len`
samples, each continuing the last `module.context_len` samples of prime + generated audio
(`carry="window"`), or running the decoder state on (`carry="state"`). One-pass models (the
GAN) blend block seams with a crossfade.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import torch
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from lofibeats.errors import ConfigError
from lofibeats.generation.stream import Stream
from lofibeats.models.sampling import DEFAULT_SAMPLING, Sampling

if TYPE_CHECKING:
    from lofibeats.models.base import LofiModule


def generate_long(
    module: LofiModule,
    prime: torch.Tensor | None,
    n_samples: int,
    *,
    sampling: Sampling = DEFAULT_SAMPLING,
    seed: int = 0,
    progress: bool = False,
    crossfade: int | None = None,
    fade: str = "equal_power",
    batch_size: int = 1,
    engine: str = "auto",
    carry: str = "window",
    **options: Any,
) -> torch.Tensor:
    """Continue `prime` ([B, T] floats in [-1, 1]) by `n_samples`; return [B, n_samples].

    `prime=None` starts `batch_size` rows (an empty [B, 0] prime: B rows) from
    `module.context_len` samples of near-silence (see `silence_prime`); the prime itself is not
    part of the result. The same `seed` gives the same audio. `crossfade` (samples, less than
    `chunk_len`; None = the module's `default_crossfade`) > 0 blends block seams with `fade`.
    `progress` shows a bar with samples generated per row and the real-time factor (seconds of
    one row's audio per wall-clock second). `engine` picks the decoding backend (see
    `lofibeats.generation.engine`: "reference", "fused" or "auto"); `sampling` holds the
    decoding knobs; `carry` how blocks connect; family `options` (vseq2seq: `z`, `creativity`)
    go to the model.
    """
    if n_samples < 1:
        raise ConfigError(f"n_samples={n_samples}: generate at least one sample")
    stream = Stream(
        module,
        prime,
        sampling=sampling,
        seed=seed,
        engine=engine,
        crossfade=crossfade,
        fade=fade,
        batch_size=batch_size,
        carry=carry,
        **options,
    )
    if not progress:
        return stream.read(n_samples)
    bar = _Bar(n_samples, module.sample_rate, stream.batch)
    pieces = []
    try:
        for start in range(0, n_samples, module.chunk_len):
            pieces.append(stream.read(min(module.chunk_len, n_samples - start)))
            bar.advance(pieces[-1].shape[1])
    finally:
        bar.stop()
    return torch.cat(pieces, dim=1)


class _Bar:
    """A rich progress bar: samples generated (per row) and the real-time factor."""

    def __init__(self, total: int, sr: int, rows: int):
        self.sr = sr
        self.started = time.perf_counter()
        self.progress = Progress(
            TextColumn(f"generating {rows} x {total / sr:.1f} s"),
            BarColumn(),
            TextColumn("{task.completed}/{task.total} samples"),
            TextColumn("RTF {task.fields[rtf]:.2f}x"),
            TimeElapsedColumn(),
        )
        self.task = self.progress.add_task("generate", total=total, rtf=0.0)
        self.progress.start()

    def advance(self, samples: int) -> None:
        done = self.progress.tasks[0].completed + samples
        elapsed = max(time.perf_counter() - self.started, 1e-9)
        self.progress.update(self.task, completed=done, rtf=done / self.sr / elapsed)

    def stop(self) -> None:
        self.progress.stop()

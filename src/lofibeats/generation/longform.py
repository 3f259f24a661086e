"""Long-form generation: continue a prime chunk by chunk, each chunk primed by what came before.

Every model family continues audio the same way (`lofibeats.generation.engine.Continuation`): one
call turns a `prev` window into `module.chunk_len` new samples. `generate_long` repeats that, feeding the
last `module.context_len` samples of prime + generated audio as the next `prev`, until the
requested length is reached.

Non-autoregressive models (the GAN) can leave seams between chunks. With `crossfade=c > 0` every
call still asks for one native chunk of `chunk_len` samples (one generator pass: asking for more
would start a second pass, whose seam the fade could not hide), keeps the first `chunk_len - c`
and holds the last `c` as a tail. The next call, conditioned on the kept audio, guesses the same
`c` positions again; its head and the tail are blended with an equal-power or linear fade, so
the audio moves from one pass to the next without a jump.
"""

from __future__ import annotations

import math
import time
from typing import TYPE_CHECKING, Any

import torch
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from lofibeats.errors import ConfigError
from lofibeats.generation.engine import Continuation
from lofibeats.models.sampling import Sampling

if TYPE_CHECKING:
    from lofibeats.models.base import LofiModule

FADES = ("equal_power", "linear")
SILENCE_NOISE_STD = 1e-3  # the "no prime" start: -60 dBFS noise, so the model sees a live signal


def fade_curves(length: int, fade: str = "equal_power") -> tuple[torch.Tensor, torch.Tensor]:
    """(fade_out, fade_in) of `length` samples.

    "equal_power" (cos/sin, constant power for uncorrelated signals: what two sampled guesses
    are) or "linear" (constant amplitude for correlated signals).
    """
    t = (torch.arange(length, dtype=torch.float32) + 0.5) / length
    if fade == "equal_power":
        return torch.cos(t * math.pi / 2), torch.sin(t * math.pi / 2)
    if fade == "linear":
        return 1.0 - t, t
    raise ConfigError(f"options.fade={fade!r}: use one of {', '.join(FADES)}")


def silence_prime(
    batch: int, length: int, generator: torch.Generator, device: torch.device
) -> torch.Tensor:
    """The start when there is no prime: `length` samples of near-silence (-60 dBFS noise).

    Pure zeros would put the model in a state it never saw in training; a whisper of noise keeps
    it on real-audio statistics without audibly colouring the start.
    """
    noise = torch.randn(batch, length, generator=generator, device=device)
    return noise * SILENCE_NOISE_STD


def generate_long(
    module: LofiModule,
    prime: torch.Tensor | None,
    n_samples: int,
    *,
    sampling: Sampling = Sampling(),
    seed: int = 0,
    progress: bool = False,
    crossfade: int | None = None,
    fade: str = "equal_power",
    batch_size: int = 1,
    engine: str = "auto",
    **options: Any,
) -> torch.Tensor:
    """Continue `prime` ([B, T] floats in [-1, 1]) by `n_samples`; return [B, n_samples].

    `prime=None` starts `batch_size` rows (an empty [B, 0] prime: B rows) from
    `module.context_len` samples of near-silence (see `silence_prime`); the prime itself is not
    part of the result. The same `seed` gives the same audio. `crossfade` (samples, less than
    `chunk_len`; None = the module's `default_crossfade`, else 0) > 0 blends chunk overlaps with `fade` (see the module doc); each call of
    `continue_audio` asks for at most `chunk_len` samples.
    `progress` shows a bar with samples generated per row and the real-time factor (seconds of
    one row's audio per wall-clock second). `engine` picks the decoding backend (see
    `lofibeats.generation.engine`: "reference", "fused" or "auto"); `sampling` holds the
    decoding knobs; family `options` (vseq2seq: `z`, `creativity`) go to every chunk.
    """
    if n_samples < 1:
        raise ConfigError(f"n_samples={n_samples}: generate at least one sample")
    chunk_len, context_len = int(module.chunk_len), int(module.context_len)
    if crossfade is None:
        crossfade = int(getattr(module, "default_crossfade", 0))
    if not 0 <= crossfade < chunk_len:
        raise ConfigError(
            f"options.crossfade={crossfade}: use 0 to {chunk_len - 1} samples "
            f"(less than the model's chunk length)"
        )
    step = chunk_len - crossfade  # new samples kept per call

    if prime is not None and prime.ndim != 2:
        raise ValueError(f"prime must be [batch, samples], got shape {tuple(prime.shape)}")
    device = module.device
    fade_out, fade_in = (
        (c.to(device) for c in fade_curves(crossfade, fade)) if crossfade else (None, None)
    )
    generator = torch.Generator(device=device).manual_seed(seed)
    if prime is None or prime.shape[1] == 0:
        rows = batch_size if prime is None else prime.shape[0]
        prime = silence_prime(rows, context_len, generator, device)
    prime = prime.to(device=device, dtype=torch.float32)

    continue_audio = Continuation(module, engine)
    was_training = module.training
    module.eval()
    bar = _Bar(n_samples, module.sample_rate, prime.shape[0]) if progress else None
    try:
        with torch.inference_mode():
            history = prime[:, -context_len:]
            pieces: list[torch.Tensor] = []
            tail: torch.Tensor | None = None
            produced = 0
            while produced < n_samples:
                remaining = n_samples - produced
                last = remaining <= chunk_len  # no tail needed: ask only for what is missing
                want = remaining if last else chunk_len
                new = continue_audio(
                    history, want, sampling=sampling, generator=generator, **options
                )
                if tail is not None:
                    head = tail * fade_out + new[:, :crossfade] * fade_in
                    new = torch.cat([head, new[:, crossfade:]], dim=1)
                keep = want if last else step
                piece, tail = new[:, :keep], (new[:, keep:] if crossfade else None)
                pieces.append(piece)
                produced += piece.shape[1]
                history = torch.cat([history, piece], dim=1)[:, -context_len:]
                if bar is not None:
                    bar.advance(piece.shape[1])
    finally:
        module.train(was_training)
        if bar is not None:
            bar.stop()
    return torch.cat(pieces, dim=1).clamp_(-1.0, 1.0)


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

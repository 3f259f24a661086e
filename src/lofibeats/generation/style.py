"""Creativity and style change for vseq2seq generation: a z trajectory over the continuation.

A take is generated with one latent z (inferred from the prime: mu + creativity * sigma * eps,
or creativity * N(0, I) without a prime), which can move to other z's part-way through:

    style_change_at=[5, 10] style_target=[a.wav, random] style_blend=1

From continuation sample `at` (seconds after the prime ends, times the rate) z moves linearly
from wherever it is to the target over `blend` samples and then stays there; a target is a clip's
posterior mean z (`clip_latent`) or a prior sample ("random", one per take). Changes compose in
time order, so overlapping blends stay continuous.

`generate_long` chains chunks and calls the model without saying where a chunk starts, so the
trajectory is handed over as a :class:`StylePath`: each `continue_audio` call takes the z of its
next `n` samples and the path moves past them (one generate_long run per path; a crossfade,
which re-generates overlapping samples, would put it out of step). Every z of the path before a
change point equals the base z exactly, and the base z and the random targets come from their
own generator, so the audio before the first change is identical to a run without changes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from lofibeats.errors import ConfigError, DataError
from lofibeats.generation.prime import pad_to_context, read_prime
from lofibeats.models.latent import standard_normal
from lofibeats.models.vseq2seq_net import DEFAULT_CREATIVITY
from lofibeats.validate import number

if TYPE_CHECKING:
    from lofibeats.models.vseq2seq import VSeq2SeqModule

# the latent generator's seed is `seed + LATENT_SEED_OFFSET`, so its normal draws are not the
# same random stream as generate_long's sampling uniforms (seeded with `seed`)
LATENT_SEED_OFFSET = 7919
CLIP_WINDOWS = 16  # a target clip's z: the mean posterior mean over this many windows at most


@dataclass(frozen=True)
class StyleChange:
    """From continuation sample `at`, move z to `target` ([B, D]) over `blend` samples."""

    at: int
    target: torch.Tensor
    blend: int = 0


def z_trajectory(
    base: torch.Tensor, changes: Sequence[StyleChange], start: int, length: int
) -> torch.Tensor:
    """z of continuation samples start .. start + length - 1, [B, length, D].

    z starts at `base` ([B, D]); each change (in time order) interpolates from the current z
    toward its target with weight clamp((p - at + 1) / blend, 0, 1) at sample p: 0 before `at`
    (so z is exactly what it was), the target from `at + blend - 1` on (at once if blend is 0).
    """
    z = base[:, None, :].expand(-1, length, -1)
    positions = torch.arange(start, start + length, dtype=torch.float64, device=base.device)
    for change in sorted(changes, key=lambda c: c.at):
        weight = ((positions - change.at + 1) / max(change.blend, 1)).clamp(0.0, 1.0)
        if not weight.any():
            continue
        target = change.target.to(z)[:, None, :]
        z = torch.lerp(z, target.expand_as(z), weight.to(z.dtype)[None, :, None])
    return z


@dataclass
class LatentSource:
    """Where a take's z comes from: z = mu + creativity * sigma * eps, with the prime's
    posterior (mu, sigma), or the prior (mu = 0, sigma = 1) without a prime. `eps` is drawn once
    per take (lazily: creativity 0 needs none), so creativity can change and z moves along the
    same direction."""

    mu: torch.Tensor
    sigma: torch.Tensor
    generator: torch.Generator
    eps: torch.Tensor | None = None

    def z(self, creativity: float) -> torch.Tensor:
        """[B, D]: the posterior mean at creativity 0 (no draw), else mu + c * sigma * eps."""
        creativity = number(creativity, "creativity", low=0.0)
        if creativity == 0:
            return self.mu
        if self.eps is None:
            self.eps = standard_normal(self.mu.shape, self.mu.device, self.generator)
        return self.mu + creativity * self.sigma * self.eps


class StylePath:
    """The z trajectory of one take (a `LatentPath`): `take(n)` gives the z of its next `n`
    samples. Changes can be added while it is read (`change_to`: the live knobs)."""

    def __init__(
        self,
        base: torch.Tensor,
        changes: Sequence[StyleChange] = (),
        source: LatentSource | None = None,
    ) -> None:
        self.base, self.source = base, source
        self.changes = sorted(changes, key=lambda c: c.at)
        self.position = 0

    def take(self, n: int) -> torch.Tensor:
        """The z of the next `n` continuation samples, [B, n, D]; moves past them."""
        z = z_trajectory(self.base, self.changes, self.position, n)
        self.position += n
        return z

    def change_to(self, target: torch.Tensor, blend: int = 0) -> None:
        """From the next sample taken, glide from the current z to `target` ([B, D] or [D])
        over `blend` samples; changes planned for later are replaced by this one."""
        target = target.expand(self.base.shape[0], -1) if target.dim() == 1 else target
        at = self.position
        self.changes = [c for c in self.changes if c.at < at] + [StyleChange(at, target, blend)]

    def set_creativity(self, creativity: float, blend: int = 0) -> None:
        """Move z to mu + creativity * sigma * eps of the take's own source (see `change_to`)."""
        if self.source is None:
            raise ConfigError("creativity: this take's z was given directly, not inferred")
        self.change_to(self.source.z(creativity), blend)


def latent_source(
    module: VSeq2SeqModule, prime: torch.Tensor | None, batch: int, generator: torch.Generator
) -> LatentSource:
    """The prime's posterior (its last `context_len` samples), or the prior for `batch` rows
    without a prime (None or T = 0); eps will come from `generator`."""
    net = module.net
    device = next(net.parameters()).device
    if prime is None or prime.shape[1] == 0:
        rows = batch if prime is None else prime.shape[0]
        shape = (rows, module.config.latent_dim)
        # the prior always draws eps (at any creativity), as the takes of earlier versions did
        eps = standard_normal(shape, device, generator)
        return LatentSource(
            torch.zeros(shape, device=device), torch.ones(shape, device=device), generator, eps
        )
    prime = prime[:, -module.context_len :].to(device, torch.float32)
    with torch.no_grad():
        mu, logvar = net.posterior(net.head.tokens(prime))
    return LatentSource(mu, torch.exp(0.5 * logvar), generator)


@torch.no_grad()
def clip_latent(module: VSeq2SeqModule, path: Path) -> torch.Tensor:
    """The posterior mean z [D] of audio file `path`: the mean of mu over up to `CLIP_WINDOWS`
    evenly spread windows of the model's context length (a shorter clip: one padded window)."""
    try:
        audio, _ = read_prime(path, module.sample_rate)
    except DataError:
        raise DataError(
            f"style_target={path}: not a readable, non-empty audio file: give a wav, flac or ogg file"
        ) from None
    audio = torch.from_numpy(pad_to_context(audio, module.context_len))
    width = module.context_len
    starts = torch.linspace(0, audio.shape[0] - width, CLIP_WINDOWS).round().long().unique()
    windows = torch.stack([audio[s : s + width] for s in starts.tolist()])
    return module.net.latent_from_audio(windows, creativity=0.0).mean(dim=0)


def _as_list(value: Any) -> list[Any]:
    if value is None:
        return []
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence):
        return [value]
    return list(value)


def _target_file(name: Any) -> Path:
    path = Path(str(name)).expanduser()
    if not path.is_file():
        raise DataError(
            f"style_target={name}: no such file: give an audio file (its z is the target) or random"
        )
    return path


def _seconds(value: Any, key: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
        raise ConfigError(f"{key}={value!r}: give a time in seconds >= 0 (or a list of them)")
    return float(value)


def style_changes(
    module: VSeq2SeqModule,
    change_at: Any,
    target: Any,
    blend: Any,
    *,
    batch: int,
    n_samples: int,
    generator: torch.Generator,
) -> list[StyleChange]:
    """StyleChanges from the config values `style_change_at` (seconds after the prime, one or
    a list), `style_target` (a wav path or "random", one per change) and `style_blend`
    (seconds, one for all or one per change). Random targets are drawn from `generator`."""
    times = [_seconds(t, "style_change_at") for t in _as_list(change_at)]
    targets = _as_list(target)
    if not times:
        if targets:
            raise ConfigError("style_target is set but style_change_at is not: give both")
        return []
    if not module.config.z_every_step:
        raise ConfigError(
            "style_change_at: this checkpoint was trained with model.z_every_step=false, so z "
            "cannot change mid-audio; train with model.z_every_step=true"
        )
    if len(targets) != len(times):
        raise ConfigError(
            f"style_target: give one target (a wav path or random) per style_change_at time "
            f"({len(times)}), got {len(targets)}"
        )
    blends = [_seconds(b, "style_blend") for b in _as_list(0 if blend is None else blend)]
    if len(blends) == 1:
        blends *= len(times)
    if len(blends) != len(times):
        raise ConfigError(
            f"style_blend: give one blend time for all changes or one per change ({len(times)})"
        )
    sr, end = module.sample_rate, n_samples / module.sample_rate
    changes = []
    for at, name, span in sorted(zip(times, targets, blends, strict=True), key=lambda c: c[0]):
        if round(at * sr) >= n_samples:
            raise ConfigError(
                f"style_change_at={at:g}: past the end of the continuation ({end:g} s): "
                f"use an earlier time or more seconds"
            )
        if str(name) == "random":
            dim = module.config.latent_dim
            z = torch.randn(batch, dim, generator=generator).to(module.device)
        else:
            z = clip_latent(module, _target_file(name)).expand(batch, -1)
        changes.append(StyleChange(round(at * sr), z, round(span * sr)))
    return changes


def style_path(
    module: VSeq2SeqModule,
    prime: torch.Tensor | None,
    *,
    batch: int,
    n_samples: int,
    seed: int = 0,
    creativity: float | None = None,
    change_at: Any = None,
    target: Any = None,
    blend: Any = None,
) -> StylePath:
    """The StylePath of a generation of `n_samples` per take, for `batch` takes continuing
    `prime` ([B, T] or None): the base z from the prime (mu + creativity * sigma * eps; no
    prime: creativity * N(0, I)), then the style changes. `creativity` None = the model's
    default (`DEFAULT_CREATIVITY`: a posterior sample). Same `seed`, same path; the base z does
    not depend on the changes."""
    creativity = DEFAULT_CREATIVITY if creativity is None else creativity
    generator = torch.Generator().manual_seed(seed + LATENT_SEED_OFFSET)
    source = latent_source(module, prime, batch, generator)
    base = source.z(creativity)
    changes = style_changes(
        module,
        change_at,
        target,
        blend,
        batch=base.shape[0],
        n_samples=n_samples,
        generator=generator,
    )
    return StylePath(base, changes, source)

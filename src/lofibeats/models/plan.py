"""The plan family's training recipe: a beat plan of frame codes and what plays it, from one batch.

Batches are `(prev, next)` windows as for every family; `prev` must hold the plan's reach (4 beats
of the longest period: `data.prev_len_min` = `data.prev_len_max` = 4 s, which `model=plan` sets).
The steps train `PlanNet` (`lofibeats.models.plan_net`):

- **Codebook and grains.** The first steps collect the windows' audio and log-mel frames; once
  `codebook_frames` are in, k-means fits the codebook and (`render="grains"`) the grain bank
  keeps `grains` of those windows' grains per code (both seeded; under DDP rank 0's are
  broadcast); both stay fixed. Until then only a sample renderer trains, if there is one.
- **Plan.** Every frame of `next` (but the last AHEAD, whose frames see the window's edge) is a
  target: its code given the codes `near` frames and 1..`beats` periods back, the period
  measured on `prev` as generation measures it on the prime. Windows whose `prev` is mostly
  silence are left out. Cross-entropy in nats/frame.
- **Sample renderer** (`render="samples"` only). `render_rows` windows, `render_len` samples
  each at a random frame of `next`, given their real log-mel frames (teacher forcing:
  generation gives it the plan's centroids), under a random gain (-6 to +2.6 dB) and polarity,
  so it renders any loudness of either sign.

`val/loss` is the plan's nats/frame with grains; with the sample renderer, bits/sample of the
audio: the renderer's plus the plan's nats per frame spread over its `hop` samples.
"""

from __future__ import annotations

import math
import warnings
from typing import Any, ClassVar

import torch
from torch.nn import functional as F

from lofibeats.errors import ConfigError
from lofibeats.models.base import LofiModule
from lofibeats.models.configs import PlanConfig, period_frames
from lofibeats.models.plan_net import AHEAD, AUDIBLE, PlanNet

GAIN_LOG_RANGE = (-0.7, 0.3)  # the renderer's random gain, natural log (-6.1 to +2.6 dB)


class PlanModule(LofiModule):
    """Trains `PlanNet`: every argument is a plain config value (conf/model/plan.yaml, checked
    by `PlanConfig`)."""

    config_class: ClassVar[type[PlanConfig]] = PlanConfig
    config: PlanConfig
    #: the plan's held-out loss is lowest a few hundred steps in, where it replays the prime
    #: (README, "Plan, then render"): its budget ends later, and the last step is what plays
    generates_from: ClassVar[str] = "last"

    def __init__(self, **model_config: Any) -> None:
        super().__init__(**model_config)
        c = self.config
        shortest, longest = period_frames(c.period_min, c.period_max, c.hop)
        self.net = PlanNet(
            sr=c.sr,
            hop=c.hop,
            n_mels=c.n_mels,
            codes=c.codes,
            near=c.near,
            beats=c.beats,
            period_min=shortest,
            period_max=longest,
            plan_width=c.plan_width,
            plan_hidden=c.hidden,
            plan_layers=c.layers,
            plan_dropout=c.plan_dropout,
            render=c.render,
            render_hidden=c.render_hidden,
            render_past=c.render_past,
            grains=c.grains,
            grain_memory=c.grain_memory,
            grain_shift=c.grain_shift,
        )
        # (audio, frames) of the first batches, for the codebook and grains, until fitted
        self._collected: list[tuple[torch.Tensor, torch.Tensor]] = []

    # ----------------------------------------------------------------- pieces
    def _window(self, prev: torch.Tensor, nxt: torch.Tensor) -> tuple[torch.Tensor, int]:
        """[prev | next] with prev cropped to whole frames, and where next starts."""
        hop = self.config.hop
        reach = self.net.reach * hop
        if prev.shape[1] < reach:
            raise ConfigError(
                f"a batch's prev holds {prev.shape[1]} samples; the plan reads {reach} back: set "
                f"data.prev_len_min to data.prev_len_max ({self.config.prev_len_max})"
            )
        prev = prev[:, prev.shape[1] % hop :]
        return torch.cat([prev, nxt], 1), prev.shape[1]

    def _plan_nats(self, frames: torch.Tensor, first_frame: int) -> torch.Tensor | None:
        """Mean cross-entropy of the codes of next's frames; None if no window is audible."""
        net = self.net
        audible = frames[:, :first_frame].mean((1, 2)) >= AUDIBLE
        if not audible.any():
            return None
        frames = frames[audible]
        codes = net.codebook.encode(frames)
        period = net.periods(frames[:, :first_frame])
        targets = torch.arange(first_frame, frames.shape[1] - AHEAD, device=frames.device)
        inputs = net.plan_inputs(codes, period, targets)
        logits = net.plan(inputs.flatten(0, 1))
        return F.cross_entropy(logits, codes[:, targets].flatten())

    def _retimed(self, frames: torch.Tensor, first_frame: int) -> tuple[torch.Tensor, int]:
        """`frames` (B, F, n_mels) at a random tempo, up to `tempo_stretch` times faster or
        slower (log-uniform), and where next starts in them. Frame k of the result, counted from
        next's first, is frame trunc(k * rate) of the input: the plan cannot memorise a track's
        tempo and has to find the beat in the period it is told. Never faster than leaves the
        plan's reach of prev."""
        stretch = self.config.tempo_stretch
        fastest = min(stretch, first_frame / self.net.reach)
        if stretch == 1.0 or fastest <= 1.0 / stretch:
            return frames, first_frame
        log_rate = torch.empty(()).uniform_(-math.log(stretch), math.log(fastest))
        rate = float(log_rate.exp())
        before = int(first_frame / rate)
        after = int((frames.shape[1] - first_frame - 1) / rate) + 1
        steps = torch.arange(-before, after, device=frames.device)
        return frames[:, first_frame + (steps * rate).long()], before

    def _render_nats(
        self, audio: torch.Tensor, frames: torch.Tensor, first: int, offset: int
    ) -> torch.Tensor:
        """The renderer's cross-entropy over `render_len` samples from `first + offset`, given
        the audio's log-mel `frames`."""
        hop, length = self.config.hop, self.config.render_len
        start = first + offset
        lo, hi = start // hop - AHEAD, (start + length) // hop + AHEAD
        return self.net.renderer.loss(audio[:, : start + length], frames[:, lo:hi], start)

    def _collect(self, audio: torch.Tensor, frames: torch.Tensor) -> None:
        """Keep a batch's audio and frames; once `codebook_frames` are in, fit the codebook on
        them (and fill the grain bank from their audio)."""
        self._collected.append((audio.detach().float().cpu(), frames.detach().float().cpu()))
        have = sum(f.shape[0] * f.shape[1] for _, f in self._collected)
        if have < self.config.codebook_frames:
            return
        net = self.net
        audio, frames = zip(*self._collected, strict=True)
        net.fit_codes(list(audio), list(frames), self.config.codebook_frames)
        self._collected = []
        if self._trainer is not None and self.trainer.world_size > 1:
            for buffer in (net.codebook.centroids, *(net.grains.buffers() if net.grains else ())):
                buffer.copy_(self.trainer.strategy.broadcast(buffer, src=0))

    # ---------------------------------------------------------------- training
    def on_fit_start(self) -> None:
        # with grains, the batches that fill the codebook have nothing to train: their step
        # returns None (Lightning skips it), which is on purpose
        warnings.filterwarnings("ignore", message=r".*`training_step` returned `None`")

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int):
        prev, nxt = batch
        audio, first = self._window(prev, nxt)
        mel = self.net.frames
        power = mel.power(audio)
        plan = None
        if self.net.codebook.fitted:
            plan = self._plan_nats(*self._retimed(mel.scaled(power), first // self.config.hop))
        else:
            self._collect(audio, mel.scaled(power))
        if self.net.renderer is None:  # grains play the plan: only the plan trains
            if plan is not None:
                self.log("train/loss", plan, prog_bar=True)
                self.log("train/plan_nats", plan)
            return plan
        render = self._gained_render_nats(audio, power, first, nxt.shape[1])
        loss = render if plan is None else render + plan
        self.log("train/loss", loss, prog_bar=True)
        self.log("train/render_bits", render / math.log(2))
        if plan is not None:
            self.log("train/plan_nats", plan)
        return loss

    def _gained_render_nats(
        self, audio: torch.Tensor, power: torch.Tensor, first: int, next_len: int
    ) -> torch.Tensor:
        """The sample renderer's loss on `render_rows` windows under a random gain and polarity,
        from a random frame of next; `power` is the windows' mel power."""
        rows = len(audio[: self.config.render_rows])
        gain = torch.empty(rows, 1, device=audio.device).uniform_(*GAIN_LOG_RANGE).exp()
        sign = torch.randint(0, 2, (rows, 1), device=audio.device) * 2 - 1
        spare = (next_len - self.config.render_len) // self.config.hop - AHEAD
        offset = int(torch.randint(0, spare + 1, ())) * self.config.hop
        louder = (audio[:rows] * gain * sign).clamp(-1.0, 1.0)
        frames = self.net.frames.scaled(power[:rows] * gain[:, :, None] ** 2)
        return self._render_nats(louder, frames, first, offset)

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        prev, nxt = batch
        audio, first = self._window(prev, nxt)
        frames = self.net.frames(audio)
        plan = None
        if self.net.codebook.fitted:
            plan = self._plan_nats(frames, first // self.config.hop)
        plan_nats = math.log(self.config.codes) if plan is None else plan
        if plan is not None:
            self.log("val/plan_nats", plan, sync_dist=True)
        if self.net.renderer is None:
            self.log("val/loss", plan_nats, prog_bar=True, sync_dist=True)
            return
        rows = self.config.render_rows
        render = self._render_nats(audio[:rows], frames[:rows], first, 0) / math.log(2)
        bits = render + plan_nats / (self.config.hop * math.log(2))
        self.log("val/loss", bits, prog_bar=True, sync_dist=True)
        self.log("val/bits_per_sample", bits, sync_dist=True)
        self.log("val/render_bits", render, sync_dist=True)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.AdamW(
            self.parameters(), lr=self.config.lr, weight_decay=self.config.weight_decay
        )

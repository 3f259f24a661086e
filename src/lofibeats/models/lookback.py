"""Lookback: a frame decoder recalls what followed the moments of its past that sound like now.

Music repeats itself: the beat every bar, a bass line every few bars, a chord for seconds. An
LSTM's state forgets that within milliseconds of raw audio at the budgets this project trains
on (the NLL given 4 s of past was no better than given 64 ms), so the decoder is given a
path to the past it cannot lose: at every frame it describes the last few tens of
milliseconds (`describe`: a coarse part, a learned per-frame projection, rectified, averaged
over `DESCRIPTOR_SAMPLES`, log-compressed and normalised, which follows energy and spectrum
and finds the place in the bar; and a fine part, the last `SHAPE_SAMPLES` of waveform scaled to
unit RMS, which finds the phase there, so recalled samples line up), compares that description with the description of every moment between
`lookback_min` and `lookback` ago, and reads, softmax-weighted by the similarity, the samples
that *followed* those moments (`RECALL_SAMPLES`, starting with the frame being predicted).
A "no match" slot with a learned score lets it recall nothing; the weighted mean similarity
of what it recalled is the recall's confidence (about 1 in a loop, 0 in noise), read with the
recalled samples. The frame LSTM reads the recall with its
input and the sample tier with the frame's output (`Seq2SeqNet.decode`), so a continuation can
carry the prime's beat and harmonics on: each generated frame becomes the "now" that the next
frame's description matches against the past.

Training computes the recall of every decoder frame in parallel over the teacher-forced
stream (`Lookback.recall`); generation keeps the past frames and their descriptions in a
`LookbackReader` and adds one frame at a time, with the same values (tested).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

DESCRIPTOR_SAMPLES = 512  # what the coarse part of a description covers (32 ms at 16 kHz)
SHAPE_SAMPLES = 64  # the waveform the fine part holds
RECALL_SAMPLES = 32  # samples recalled after a matched moment: the predicted frame onwards
_LOG_FLOOR = 1e-3
_SHARPNESS = 20.0  # initial softmax gain on the cosine-like similarity in [-1, 1]
_COPY_WIDTH = 0.02  # initial width of the copy bump, in class values (2 / 255 per class)


class Lookback(nn.Module):
    """The lookback of a frame decoder with frames of `frame_size` samples: lags between
    `min_lag` and `max_lag` frames, descriptions of width `dim`."""

    def __init__(self, frame_size: int, dim: int, min_lag: int, max_lag: int) -> None:
        super().__init__()
        self.frame_size, self.dim = frame_size, dim
        self.window = max(1, DESCRIPTOR_SAMPLES // frame_size)  # frames one description covers
        self.ahead = max(1, RECALL_SAMPLES // frame_size)  # frames recalled after a match
        self.shape_frames = max(1, SHAPE_SAMPLES // frame_size)
        width = dim + self.shape_frames * frame_size
        if min_lag < self.ahead:
            raise ValueError(f"min_lag={min_lag} frames must reach past the recalled frames")
        self.min_lag, self.max_lag = min_lag, max_lag
        self.energy = nn.Linear(frame_size, dim)
        self.project = nn.Linear(width, width, bias=False)
        nn.init.eye_(self.project.weight)  # start as plain similarity of descriptions
        self.log_sharpness = nn.Parameter(torch.tensor(math.log(_SHARPNESS)))
        self.null_score = nn.Parameter(torch.zeros(()))

    @property
    def out_dim(self) -> int:
        """Width of a recall: the recalled samples and the confidence."""
        return self.ahead * self.frame_size + 1

    @property
    def history_frames(self) -> int:
        """Past frames a reader needs for exact descriptions at every lag it reads."""
        return self.max_lag + self.window

    # ----------------------------------------------------------------- descriptions
    def frame_energy(self, values: torch.Tensor) -> torch.Tensor:
        """Frames [.., k] of sample values -> rectified projections [.., dim]."""
        return self.energy(values).abs()

    def describe(self, mean_energy: torch.Tensor, shape: torch.Tensor) -> torch.Tensor:
        """Window-mean energies [.., dim] and the last waveform [.., shape_frames k] ->
        descriptions [.., width] (the keys and queries)."""
        coarse = F.layer_norm(torch.log(mean_energy + _LOG_FLOOR), (self.dim,))
        fine = shape * torch.rsqrt(shape.square().mean(-1, keepdim=True) + _LOG_FLOOR**2)
        return self.project(torch.cat([coarse, fine], dim=-1))

    def descriptions(self, values: torch.Tensor) -> torch.Tensor:
        """Frames [B, F, k] -> the description ending at each frame [B, F, width]; frames
        before the first count as silence."""
        energy = self.frame_energy(values).transpose(1, 2)  # [B, dim, F]
        padded = F.pad(energy, (self.window - 1, 0))
        mean = F.avg_pool1d(padded, self.window, stride=1).transpose(1, 2)
        frames, m = values.shape[1], self.shape_frames
        past = F.pad(values, (0, 0, m - 1, 0))
        shape = torch.cat([past[:, i : i + frames] for i in range(m)], dim=-1)
        return self.describe(mean, shape)

    # ----------------------------------------------------------------- reading
    def read(
        self,
        queries: torch.Tensor,
        keys: torch.Tensor,
        after: torch.Tensor,
        valid: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Softmax over the candidates' similarity (and the no-match slot) -> recall.

        queries [B, Q, D], keys [B, N, D], `after` [B, N, ahead k] (what followed each
        candidate), `valid` [Q, N] (the lags in range; None: all) -> [B, Q, out_dim]."""
        similarity = torch.matmul(queries, keys.transpose(1, 2)) / queries.shape[-1]
        scores = similarity * self.log_sharpness.exp()
        if valid is not None:
            scores = scores.masked_fill(~valid, float("-inf"))
        null = self.null_score.expand(*scores.shape[:2], 1)
        weights = torch.softmax(torch.cat([scores, null], dim=-1), dim=-1)[..., :-1]
        recalled = torch.matmul(weights, after)
        confidence = (weights * similarity).sum(-1, keepdim=True)
        return torch.cat([recalled, confidence], dim=-1)

    def following(self, values: torch.Tensor, count: int) -> torch.Tensor:
        """For candidates f = 0..count-1 of frames [B, F, k]: frames f+1 .. f+ahead, flattened
        [B, count, ahead k]."""
        return torch.cat([values[:, 1 + i : 1 + i + count] for i in range(self.ahead)], dim=-1)

    def recall(self, values: torch.Tensor, first: int) -> torch.Tensor:
        """Recalls of the decoder frames that predict frames first..F-1 of the teacher-forced
        stream `values` [B, F, k] (frame t reads the description ending at frame t - 1):
        [B, F - first, out_dim]. `first` >= 1."""
        frames = values.shape[1]
        keys = self.descriptions(values)
        count = max(0, frames - 1 - self.ahead)  # candidates whose following frames are known
        at = torch.arange(first - 1, frames - 1, device=values.device)
        lag = at[:, None] - torch.arange(count, device=values.device)[None]
        valid = (lag >= self.min_lag) & (lag <= self.max_lag)
        queries = keys[:, first - 1 : frames - 1]
        return self.read(queries, keys[:, :count], self.following(values, count), valid)

    def reader(self, history: torch.Tensor, frames: int) -> LookbackReader:
        """A reader over past frames `history` [B, H, k] (at least `history_frames` of them
        for the exact recall of training), room for `frames` more."""
        return LookbackReader(self, history, frames)


class LookbackReader:
    """One decode's lookback, frame by frame: `push` each new frame, `read` the recall of the
    frame after the last one pushed. Buffers are allocated once per decode."""

    def __init__(self, lookback: Lookback, history: torch.Tensor, frames: int) -> None:
        self.lookback = lookback
        batch, have, k = history.shape
        size = have + frames
        self.values = history.new_zeros(batch, size, k)
        self.values[:, :have] = history
        self.energy = history.new_zeros(batch, size, lookback.dim)
        self.energy[:, :have] = lookback.frame_energy(history)
        self.keys = history.new_zeros(batch, size, lookback.project.out_features)
        self.keys[:, :have] = lookback.descriptions(history)
        self.count = have

    def push(self, frame: torch.Tensor) -> None:
        """Append one frame of sample values [B, k]."""
        lookback, n = self.lookback, self.count
        self.values[:, n] = frame
        self.energy[:, n] = lookback.frame_energy(frame)
        window = self.energy[:, max(0, n - lookback.window + 1) : n + 1]
        shape = self.values[:, n - lookback.shape_frames + 1 : n + 1].flatten(1)
        self.keys[:, n] = lookback.describe(window.sum(dim=1) / lookback.window, shape)
        self.count = n + 1

    def read(self) -> torch.Tensor:
        """The recall [B, out_dim] of the frame after the last one pushed."""
        lookback, at = self.lookback, self.count - 1
        low = max(0, at - lookback.max_lag)
        high = at - lookback.min_lag + 1  # candidates low .. high - 1
        count = max(0, high - low)
        keys = self.keys[:, low : low + count]
        after = lookback.following(self.values[:, low:], count)
        return lookback.read(self.keys[:, at : at + 1], keys, after)[:, 0]


class CopyHead(nn.Module):
    """A pointer to the recall for the mu-law head: each sample's distribution is a mixture of
    the head's softmax and "the recalled sample, give or take" (a Laplace bump over the class
    values, centred on the recalled value, of learned width), weighted by a learned gate on the
    sample tier's features (which include the recall's confidence):

        p(c) = (1 - g) softmax(logits)_c + g laplace(v_c; recalled, width)

    Copying a sample is then one gate away from step 0 instead of a 1 -> 256 mapping the sample
    tier would have to learn, so a model can carry a looped prime on from its first steps. The
    output is log p, which the head's loss, bits and sampling read as logits unchanged.
    """

    def __init__(self, features: int, n_classes: int) -> None:
        super().__init__()
        self.gate = nn.Linear(features, 1)
        self.log_width = nn.Parameter(torch.tensor(math.log(_COPY_WIDTH)))
        levels = torch.linspace(-1.0, 1.0, n_classes)  # `frame_values` of each class
        self.register_buffer("levels", levels, persistent=False)

    def mix(
        self, logits: torch.Tensor, features: torch.Tensor, centres: torch.Tensor
    ) -> torch.Tensor:
        """Head logits [.., V], sample-tier features [.., M], recalled values [..] -> log p."""
        gate = self.gate(features)
        bump = -(self.levels - centres.unsqueeze(-1)).abs() / self.log_width.exp()
        copy = torch.log_softmax(bump, dim=-1)
        own = torch.log_softmax(logits, dim=-1)
        return torch.logaddexp(F.logsigmoid(-gate) + own, F.logsigmoid(gate) + copy)

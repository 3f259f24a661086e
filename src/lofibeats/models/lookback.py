"""Lookback: a frame decoder finds where the music repeats and reads what followed there.

Music repeats itself: the beat every bar, a bass line every few bars, a chord for seconds. An
LSTM's state forgets that within milliseconds of raw audio at the budgets this project trains
on (the NLL given 4 s of past was no better than given 64 ms), so the decoder is given a path to
the past it cannot lose: a long-term predictor, as speech codecs predict the pitch period, at the
scale of beats and bars.

Every `hop` samples the lookback *searches*: it finds the lag L between `min_lag` and `max_lag`
whose `window` samples best match the last `window` samples (normalised cross-correlation over
every lag, one FFT per search: `match_scores`). Until the next search, each decoder frame
*recalls* from L samples before it: the `RECALL_SAMPLES` that followed there (starting with the
frame being predicted), the search's score, and how well the `LOCAL_SAMPLES` just before the
frame still match the ones just before the recalled place (in a copy that holds, about 1). The
frame LSTM reads the recall with its input, the sample tier with the frame's output, and
`CopyHead` can copy the recalled samples outright (`Seq2SeqNet.decode`), so a continuation can
carry the prime's beat and harmonics on: what it generates becomes the past the next search
matches against.

The search is a hard choice (an argmax, no gradient): a soft one blurs the recalled waveform
over every lag that looks alike, and a blurred copy is quiet noise (measured on the earlier,
softmax-matched lookback: recalled samples correlated 0.43 with the truth, a copy of them
turned to noise). Searches start at the first decoded frame and repeat every `hop` samples,
in training (`recall`, every frame of a window in parallel) and generation (`LookbackReader`,
frame by frame) alike, so both recall the same values (tested); a stream's blocks are whole
hops, so its samples do not depend on how it is read.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

RECALL_SAMPLES = 32  # samples recalled at the lag: the predicted frame onwards
LOCAL_SAMPLES = 64  # the waveform whose match says whether the copy still holds
_EPS = 1e-8  # energy floor of a match: silence matches nothing
_COPY_WIDTH = 0.02  # initial width of the copy bump, in class values (2 / 255 per class)


def match_scores(signal: torch.Tensor, min_lag: int, max_lag: int, window: int) -> torch.Tensor:
    """How well the last `window` samples of `signal` [B, S] (S >= max_lag + window) match the
    `window` samples each lag before them, for lags max_lag down to min_lag: the normalised
    cross-correlation [B, max_lag - min_lag + 1], column j at lag max_lag - j; 0 against silence.
    All lags in one FFT (a power of two of at least max_lag - min_lag + window points)."""
    w, n = window, max_lag - min_lag + window
    fft_size = 1 << math.ceil(math.log2(n))
    tail = signal[:, -w:]
    region = signal[:, signal.shape[1] - max_lag - w : signal.shape[1] - min_lag]
    spectrum = torch.fft.rfft(region, fft_size) * torch.fft.rfft(tail, fft_size).conj()
    dots = torch.fft.irfft(spectrum, fft_size)[:, : n - w + 1]  # segment j: region[j:j+w]
    power = F.pad(region.double().square().cumsum(-1), (1, 0))
    energy = (power[:, w:] - power[:, :-w]).clamp(min=0.0).float()
    return dots * torch.rsqrt(energy * tail.square().sum(-1, keepdim=True) + _EPS)


def _cosine(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Cosine similarity over the last axis, 0 where either side is silent."""
    dot = (a * b).sum(-1)
    return dot * torch.rsqrt(a.square().sum(-1) * b.square().sum(-1) + _EPS)


class Lookback:
    """The lookback of a frame decoder with frames of `frame_size` samples: lags between
    `min_lag` and `max_lag` samples, found by matching `window` samples every `hop` samples
    (a multiple of the frame size). It has no weights: what to make of a recall is learned by
    the networks that read it."""

    def __init__(self, frame_size: int, min_lag: int, max_lag: int, window: int, hop: int) -> None:
        if min_lag < RECALL_SAMPLES or max_lag <= min_lag:
            raise ValueError(f"lags {min_lag}..{max_lag}: need {RECALL_SAMPLES} <= min < max")
        if hop % frame_size:
            raise ValueError(f"hop={hop} must be a multiple of the frame size {frame_size}")
        self.frame_size, self.min_lag, self.max_lag = frame_size, min_lag, max_lag
        self.window, self.hop_frames = window, hop // frame_size
        self.span = max_lag + max(window, LOCAL_SAMPLES)  # samples a search and recall read

    out_dim = RECALL_SAMPLES + 2  # the recalled samples, the search's score, the local match

    @property
    def history_frames(self) -> int:
        """Past frames a reader needs to recall exactly what training recalls."""
        return -(-self.span // self.frame_size)

    # ----------------------------------------------------------------- searching
    def search(self, signal: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The lag to continue `signal` [B, span] from: (lags [B] in samples, scores [B]: the
        normalised cross-correlation of the last `window` samples with the `window` samples
        that lag earlier; 0 against silence)."""
        scores = match_scores(signal, self.min_lag, self.max_lag, self.window)
        best = scores.argmax(-1)
        return self.max_lag - best, scores.gather(1, best[:, None])[:, 0]

    # ----------------------------------------------------------------- recalling
    def recall_at(
        self, signal: torch.Tensor, at: torch.Tensor, lags: torch.Tensor, scores: torch.Tensor
    ) -> torch.Tensor:
        """The recall of frames starting at sample positions `at` [Q] of `signal` [B, T], each
        with its search's lag and score ([B, Q]) -> [B, Q, out_dim]."""
        ahead = torch.arange(RECALL_SAMPLES, device=signal.device)
        local = torch.arange(-LOCAL_SAMPLES, 0, device=signal.device)
        source = at[None, :] - lags  # [B, Q]: where the copy reads from

        def take(starts: torch.Tensor, offsets: torch.Tensor) -> torch.Tensor:
            index = (starts[..., None] + offsets).flatten(1)
            return signal.gather(1, index).view(*starts.shape, offsets.numel())

        now = take(at[None, :].expand_as(source), local)
        then = take(source, local)
        recalled = take(source, ahead)
        return torch.cat([recalled, scores[..., None], _cosine(now, then)[..., None]], dim=-1)

    def padded(self, signal: torch.Tensor, before: int) -> tuple[torch.Tensor, int]:
        """`signal` [B, T] left-padded with silence so that position `before` has a whole span
        behind it -> (padded signal, how far positions moved)."""
        shift = max(0, self.span - before)
        return F.pad(signal, (shift, 0)), shift

    def recall(self, values: torch.Tensor, first: int) -> torch.Tensor:
        """Recalls of the decoder frames that predict frames first..F-1 of the teacher-forced
        stream `values` [B, F, k]: [B, F - first, out_dim]. A search at frame `first` and every
        hop after it, each over the span before it."""
        batch, frames, k = values.shape
        signal, shift = self.padded(values.flatten(1), first * k)
        starts = torch.arange(first, frames, self.hop_frames, device=values.device)
        ends = starts * k + shift
        spans = torch.stack([signal[:, e - self.span : e] for e in ends.tolist()], dim=1)
        lags, scores = self.search(spans.flatten(0, 1))
        per_frame = torch.arange(frames - first, device=values.device) // self.hop_frames
        lags = lags.view(batch, -1)[:, per_frame]
        scores = scores.view(batch, -1)[:, per_frame]
        at = torch.arange(first, frames, device=values.device) * k + shift
        return self.recall_at(signal, at, lags, scores)

    def decode_signal(self, history: torch.Tensor, frames: int) -> tuple[torch.Tensor, int]:
        """The samples a decode of `frames` frames after past frames `history` [B, H, k] reads
        and writes: the past, padded as `recall` pads it, then room for the new frames
        -> (signal [B, S], where the first new sample goes)."""
        k = self.frame_size
        past, _ = self.padded(history.flatten(1).to(torch.float32), history.shape[1] * k)
        signal = past.new_zeros(past.shape[0], past.shape[1] + frames * k)
        signal[:, : past.shape[1]] = past
        return signal, past.shape[1]

    def reader(self, history: torch.Tensor, frames: int) -> LookbackReader:
        """A reader over past frames `history` [B, H, k] (at least `history_frames` of them
        for the exact recall of training), room for `frames` more."""
        return LookbackReader(self, history, frames)


class LookbackReader:
    """One decode's lookback, frame by frame: `push` each new frame, `read` the recall of the
    frame after the last one pushed (searching on the first read and every hop after it).
    The buffer is allocated once per decode."""

    def __init__(self, lookback: Lookback, history: torch.Tensor, frames: int) -> None:
        self.lookback = lookback
        self.signal, self.end = lookback.decode_signal(history, frames)
        self.reads = 0
        self.lags = self.scores = None

    def push(self, frame: torch.Tensor) -> None:
        """Append one frame of sample values [B, k]."""
        k = frame.shape[1]
        self.signal[:, self.end : self.end + k] = frame
        self.end += k

    def read(self) -> torch.Tensor:
        """The recall [B, out_dim] of the frame after the last one pushed."""
        lookback, end = self.lookback, self.end
        if self.reads % lookback.hop_frames == 0:
            self.lags, self.scores = lookback.search(self.signal[:, end - lookback.span : end])
        self.reads += 1
        at = torch.tensor([end], device=self.signal.device)
        return lookback.recall_at(self.signal, at, self.lags[:, None], self.scores[:, None])[:, 0]


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

"""The plan family's network: a beat plan of frame codes, and a renderer that turns it into samples.

Measured (DESIGN.md, "Plan, then render"): models that predict the next sample from the audio
before it lose the beat the moment a prime ends; a renderer fed the real continuation's log-mel
frames keeps it, and a plan model that is *told* the beat period writes frames that keep it too.
So this family generates in two stages, every `hop` samples (16 ms):

1. **Plan.** Log-mel frames are coded by a k-means codebook (`Codebook`, fitted on the training
   frames). The beat period P (in frames) is measured on the prime: the peak of its onset
   envelope's autocorrelation between `period_min` and `period_max` (`beat_period`). `BeatPlan`
   predicts the next code from the codes `near` frames back and 1..`beats` periods back (and a
   frame either side of one period back): what the last bars did at this point of the beat is an
   input, not something to find. At generation each draw is also pulled towards the frames at
   this point of the last `beats` beats (`beat_distance`, weighted by the `beat_prior` knob):
   the MLP alone, on a track it never heard, writes codes whose onsets keep half the prime's
   periodicity and drift off its grid (DESIGN.md, "A beat prior at generation").
2. **Render.** By default (`render="grains"`, `lofibeats.models.grains`) each planned frame
   plays a real training grain of its code, overlap-added: a code says what its 16 ms sound
   like, and real grains keep the music's tone where a sample-level model trained for a CPU-hour
   hisses. `render="samples"` keeps that model: `Renderer` predicts each mu-law sample from the
   `render_past` samples before it and the planned frames around it (the codes' centroids,
   through two 3-wide convs, so a frame's samples are rendered once the plan is two frames
   further on); its output goes through a causal DC blocker.

Generation carries its state (`PlanState`: the plan so far, the period, the renderer's voice) from
block to block, so a stream costs the same per sample forever and its audio does not depend on
how it is read.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

import torch
import torchaudio
from torch import nn
from torch.nn import functional as F

from lofibeats.audio.mulaw import N_CLASSES, dequantize, quantize
from lofibeats.models.grains import GrainBank, GrainVoice
from lofibeats.models.heads import sample_classes
from lofibeats.models.sampling import Sampling

AHEAD = 2  # frames the plan runs ahead of the render: the renderer's two 3-wide convs
PLAN_TEMPERATURE = 0.5  # the plan's draws at temperature=auto (README, "Plan, then render")
PLAN_BEAT_PRIOR = 15.0  # beat_prior=auto: measured with PLAN_TEMPERATURE (README, "A beat prior")
RENDER_TEMPERATURE = 0.85  # measured with docs/probes/oracle_render.py (1.0 hisses, 0.7 thins)
DC_POLE = 0.995  # the DC blocker's pole: a corner near 13 Hz at 16 kHz
LOG_FLOOR, LOG_SHIFT, LOG_SCALE = 1e-5, 5.0, 4.0  # log-mel frames scaled to roughly [-1.6, 1.5]
AUDIBLE = -0.3  # mean scaled log-mel below which a stretch is mostly silence
K_MEANS_ITERATIONS = 15


class LogMel(nn.Module):
    """(B, T) audio -> (B, T // hop, n_mels) log-mel frames, roughly unit scale; frame f is
    centred on sample f * hop."""

    def __init__(self, sr: int, hop: int, n_mels: int) -> None:
        super().__init__()
        self.hop = hop
        self.mel = torchaudio.transforms.MelSpectrogram(
            sr, n_fft=4 * hop, hop_length=hop, n_mels=n_mels, center=True
        )

    def forward(self, audio: torch.Tensor) -> torch.Tensor:
        return self.scaled(self.power(audio))

    def power(self, audio: torch.Tensor) -> torch.Tensor:
        """(B, T) audio -> (B, n_mels, T // hop) mel power: linear in the audio's power, so a
        gain g scales it by g**2 (training reuses it for its gained copies)."""
        count = audio.shape[-1] // self.hop
        pad = 4 * self.hop  # whole frames of silence before audio too short to reflect-pad
        return self.mel(F.pad(audio.float(), (pad, 0)))[..., pad // self.hop :][..., :count]

    @staticmethod
    def scaled(power: torch.Tensor) -> torch.Tensor:
        """Mel power -> (B, frames, n_mels) log-mel frames, roughly unit scale."""
        return ((torch.log(power + LOG_FLOOR) + LOG_SHIFT) / LOG_SCALE).transpose(-1, -2)


class Codebook(nn.Module):
    """`size` centroid frames; a frame's code is its nearest centroid. Fitted once, by k-means
    on training frames (`fit`); `fitted` says whether it has been."""

    def __init__(self, size: int, n_mels: int) -> None:
        super().__init__()
        self.register_buffer("centroids", torch.zeros(size, n_mels))
        self.register_buffer("fitted", torch.tensor(False))

    def encode(self, frames: torch.Tensor) -> torch.Tensor:
        """(..., n_mels) frames -> (...) codes."""
        flat = frames.reshape(-1, frames.shape[-1]).to(self.centroids.dtype)
        codes = [torch.cdist(part, self.centroids).argmin(1) for part in flat.split(65536)]
        return torch.cat(codes).reshape(frames.shape[:-1]) if codes else flat.new_zeros(0).long()

    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        """(...) codes -> (..., n_mels) centroid frames."""
        return self.centroids[codes]

    @torch.no_grad()
    def fit(self, frames: torch.Tensor, seed: int = 0) -> None:
        """k-means over (N, n_mels) frames from k-means++ seeds (seeded: the same frames give
        the same codebook)."""
        size = len(self.centroids)
        if len(frames) < size:
            raise ValueError(f"{len(frames)} frames cannot fit {size} codes")
        frames = frames.to(self.centroids)
        centroids = _spread_seeds(frames.cpu(), size, seed).to(frames.device)
        for _ in range(K_MEANS_ITERATIONS):
            nearest = torch.cdist(frames, centroids).argmin(1)
            sums = torch.zeros_like(centroids).index_add_(0, nearest, frames)
            counts = torch.bincount(nearest, minlength=size)
            used = counts > 0  # an empty cluster keeps its centroid
            centroids[used] = sums[used] / counts[used, None]
        self.centroids.copy_(centroids)
        self.fitted.fill_(True)


def _spread_seeds(frames: torch.Tensor, size: int, seed: int) -> torch.Tensor:
    """k-means++: each seed drawn with probability in proportion to its squared distance from
    the nearest seed so far, so no cluster starts with two seeds and another with none."""
    gen = torch.Generator().manual_seed(seed)
    seeds = [frames[int(torch.randint(len(frames), (1,), generator=gen))]]
    nearest = ((frames - seeds[0]) ** 2).sum(1)
    for _ in range(size - 1):
        pick = int(torch.multinomial(nearest + 1e-12, 1, generator=gen))
        seeds.append(frames[pick])
        nearest = torch.minimum(nearest, ((frames - seeds[-1]) ** 2).sum(1))
    return torch.stack(seeds)


def onset_flux(frames: torch.Tensor) -> torch.Tensor:
    """(..., T, n_mels) log-mel frames -> (..., T) half-wave rectified flux."""
    return F.pad(F.relu(frames.diff(dim=-2)).mean(-1), (1, 0))


def beat_period(frames: torch.Tensor, shortest: int, longest: int) -> torch.Tensor:
    """(B, T, n_mels) frames -> (B,) the lag in frames, `shortest`..`longest`, where the onset
    envelope's autocorrelation peaks; T must exceed `longest`."""
    env = onset_flux(frames)
    env = env - env.mean(-1, keepdim=True)
    lags = torch.arange(shortest, longest + 1, device=frames.device)
    ac = torch.stack([(env[:, lag:] * env[:, :-lag]).mean(-1) for lag in lags.tolist()], -1)
    return lags[ac.argmax(-1)]


def beat_distance(
    codes: torch.Tensor, period: torch.Tensor, centroids: torch.Tensor, beats: int
) -> torch.Tensor:
    """(B, F) codes so far, (B,) periods -> (B, size): every code's squared distance from the
    nearest of the frames 1..`beats` periods before the next one. Small for a code that sounds
    like what one of the last beats played at this point of the beat."""
    rows = torch.arange(len(codes), device=codes.device)[:, None]
    back = codes.shape[1] - period[:, None] * torch.arange(1, beats + 1, device=codes.device)
    frames = centroids[codes[rows, back]]  # (B, beats, n_mels)
    return torch.cdist(frames, centroids[None].expand(len(codes), -1, -1)).amin(1).pow(2)


def code_spread(centroids: torch.Tensor) -> torch.Tensor:
    """The median squared distance between two codes: the unit `beat_prior` weighs in."""
    return torch.cdist(centroids, centroids).pow(2).median().clamp_min(1e-12)


class BeatPlan(nn.Module):
    """Logits of the next code from the codes at `offsets(period)` frames back."""

    def __init__(
        self,
        codes: int,
        near: int,
        beats: int,
        width: int,
        hidden: int,
        layers: int,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        self.near, self.beats = near, beats
        slots = near + beats + 2  # +2: a frame either side of one period back
        self.embed = nn.Embedding(codes, width)
        self.slot = nn.Parameter(torch.zeros(slots, width))
        widths = [slots * width] + [hidden] * layers
        blocks: list[nn.Module] = []
        for n_in, n_out in zip(widths[:-1], widths[1:], strict=True):
            blocks += [nn.Dropout(dropout), nn.Linear(n_in, n_out), nn.GELU()]
        self.net = nn.Sequential(*blocks, nn.Dropout(dropout), nn.Linear(widths[-1], codes))

    def offsets(self, period: torch.Tensor) -> torch.Tensor:
        """(N,) periods -> (N, slots): how many frames back each input code lies."""
        device = period.device
        near = torch.arange(1, self.near + 1, device=device).expand(len(period), -1)
        beats = period[:, None] * torch.arange(1, self.beats + 1, device=device)[None]
        jitter = period[:, None] + torch.tensor([-1, 1], device=device)[None]
        return torch.cat([near, beats, jitter], 1)

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        """(N, slots) codes -> (N, codes) logits."""
        return self.net((self.embed(inputs) + self.slot).flatten(1))


class Renderer(nn.Module):
    """p(sample t | the `past` samples before it, the planned frames around t): an MLP, so
    training is one parallel pass and a generation step three small matrix products. Past
    samples come in companded (mu-law values in [-1, 1]), so quiet passages are as visible as
    loud ones."""

    def __init__(self, n_mels: int, hidden: int, past: int, hop: int) -> None:
        super().__init__()
        self.hop, self.past_len = hop, past
        self.frames = nn.Sequential(
            nn.Conv1d(n_mels, hidden, 3), nn.GELU(), nn.Conv1d(hidden, hidden, 3)
        )
        self.past = nn.Linear(past, hidden)
        self.mix = nn.Sequential(nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU())
        self.out = nn.Linear(hidden, N_CLASSES)

    def condition(self, frames: torch.Tensor) -> torch.Tensor:
        """(B, K + 2 * AHEAD, n_mels) frames -> (B, K, hidden): frame k's conditioning, from
        frames k .. k + 2 * AHEAD (centred on the frame AHEAD later)."""
        return self.frames(frames.transpose(1, 2)).transpose(1, 2)

    def forward(self, past: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        """(..., past) companded samples and (..., hidden) conditioning -> (..., classes)."""
        return self.out(self.mix(self.past(past) + cond))

    def loss(self, audio: torch.Tensor, frames: torch.Tensor, first: int) -> torch.Tensor:
        """Mean cross-entropy (nats/sample) of audio[:, first:] ((B, T); T - first a multiple
        of hop, first >= past) given its samples and `frames` (B, (T - first) // hop +
        2 * AHEAD, n_mels): the frames of those samples and AHEAD either side."""
        tokens = quantize(audio)
        length = audio.shape[1] - first
        cond = self.condition(frames).repeat_interleave(self.hop, dim=1)
        past = companded(tokens[:, first - self.past_len : -1]).unfold(1, self.past_len, 1)
        logits = self(past, cond[:, :length])
        return F.cross_entropy(logits.flatten(0, 1), tokens[:, first:].flatten())


def companded(tokens: torch.Tensor) -> torch.Tensor:
    """Mu-law classes as values in [-1, 1], evenly spaced."""
    return tokens.float() * (2.0 / (N_CLASSES - 1)) - 1.0


@dataclass(frozen=True)
class SampleVoice:
    """The sample renderer's state between blocks: `past` [B, render_past] the last samples,
    companded; `dc` [B, 2] the DC blocker's last input and output."""

    past: torch.Tensor
    dc: torch.Tensor


@dataclass(frozen=True)
class PlanState:
    """Where a take stands between blocks. Tensors are only ever rebound, never written into,
    so a state can be kept and returned to (`Stream.mark` / `rewind`).

    `codes` [B, F]: the plan so far (the prime's codes, then planned ones), of which the last
    `ahead` frames are planned but not yet rendered; `period` [B]: beat periods in frames;
    `voice`: the renderer's state (`SampleVoice` or `GrainVoice`).
    """

    codes: torch.Tensor
    period: torch.Tensor
    voice: SampleVoice | GrainVoice
    ahead: int = 0


class PlanNet(nn.Module):
    """What the plan family generates with: frames, codebook, beat plan and renderer."""

    #: what `temperature=auto` draws the plan at (README, "Plan, then render": measured)
    auto_temperature = PLAN_TEMPERATURE
    #: what `beat_prior=auto` pulls its codes with (README, "A beat prior": measured)
    auto_beat_prior = PLAN_BEAT_PRIOR

    def __init__(
        self,
        sr: int,
        hop: int,
        n_mels: int,
        codes: int,
        near: int,
        beats: int,
        period_min: int,
        period_max: int,
        plan_width: int,
        plan_hidden: int,
        plan_layers: int,
        plan_dropout: float,
        render: str,
        render_hidden: int,
        render_past: int,
        grains: int,
        grain_memory: int,
        grain_shift: int,
    ) -> None:
        super().__init__()
        self.hop, self.period_min, self.period_max = hop, period_min, period_max
        self.frames = LogMel(sr, hop, n_mels)
        self.codebook = Codebook(codes, n_mels)
        self.plan = BeatPlan(codes, near, beats, plan_width, plan_hidden, plan_layers, plan_dropout)
        #: what plays the plan: a GrainBank (render="grains") or a sample-level Renderer
        self.renderer = (
            Renderer(n_mels, render_hidden, render_past, hop) if render == "samples" else None
        )
        self.grains = (
            GrainBank(codes, grains, hop, grain_memory, grain_shift) if render == "grains" else None
        )

    @torch.no_grad()
    def fit_codes(
        self,
        audio: list[torch.Tensor],
        frames: list[torch.Tensor] | None = None,
        limit: int | None = None,
    ) -> None:
        """Fit the codebook on the first `limit` frames of batches of (B, T) `audio` (their
        log-mel `frames`, computed when not given) and fill the grain bank from the audio."""
        frames = frames if frames is not None else [self.frames(a) for a in audio]
        self.codebook.fit(torch.cat([f.flatten(0, 1) for f in frames])[:limit])
        if self.grains is not None:
            codes = [self.codebook.encode(f) for f in frames]
            self.grains.fit(audio, codes, self.codebook.centroids)

    @property
    def reach(self) -> int:
        """The farthest back (frames) a plan step reads."""
        return self.plan.beats * self.period_max + 1

    @property
    def default_period(self) -> int:
        """The period of a prime too short to measure one on: the middle of the range."""
        return (self.period_min + self.period_max) // 2

    def periods(self, frames: torch.Tensor) -> torch.Tensor:
        """(B, T, n_mels) -> (B,) beat periods; the default where T cannot hold two longest."""
        if frames.shape[1] <= 2 * self.period_max:
            return torch.full((len(frames),), self.default_period, device=frames.device)
        return beat_period(frames, self.period_min, self.period_max)

    def plan_inputs(
        self, codes: torch.Tensor, period: torch.Tensor, targets: torch.Tensor
    ) -> torch.Tensor:
        """(B, F) codes, (B,) periods, (K,) target frame indices -> (B, K, slots) input codes."""
        back = targets[None, :, None] - self.plan.offsets(period)[:, None, :]
        rows = torch.arange(len(codes), device=codes.device)[:, None, None]
        return codes[rows, back]

    # ------------------------------------------------------------- generation
    @torch.no_grad()
    def begin(self, prime: torch.Tensor) -> PlanState:
        """The state after `prime` ([B, T] audio in [-1, 1]): its codes, its beat period and
        its last samples. A prime shorter than the plan's reach is padded with its first code."""
        prime = prime[:, prime.shape[1] % self.hop :].float()
        frames = self.frames(prime)
        codes = self.codebook.encode(frames)
        if codes.shape[1] == 0:  # no prime: the plan starts from the code of silence
            codes = self.codebook.encode(self.frames(prime.new_zeros(len(prime), self.hop)))
        short = self.reach + AHEAD - codes.shape[1]
        if short > 0:
            codes = torch.cat([codes[:, :1].expand(-1, short), codes], 1)
        voice = self.grains.begin(prime) if self.grains is not None else self._sample_voice(prime)
        return PlanState(codes=codes, period=self.periods(frames), voice=voice)

    def _sample_voice(self, prime: torch.Tensor) -> SampleVoice:
        past_len = self.renderer.past_len
        tokens = quantize(prime[:, -past_len:])
        missing = past_len - tokens.shape[1]
        if missing > 0:
            tokens = F.pad(tokens, (missing, 0), value=N_CLASSES // 2)
        return SampleVoice(past=companded(tokens), dc=prime.new_zeros(len(prime), 2))

    @torch.no_grad()
    def block(
        self,
        state: PlanState,
        n_samples: int,
        sampling: Sampling,
        generator: torch.Generator | None = None,
        render: RenderLoop | None = None,
    ) -> tuple[torch.Tensor, PlanState]:
        """The next `n_samples` (a multiple of hop) of every row, [B, n] in [-1, 1], and the
        state after them. The plan's codes are drawn with `sampling`; grains play them, or the
        sample renderer at `RENDER_TEMPERATURE`, its loop run by `render` (None:
        `render_reference`)."""
        if n_samples % self.hop:
            raise ValueError(f"a plan block is whole frames: {n_samples} % {self.hop} != 0")
        count = n_samples // self.hop
        codes = self._plan(
            state.codes, state.period, count + AHEAD - state.ahead, sampling, generator
        )
        first = codes.shape[1] - AHEAD - count  # the first frame this block renders
        if self.grains is not None:  # frame f's hop needs f + 1's grain: planned already
            start = first if state.voice.tail is None else first + 1
            audio, voice = self.grains.render(codes[:, start : first + count + 1], state.voice)
        else:
            audio, voice = self._render_samples(
                codes[:, first - AHEAD :], state.voice, generator, render
            )
        keep = self.reach + 2 * AHEAD + count
        return audio, replace(state, codes=codes[:, -keep:], voice=voice, ahead=AHEAD)

    def _render_samples(
        self,
        codes: torch.Tensor,
        voice: SampleVoice,
        generator: torch.Generator | None,
        render: RenderLoop | None,
    ) -> tuple[torch.Tensor, SampleVoice]:
        """The sample renderer over (B, K + 2 * AHEAD) codes: K frames of audio."""
        render = render or render_reference
        cond = self.renderer.condition(self.codebook.decode(codes))
        n_samples = cond.shape[1] * self.hop
        gen_device = generator.device if generator is not None else cond.device
        uniforms = torch.rand(len(cond), n_samples, generator=generator, device=gen_device)
        tokens, past = render(self.renderer, voice.past, cond, uniforms.to(cond.device))
        audio, dc = dc_free(dequantize(tokens), voice.dc)
        return audio, SampleVoice(past=past, dc=dc)

    def _plan(
        self,
        codes: torch.Tensor,
        period: torch.Tensor,
        count: int,
        sampling: Sampling,
        generator: torch.Generator | None,
    ) -> torch.Tensor:
        back = self.plan.offsets(period)
        rows = torch.arange(len(codes), device=codes.device)[:, None]
        centroids = self.codebook.centroids
        # sampling.beat_prior: a logit penalty per typical squared distance between two codes
        pull = sampling.beat_prior / code_spread(centroids) if sampling.beat_prior else None
        for _ in range(count):
            logits = self.plan(codes[rows, codes.shape[1] - back])
            if pull is not None:
                logits = logits - pull * beat_distance(codes, period, centroids, self.plan.beats)
            new = sample_classes(logits, sampling, generator)
            codes = torch.cat([codes, new[:, None]], 1)
        return codes


def render_reference(
    renderer: Renderer, past: torch.Tensor, cond: torch.Tensor, uniforms: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """The renderer's loop in PyTorch, sample by sample: the oracle a fused loop must match.

    `past` [B, render_past] companded samples, `cond` [B, K, hidden] each frame's conditioning,
    `uniforms` [B, n] (n <= K * hop) one draw per sample: inverse-CDF sampling of
    softmax(logits / RENDER_TEMPERATURE). Returns (mu-law tokens [B, n], the last past after
    them)."""
    hop, past_len, n = renderer.hop, renderer.past_len, uniforms.shape[1]
    signal = torch.cat([past, past.new_zeros(len(past), n)], 1)
    tokens = torch.empty(len(past), n, dtype=torch.long, device=past.device)
    scale = 1.0 / RENDER_TEMPERATURE
    for t in range(n):
        logits = renderer(signal[:, t : t + past_len], cond[:, t // hop])
        cdf = torch.softmax(logits * scale, -1).cumsum(-1)
        u = uniforms[:, t : t + 1] * cdf[:, -1:]
        token = torch.searchsorted(cdf, u, right=True).clamp_max(N_CLASSES - 1)
        tokens[:, t] = token[:, 0]
        signal[:, past_len + t] = companded(token[:, 0])
    return tokens, signal[:, -past_len:]


#: what runs the renderer's loop: `render_reference`, or a fused backend with its signature
RenderLoop = Callable[
    [Renderer, torch.Tensor, torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]
]


def dc_free(audio: torch.Tensor, last: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """A causal one-pole DC blocker, y[t] = x[t] - x[t-1] + DC_POLE * y[t-1], over (B, T) audio
    that follows the input and output `last` [B, 2] of the block before; (output, its `last`)."""
    x = torch.cat([last[:, :1], audio], 1)
    step = x.diff(dim=1)
    y = torchaudio.functional.lfilter(
        step.double(),
        torch.tensor([1.0, -DC_POLE], dtype=torch.float64, device=audio.device),
        torch.tensor([1.0, 0.0], dtype=torch.float64, device=audio.device),
        clamp=False,
    )
    decay = DC_POLE ** torch.arange(1, audio.shape[1] + 1, device=audio.device, dtype=torch.float64)
    y = (y + last[:, 1:].double() * decay).float()
    return y, torch.stack([audio[:, -1], y[:, -1]], 1)

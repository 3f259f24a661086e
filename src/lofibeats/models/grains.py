"""The plan family's grain renderer: each planned frame plays a real training grain of its code.

Measured (DESIGN.md, "Rendering with grains"): the sample-level renderer turns a plan into hiss
(spectral flatness 4x the real music's), because in a CPU-hour it learns texture, not tone. A
frame's code already says what the 16 ms sound like, so the bank keeps, for every code, `size`
grains of the training audio whose frames got that code (2 hops each, centred on the frame) and
overlap-adds one per planned frame under a Hann window (the two halves sum to one). Which of
a code's grains plays is the one whose first half best continues the grain before it (the join
cost of unit-selection synthesis), judged on their log power spectra: a squared difference of
waveforms favours the quietest grain of any pitch, and every such jump is a flux the music does
not have (measured: beat 0.36 -> 0.40, flatness 0.052 -> 0.044 on real music at T 0.6,
DESIGN.md). The grains played in the last `memory` frames are left out, so a held code does not
repeat one grain into a 62.5-Hz buzz; where all of them were, the one played longest ago. Each
grain is kept with `shift` samples either side, and the chosen grain starts where in that slack
its waveform best meets the last (WSOLA's search), so tones continue in phase across a join.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

SHIFT_STEPS = 16  # starts a join tries per side of the frame's own, within a grain's slack
SPECTRUM_FLOOR = 1e-7  # added to a join's power spectra before the log (about -70 dB a bin)


@dataclass(frozen=True)
class GrainVoice:
    """A grain take's state between blocks. `grain` [B, 2 * hop]: the last grain chosen, whole
    and unwindowed (the next join is scored against its second half); `tail` [B, hop]: its
    windowed second half, not yet played, or None before the first grain (the prime played the
    stretch under its first half); `recent` [B, memory]: the bank slots chosen last (-1: none).
    """

    grain: torch.Tensor
    tail: torch.Tensor | None
    recent: torch.Tensor


class GrainBank(nn.Module):
    """`size` grains of 2 * `hop` samples (and `shift` either side) for each of `codes` codes,
    filled once from training audio (`fit`); `count[c]` says how many code c holds."""

    def __init__(self, codes: int, size: int, hop: int, memory: int, shift: int = 0) -> None:
        super().__init__()
        self.hop, self.size, self.memory, self.shift = hop, size, memory, shift
        length = 2 * hop + 2 * shift
        self.register_buffer("grains", torch.zeros(codes, size, length, dtype=torch.float16))
        self.register_buffer("count", torch.zeros(codes, dtype=torch.long))
        self.register_buffer("window", torch.hann_window(2 * hop, periodic=True), persistent=False)
        self.register_buffer("head_window", torch.hann_window(hop), persistent=False)
        # the starts a join tries within a grain's slack, and the samples of a head and a grain
        self.register_buffer("starts", self._starts(shift), persistent=False)
        self.register_buffer("head_span", torch.arange(hop), persistent=False)
        self.register_buffer("grain_span", torch.arange(2 * hop), persistent=False)
        self._heads: tuple[tuple[int, int], torch.Tensor] | None = None  # see `heads`

    # ---------------------------------------------------------------- filling
    @torch.no_grad()
    def fit(
        self,
        audio: list[torch.Tensor],
        codes: list[torch.Tensor],
        centroids: torch.Tensor,
        seed: int = 0,
    ) -> None:
        """Fill the bank from batches of (B, T) `audio` and the (B, T // hop) `codes` of their
        frames: for each code, `size` of its frames' grains drawn at random (seeded). A code no
        frame got borrows the grains of the nearest code (by `centroids`) that has some."""
        pairs = [self._grains(a, c) for a, c in zip(audio, codes, strict=True)]
        grain_codes = torch.cat([c for _, c in pairs]) if pairs else torch.zeros(0).long()
        if not len(grain_codes):
            raise ValueError("no whole grain in the audio: give windows longer than two frames")
        grains = torch.cat([g for g, _ in pairs])
        gen = torch.Generator().manual_seed(seed)
        order = torch.randperm(len(grain_codes), generator=gen)
        ranked = order[torch.argsort(grain_codes[order], stable=True)]  # random within a code
        counts = torch.bincount(grain_codes, minlength=len(self.count))
        starts = torch.cumsum(counts, 0) - counts
        for code in range(len(self.count)):
            take = min(int(counts[code]), self.size)
            members = ranked[starts[code] : starts[code] + take]
            self.grains[code, :take] = grains[members].to(self.grains)
            self.count[code] = take
        self._borrow(centroids)

    def _grains(
        self, audio: torch.Tensor, codes: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Every whole grain of (B, T) audio with its slack, (N, 2 * hop + 2 * shift), and its
        frame's code, (N,)."""
        hop, reach = self.hop, self.hop + self.shift  # samples a grain spans either side
        first, end = -(-reach // hop), min(codes.shape[1], (audio.shape[1] - reach) // hop + 1)
        frames = torch.arange(first, max(first, end))
        at = frames[:, None] * hop - reach + torch.arange(2 * reach)[None]
        return audio[:, at].flatten(0, 1).float().cpu(), codes[:, frames].flatten().cpu()

    def _borrow(self, centroids: torch.Tensor) -> None:
        empty = (self.count == 0).nonzero()[:, 0]
        if not len(empty):
            return
        distance = torch.cdist(centroids[empty].float(), centroids.float())
        distance[:, self.count == 0] = float("inf")
        nearest = distance.argmin(1)
        self.grains[empty] = self.grains[nearest]
        self.count[empty] = self.count[nearest]

    @property
    def heads(self) -> torch.Tensor:
        """(codes, size, hop // 2 + 1): the log spectrum of every grain's first half as its frame
        was cut, what a join compares. Computed once for the grains as they are: again only
        when they change (filled, loaded, moved or written into)."""
        identity = (self.grains.data_ptr(), self.grains._version)
        if self._heads is None or self._heads[0] != identity:
            first_halves = self.grains[:, :, self.shift + self.head_span].float()
            self._heads = (identity, self._spectrum(first_halves))
        return self._heads[1]

    # -------------------------------------------------------------- rendering
    def begin(self, prime: torch.Tensor) -> GrainVoice:
        """The voice after `prime` ([B, T] audio): its last 2 hops as the grain the first one
        chosen must join."""
        last = prime[:, -2 * self.hop :].float()
        last = F.pad(last, (2 * self.hop - last.shape[1], 0))
        recent = torch.full((len(prime), self.memory), -1, dtype=torch.long, device=prime.device)
        return GrainVoice(grain=last, tail=None, recent=recent)

    @torch.no_grad()
    def render(self, codes: torch.Tensor, voice: GrainVoice) -> tuple[torch.Tensor, GrainVoice]:
        """(B, K) codes of consecutive frames -> their audio and the voice after it. The hop
        after frame f's centre is the second half of f's grain over the first half of f + 1's,
        so K codes play K - 1 hops at a take's start and K hops after."""
        hop = self.hop
        grain, tail, recent = voice.grain, voice.tail, voice.recent
        out = []
        for code in codes.unbind(1):
            slot, grain = self._pick(code, grain, recent)
            if tail is not None:
                out.append(tail + grain[:, :hop] * self.window[:hop])
            tail = grain[:, hop:] * self.window[hop:]
            if self.memory:
                recent = torch.cat([recent[:, 1:], (code * self.size + slot)[:, None]], 1)
        audio = torch.cat(out, 1) if out else grain.new_zeros(len(codes), 0)
        return audio, GrainVoice(grain=grain, tail=tail, recent=recent)

    def _pick(
        self, code: torch.Tensor, grain: torch.Tensor, recent: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(B,) slots and their (B, 2 * hop) grains: what each row plays after `grain`. The best
        join among its code's grains not played within memory, where all were played the one
        played longest ago; cut from its slack where its waveform meets `grain` best."""
        slot = self._choose(code, self._join(code, grain), recent)
        rows = torch.arange(len(code), device=code.device)
        chosen = self.grains[code, slot].float()  # (B, 2 * hop + 2 * shift)
        heads = chosen[:, self.starts[:, None] + self.head_span]  # (B, starts, hop)
        start = self.starts[(heads - grain[:, None, self.hop :]).pow(2).mean(-1).argmin(1)]
        return slot, chosen[rows[:, None], start[:, None] + self.grain_span]

    def _join(self, code: torch.Tensor, grain: torch.Tensor) -> torch.Tensor:
        """(B, size) join costs of the `code` grains after `grain`: the squared difference of the
        log spectra of its second half and of their first halves, as their frames were cut."""
        return (self.heads[code] - self._spectrum(grain[:, None, self.hop :])).pow(2).mean(-1)

    def _choose(self, code: torch.Tensor, join: torch.Tensor, recent: torch.Tensor) -> torch.Tensor:
        """(B,) slots: the least `join` cost among the code's grains not played within memory;
        where all were, the one played longest ago."""
        slots = torch.arange(self.size, device=code.device)
        missing = slots[None] >= self.count[code][:, None]
        # where in `recent` (oldest first) each candidate last played; -1: not within memory
        last_played = torch.full_like(join, -1.0)
        if self.memory:
            match = (code[:, None] * self.size + slots[None])[:, :, None] == recent[:, None, :]
            ages = torch.arange(self.memory, device=code.device, dtype=join.dtype)
            last_played = torch.where(match, ages, -1.0).amax(-1)
        played = last_played >= 0
        exhausted = (missing | played).all(1, keepdim=True)
        cost = torch.where(exhausted, last_played, join.masked_fill(played, float("inf")))
        return cost.masked_fill(missing, float("inf")).argmin(1)

    def _spectrum(self, audio: torch.Tensor) -> torch.Tensor:
        """(..., hop) audio -> (..., hop // 2 + 1) its log power spectrum under a Hann window."""
        return torch.log(torch.fft.rfft(audio * self.head_window).abs().pow(2) + SPECTRUM_FLOOR)

    @staticmethod
    def _starts(shift: int) -> torch.Tensor:
        """The starts a join tries within a grain's slack: 0 .. 2 * shift in about 16 steps a
        side, `shift` (the grain as its frame was cut) always among them."""
        starts = torch.arange(0, 2 * shift + 1, max(1, shift // SHIFT_STEPS))
        return torch.unique(torch.cat([starts, torch.tensor([shift])]))

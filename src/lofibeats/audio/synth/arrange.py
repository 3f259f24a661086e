"""From a :class:`TrackPlan` to a score: timed notes (keys, bass, lead) and drum hits.

Time is counted in beats and eighths; off-beat eighths are pushed late by the track's swing.
The progression loops every four bars (a phrase). Every fourth phrase ends with a drum break,
and every other phrase carries a pentatonic melody built from a two-bar motif and its answer.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from lofibeats.audio.synth.music import (
    BASS_PATTERNS,
    COMP_PATTERNS,
    KICK_PATTERNS,
    PENTATONIC,
    QUALITIES,
    Chord,
    TrackPlan,
    bass_midi,
    chord_midi,
)

BEATS_PER_BAR = 4
BARS_PER_PHRASE = 4
_LEAD_RANGE = (67, 84)

Span = tuple[int, Chord, Chord]  # (start beat, chord, the chord after it)


@dataclass(frozen=True)
class Note:
    start: float  # seconds
    dur: float  # seconds the key is held (the voice adds its own release)
    midi: int
    vel: float  # 0..1


@dataclass(frozen=True)
class Hit:
    start: float  # seconds
    drum: str  # "kick" | "snare" | "rim" | "hat" | "open_hat"
    vel: float  # 0..1


@dataclass
class Score:
    keys: list[Note] = field(default_factory=list)
    bass: list[Note] = field(default_factory=list)
    lead: list[Note] = field(default_factory=list)
    drums: list[Hit] = field(default_factory=list)


class _Clock:
    """Beat and swung-eighth positions to seconds."""

    def __init__(self, bpm: float, swing: float) -> None:
        self.beat_s = 60.0 / bpm
        self.swing = swing

    def eighth(self, beat: int, eighth: int) -> float:
        """Seconds at `eighth` eighths after the downbeat `beat` (eighth may be negative)."""
        whole, odd = divmod(eighth, 2)
        return (beat + whole + (self.swing if odd else 0.0)) * self.beat_s


def _chord_spans(plan: TrackPlan, n_beats: int) -> list[Span]:
    """Every chord that starts before `n_beats`, the progression looping."""
    chords = plan.chords
    spans: list[Span] = []
    beat, i = 0, 0
    while beat < n_beats:
        chord = chords[i % len(chords)]
        spans.append((beat, chord, chords[(i + 1) % len(chords)]))
        beat += chord.beats
        i += 1
    return spans


def arrange(plan: TrackPlan, seconds: float) -> Score:
    """The score of one track, covering at least `seconds` (later events are simply cut)."""
    rng = np.random.default_rng([plan.seed, plan.index, 1])
    clock = _Clock(plan.bpm, plan.swing)
    n_bars = math.ceil(seconds / (BEATS_PER_BAR * clock.beat_s)) + 1
    score = Score()
    spans = _chord_spans(plan, n_bars * BEATS_PER_BAR)
    _keys(plan, spans, clock, rng, score)
    _bass(plan, spans, clock, rng, score)
    _drums(plan, n_bars, clock, rng, score)
    _lead(plan, spans, n_bars, clock, rng, score)
    return score


def _keys(
    plan: TrackPlan, spans: list[Span], clock: _Clock, rng: np.random.Generator, score: Score
) -> None:
    k = plan.keys
    for beat, chord, _ in spans:
        voicing = chord_midi(plan.key, chord, plan.keys_low)
        hits = [(e, d) for e, d in COMP_PATTERNS[plan.comp_pattern] if e < 2 * chord.beats]
        for n, (eighth, beats) in enumerate(hits):
            if n > 0 and rng.random() < 0.15:
                continue  # leave some space now and then
            start = clock.eighth(beat, eighth) + rng.normal(0, 0.006)
            dur = min(beats, chord.beats - 0.25) * clock.beat_s
            vel = rng.uniform(0.55, 0.85)
            for j, midi in enumerate(voicing):
                score.keys.append(
                    Note(
                        start=max(0.0, start + j * k.strum),
                        dur=round(dur * 8) / 8,  # quantised so identical notes share a render
                        midi=midi,
                        vel=float(vel * rng.uniform(0.85, 1.0)),
                    )
                )


def _bass(
    plan: TrackPlan, spans: list[Span], clock: _Clock, rng: np.random.Generator, score: Score
) -> None:
    for beat, chord, nxt in spans:
        root = bass_midi(plan.key, chord)
        fifth = root + 7 if root + 7 <= 47 else root - 5
        pitches = {
            "root": root,
            "fifth": fifth,
            "octave": root + 12,
            "approach": bass_midi(plan.key, nxt) - 1,
        }
        for eighth, beats, which in BASS_PATTERNS[plan.bass_pattern]:
            if eighth >= 2 * chord.beats:
                continue
            dur = min(beats, chord.beats - eighth / 2 - 0.1) * clock.beat_s
            score.bass.append(
                Note(
                    start=max(0.0, clock.eighth(beat, eighth) + rng.normal(0, 0.004)),
                    dur=round(dur * 8) / 8,
                    midi=pitches[which],
                    vel=float(rng.uniform(0.75, 0.95)),
                )
            )


def _drums(
    plan: TrackPlan, n_bars: int, clock: _Clock, rng: np.random.Generator, score: Score
) -> None:
    snare = "rim" if plan.kit.rim else "snare"
    kicks = KICK_PATTERNS[plan.kick_pattern]

    def hit(beat: int, eighth: int, drum: str, vel: float) -> None:
        start = max(0.0, clock.eighth(beat, eighth) + rng.normal(0, 0.003))
        score.drums.append(Hit(start, drum, float(np.clip(vel, 0.05, 1.0))))

    for bar in range(n_bars):
        beat = bar * BEATS_PER_BAR
        phrase, bar_in_phrase = divmod(bar, BARS_PER_PHRASE)
        last_bar = bar_in_phrase == BARS_PER_PHRASE - 1
        if not (last_bar and phrase % 4 == 3):  # a break: hats only
            for e in kicks:
                hit(beat, e, "kick", rng.uniform(0.8, 1.0) if e == 0 else rng.uniform(0.6, 0.85))
            for e in (2, 6):
                hit(beat, e, snare, rng.uniform(0.8, 1.0))
            if rng.random() < 0.25:
                hit(beat, int(rng.choice([3, 7])), snare, rng.uniform(0.15, 0.3))  # ghost note
            if last_bar and rng.random() < 0.4:
                hit(beat, 7, snare, rng.uniform(0.4, 0.6))  # pickup into the next phrase
        open_at = 7 if rng.random() < 0.2 else None
        for e in range(8):
            if e == open_at:
                hit(beat, e, "open_hat", rng.uniform(0.4, 0.55))
            elif rng.random() > 0.06:
                accent = 0.75 if e % 2 == 0 else 0.45
                hit(beat, e, "hat", accent + rng.normal(0, 0.08))


def _lead(
    plan: TrackPlan,
    spans: list[Span],
    n_bars: int,
    clock: _Clock,
    rng: np.random.Generator,
    score: Score,
) -> None:
    scale = [
        p
        for p in range(_LEAD_RANGE[0], _LEAD_RANGE[1] + 1)
        if (p - plan.key) % 12 in PENTATONIC[plan.mode]
    ]
    chord_at = {}  # beat -> chord sounding then
    for beat, chord, _ in spans:
        for b in range(beat, beat + chord.beats):
            chord_at[b] = chord
    # A two-bar motif: onsets on eighths 0..15 and a random walk over the scale.
    onsets = np.sort(rng.choice(16, size=int(rng.integers(4, 8)), replace=False))
    steps = rng.integers(-2, 3, size=len(onsets))
    answer_steps = steps.copy()
    answer_steps[-2:] = rng.integers(-3, 2, size=2)
    center = int(rng.integers(len(scale) // 3, 2 * len(scale) // 3))
    for phrase in range(1, n_bars // BARS_PER_PHRASE + 1, 2):
        for half, walk in enumerate((steps, answer_steps)):
            start_beat = (phrase * BARS_PER_PHRASE + 2 * half) * BEATS_PER_BAR
            idx = center
            for n, (eighth, step) in enumerate(zip(onsets, walk, strict=True)):
                idx = int(np.clip(idx + step, 0, len(scale) - 1))
                beat = start_beat + int(eighth) // 2
                pitch = scale[idx]
                chord = chord_at.get(beat)
                if chord is not None and eighth % 2 == 0:
                    pitch = _nearest_chord_tone(pitch, plan.key + chord.degree, chord.quality)
                gap = (onsets[n + 1] if n + 1 < len(onsets) else 16) - eighth
                score.lead.append(
                    Note(
                        start=clock.eighth(start_beat, int(eighth)),
                        dur=round(min(gap / 2 - 0.1, 2.0) * clock.beat_s * 8) / 8,
                        midi=pitch,
                        vel=float(rng.uniform(0.5, 0.75)),
                    )
                )


def _nearest_chord_tone(pitch: int, root: int, quality: str) -> int:
    """Snap a melody note on a strong beat to the closest tone of the sounding chord."""
    pcs = {(root + i) % 12 for i in QUALITIES[quality]}
    for d in (0, -1, 1, -2, 2):
        if (pitch + d) % 12 in pcs:
            return pitch + d
    return pitch

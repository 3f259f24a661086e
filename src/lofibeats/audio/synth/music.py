"""The musical plan of each built-in track: tempo, swing, key, chord progression and sound settings.

Every choice is drawn from the corpus seed, and tempos, keys and progressions are spread across the
tracks (stratified, then shuffled) so no two tracks of a corpus share them and a validation split
is not a copy of the training split.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

NOTE_NAMES = ("C", "Db", "D", "Eb", "E", "F", "Gb", "G", "Ab", "A", "Bb", "B")
BPM_RANGE = (70.0, 90.0)
SWING_RANGE = (0.55, 0.65)

# Chord qualities as semitones above the chord root.
QUALITIES: dict[str, tuple[int, ...]] = {
    "maj7": (0, 4, 7, 11),
    "maj9": (0, 4, 7, 11, 14),
    "m7": (0, 3, 7, 10),
    "m9": (0, 3, 7, 10, 14),
    "m11": (0, 3, 7, 10, 14, 17),
    "7": (0, 4, 7, 10),
    "9": (0, 4, 7, 10, 14),
    "13": (0, 4, 10, 14, 21),
    "7b9": (0, 4, 7, 10, 13),
    "m7b5": (0, 3, 6, 10),
}

PENTATONIC = {"major": (0, 2, 4, 7, 9), "minor": (0, 3, 5, 7, 10)}


@dataclass(frozen=True)
class Chord:
    degree: int  # root, in semitones above the key's tonic
    quality: str
    beats: int


def _prog(*chords: tuple[int, str, int]) -> tuple[Chord, ...]:
    return tuple(Chord(*c) for c in chords)


# name -> (mode, chords); every progression spans 16 beats (four bars of 4/4).
PROGRESSIONS: dict[str, tuple[str, tuple[Chord, ...]]] = {
    "ii-V-I": ("major", _prog((2, "m9", 4), (7, "13", 4), (0, "maj9", 8))),
    "I-vi-ii-V": ("major", _prog((0, "maj7", 4), (9, "m7", 4), (2, "m9", 4), (7, "9", 4))),
    "iii-vi-ii-V": ("major", _prog((4, "m7", 4), (9, "m9", 4), (2, "m7", 4), (7, "7b9", 4))),
    "IV-III-vi-v-I": (
        "major",
        _prog((5, "maj7", 4), (4, "7", 4), (9, "m9", 4), (7, "m7", 2), (0, "9", 2)),
    ),
    "vi-ii-V-I": ("major", _prog((9, "m9", 4), (2, "m9", 4), (7, "13", 4), (0, "maj7", 4))),
    "Imaj9-IVmaj9": ("major", _prog((0, "maj9", 4), (5, "maj9", 4), (0, "maj7", 4), (5, "9", 4))),
    "i-iv-VII-III": ("minor", _prog((0, "m9", 4), (5, "m9", 4), (10, "9", 4), (3, "maj7", 4))),
    "ii-V-i minor": ("minor", _prog((2, "m7b5", 4), (7, "7b9", 4), (0, "m11", 8))),
}

KICK_PATTERNS = ((0, 5), (0, 3, 4), (0, 4, 7), (0, 5, 7))  # eighth-note positions in a bar
COMP_PATTERNS = (  # (eighth offset from the chord's start, length in beats); -1 = anticipation
    ((0, 3.6),),
    ((0, 1.3), (3, 2.2)),
    ((-1, 1.6), (4, 1.5)),
    ((0, 1.8), (5, 1.1)),
)
BASS_PATTERNS = (  # (eighth offset, length in beats, which note)
    ((0, 1.7, "root"), (4, 1.5, "fifth")),
    ((0, 1.2, "root"), (3, 0.4, "root"), (4, 1.3, "octave"), (7, 0.4, "approach")),
    ((0, 3.5, "root"),),
    ((0, 0.9, "root"), (2, 0.4, "root"), (5, 1.0, "fifth"), (7, 0.4, "approach")),
)


@dataclass(frozen=True)
class KitParams:
    kick_hz: float  # where the kick's pitch sweep ends
    kick_decay: float  # seconds
    snare_hz: float  # body tone
    snare_decay: float
    rim: bool  # a rim click instead of a snare on 2 and 4
    hat_decay: float
    hat_hz: float  # hat noise high-pass corner (capped below Nyquist)


@dataclass(frozen=True)
class KeysParams:
    detune_cents: float  # the two electric-piano voices are detuned by +/- this
    fm_index: float  # brightness of the attack (FM modulation index)
    decay: float  # seconds, at middle C
    tine: float  # level of the high, fast-decaying tine partial
    tremolo_hz: float
    tremolo_depth: float
    strum: float  # seconds between successive chord notes


@dataclass(frozen=True)
class TapeParams:
    wow_hz: float
    wow_cents: float
    flutter_hz: float
    flutter_cents: float
    cutoff_hz: float  # low-pass corner
    drive: float  # soft-saturation drive (1 = nearly clean)
    crackles_per_s: float
    hiss_db: float  # hiss RMS relative to the music RMS


@dataclass(frozen=True)
class TrackPlan:
    seed: int
    index: int
    bpm: float
    swing: float  # where the off-beat eighth falls inside the beat (0.5 = straight)
    key: int  # tonic pitch class, 0 = C
    progression: str
    kick_pattern: int
    comp_pattern: int
    bass_pattern: int
    keys_low: int  # lowest MIDI note of the chord voicings
    kit: KitParams
    keys: KeysParams
    tape: TapeParams

    @property
    def mode(self) -> str:
        return PROGRESSIONS[self.progression][0]

    @property
    def chords(self) -> tuple[Chord, ...]:
        return PROGRESSIONS[self.progression][1]

    @property
    def key_name(self) -> str:
        return NOTE_NAMES[self.key] + ("m" if self.mode == "minor" else "")


def plan_corpus(tracks: int, seed: int) -> list[TrackPlan]:
    """One plan per track; the spread of tempos, keys and progressions depends on `seed` only."""
    rng = np.random.default_rng([seed])
    tempo_slots = rng.permutation(tracks)
    keys = rng.permutation(12)
    names = list(PROGRESSIONS)
    progressions = rng.permutation(len(names))
    lo, hi = BPM_RANGE
    plans = []
    for i in range(tracks):
        r = np.random.default_rng([seed, i])
        # Stratified tempo: each track owns a slot of the range and sits near its middle.
        bpm = lo + (hi - lo) * (tempo_slots[i] + 0.5 + r.uniform(-0.3, 0.3)) / tracks
        plans.append(
            TrackPlan(
                seed=seed,
                index=i,
                bpm=round(float(bpm), 2),
                swing=round(float(r.uniform(*SWING_RANGE)), 3),
                key=int(keys[i % 12]),
                progression=names[int(progressions[i % len(names)])],
                kick_pattern=int(r.integers(len(KICK_PATTERNS))),
                comp_pattern=int(r.integers(len(COMP_PATTERNS))),
                bass_pattern=int(r.integers(len(BASS_PATTERNS))),
                keys_low=int(r.integers(52, 58)),
                kit=KitParams(
                    kick_hz=float(r.uniform(45, 60)),
                    kick_decay=float(r.uniform(0.16, 0.3)),
                    snare_hz=float(r.uniform(170, 230)),
                    snare_decay=float(r.uniform(0.07, 0.14)),
                    rim=bool(r.random() < 0.3),
                    hat_decay=float(r.uniform(0.025, 0.05)),
                    hat_hz=float(r.uniform(4000, 6500)),
                ),
                keys=KeysParams(
                    detune_cents=float(r.uniform(3, 9)),
                    fm_index=float(r.uniform(1.2, 2.4)),
                    decay=float(r.uniform(1.2, 2.5)),
                    tine=float(r.uniform(0.1, 0.3)),
                    tremolo_hz=float(r.uniform(3.5, 5.5)),
                    tremolo_depth=float(r.uniform(0.05, 0.2)),
                    strum=float(r.uniform(0.004, 0.02)),
                ),
                tape=TapeParams(
                    wow_hz=float(r.uniform(0.3, 0.8)),
                    wow_cents=float(r.uniform(5, 14)),
                    flutter_hz=float(r.uniform(5, 9)),
                    flutter_cents=float(r.uniform(1.5, 4)),
                    cutoff_hz=float(r.uniform(3000, 6000)),
                    drive=float(r.uniform(1.2, 2.2)),
                    crackles_per_s=float(r.uniform(4, 14)),
                    hiss_db=float(r.uniform(-38, -30)),
                ),
            )
        )
    return plans


def chord_midi(key: int, chord: Chord, low: int) -> list[int]:
    """A close, rootless (when the chord has 4+ other tones) voicing in [low, low + 12)."""
    intervals = [i for i in QUALITIES[chord.quality] if i != 0]
    if len(intervals) < 3:
        intervals = list(QUALITIES[chord.quality])
    root = key + chord.degree
    return sorted(low + (root + i - low) % 12 for i in intervals)


def bass_midi(key: int, chord: Chord) -> int:
    """The chord root in the bass register (MIDI 33-44, A1 to G#2)."""
    return 33 + (key + chord.degree - 33) % 12


def midi_to_hz(midi: float) -> float:
    return 440.0 * 2.0 ** ((midi - 69) / 12)

"""The built-in procedural lofi corpus: swung drums, jazzy electric-piano chords, bass, a sparse
melody, vinyl crackle and hiss, tape wow and flutter, a gentle low-pass and soft saturation.

Everything is deterministic from a seed and vectorised with numpy; see
:func:`render_builtin_corpus`.
"""

from lofibeats.audio.synth.corpus import (
    SYNTH_VERSION,
    builtin_corpus_dir,
    corpus_stamp,
    render_builtin_corpus,
)
from lofibeats.audio.synth.music import TrackPlan, plan_corpus
from lofibeats.audio.synth.render import render_track

__all__ = [
    "SYNTH_VERSION",
    "TrackPlan",
    "builtin_corpus_dir",
    "corpus_stamp",
    "plan_corpus",
    "render_builtin_corpus",
    "render_track",
]

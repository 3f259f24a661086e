"""Render docs/corpus_spectrogram.png: the first 10 s of the default built-in corpus' first track.

The corpus settings are read from conf/data/default.yaml (data.builtin), so the figure shows what
`python train.py` trains on. Run from anywhere: `python docs/render_corpus_figure.py`.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import soundfile as sf
from omegaconf import OmegaConf

from lofibeats.audio.spectrogram import save_spectrogram_png
from lofibeats.audio.synth import STAMP_NAME, render_builtin_corpus

ROOT = Path(__file__).resolve().parent.parent
SECONDS_SHOWN = 10.0


def main() -> Path:
    builtin = OmegaConf.load(ROOT / "conf" / "data" / "default.yaml").builtin
    with tempfile.TemporaryDirectory() as tmp:
        paths = render_builtin_corpus(
            Path(tmp),
            int(builtin.tracks),
            float(builtin.seconds),
            int(builtin.sr),
            int(builtin.seed),
        )
        audio, sr = sf.read(paths[0], dtype="float32", frames=round(SECONDS_SHOWN * builtin.sr))
        stamp = json.loads((paths[0].parent / STAMP_NAME).read_text(encoding="utf-8"))
    track = stamp["tracks"][0]
    title = (
        f"built-in corpus, track 1 of {builtin.tracks}: {track['bpm']:g} BPM, swing {track['swing']:.0%}, "
        f"{track['key']} {track['progression']}"
    )
    return save_spectrogram_png(audio, sr, ROOT / "docs" / "corpus_spectrogram.png", title=title)


if __name__ == "__main__":
    print(main())

"""The built-in corpus on disk: one folder per settings, WAVs written atomically, a stamp last."""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf

from lofibeats.audio.synth.music import plan_corpus
from lofibeats.audio.synth.render import render_track
from lofibeats.errors import ConfigError

SYNTH_VERSION = 1  # bump whenever the rendered audio changes, so old folders are re-rendered
MIN_SR = 4000


def builtin_corpus_dir(out_dir: Path, tracks: int, seconds: float, sr: int, seed: int) -> Path:
    """The settings-specific folder under `out_dir` that holds one rendering of the corpus."""
    return Path(out_dir) / f"t{tracks}-s{seconds:g}-sr{sr}-seed{seed}"


def corpus_stamp(folder: Path) -> Path:
    """The stamp of a rendering: beside its folder (`<folder>.json`), not in it, so the folder
    holds only the audio that `prepare` reads."""
    return folder.with_name(f"{folder.name}.json")


def render_builtin_corpus(
    out_dir: Path, tracks: int, seconds: float, sr: int, seed: int
) -> list[Path]:
    """Render the procedural lofi corpus once and return its WAV paths, in track order.

    The tracks go to :func:`builtin_corpus_dir` (so different settings never clobber each other)
    as 16-bit mono WAVs. The same arguments always give the same bytes. The folder counts as
    complete only when its stamp (`corpus_stamp`: settings, synth version, per-track tempo, swing,
    key and progression) matches and every file it lists is present at its recorded size; then this
    returns at once. Otherwise everything is rendered again. Each WAV is written to a temporary
    name and renamed, and the stamp is written last, so a crash or a concurrent call never leaves
    a folder that looks complete but is not.
    """
    _check(tracks, seconds, sr, seed)
    folder = builtin_corpus_dir(out_dir, tracks, seconds, sr, seed)
    settings = {"tracks": tracks, "seconds": float(seconds), "sr": sr, "seed": seed}
    done = _complete_tracks(folder, settings)
    if done is not None:
        return done

    folder.mkdir(parents=True, exist_ok=True)
    corpus_stamp(folder).unlink(missing_ok=True)
    entries: list[dict[str, Any]] = []
    for plan in plan_corpus(tracks, seed):
        path = folder / f"lofi-{plan.index:03d}.wav"
        _write_wav_atomic(path, render_track(plan, seconds, sr), sr)
        entries.append(
            {
                "file": path.name,
                "bytes": path.stat().st_size,
                "bpm": plan.bpm,
                "swing": plan.swing,
                "key": plan.key_name,
                "progression": plan.progression,
                "plan": asdict(plan),
            }
        )
    stamp = {"synth_version": SYNTH_VERSION, "settings": settings, "tracks": entries}
    _write_bytes_atomic(corpus_stamp(folder), json.dumps(stamp, indent=1).encode("utf-8"))
    return [folder / e["file"] for e in entries]


def _check(tracks: int, seconds: float, sr: int, seed: int) -> None:
    if isinstance(tracks, bool) or not isinstance(tracks, int) or tracks < 1:
        raise ConfigError(
            f"data.builtin.tracks={tracks!r}: give a whole number of tracks, at least 1"
        )
    if not isinstance(seconds, int | float) or not seconds > 0:
        raise ConfigError(
            f"data.builtin.seconds={seconds!r}: give a track length in seconds, above 0"
        )
    if isinstance(sr, bool) or not isinstance(sr, int) or sr < MIN_SR:
        raise ConfigError(
            f"data.builtin.sr={sr!r}: give a whole sample rate of at least {MIN_SR} Hz"
        )
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ConfigError(f"data.builtin.seed={seed!r}: give a whole number >= 0")


def _complete_tracks(folder: Path, settings: dict[str, Any]) -> list[Path] | None:
    """The WAV paths if `folder` holds a finished rendering with these settings, else None."""
    try:
        stamp = json.loads(corpus_stamp(folder).read_text(encoding="utf-8"))
        if stamp["synth_version"] != SYNTH_VERSION or stamp["settings"] != settings:
            return None
        paths = [(folder / e["file"], e["bytes"]) for e in stamp["tracks"]]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if len(paths) != settings["tracks"]:
        return None
    for path, size in paths:
        if not path.is_file() or path.stat().st_size != size:
            return None
    return [path for path, _ in paths]


def _write_wav_atomic(path: Path, audio: np.ndarray, sr: int) -> None:
    pcm = np.round(np.clip(audio, -1.0, 1.0) * 32767).astype(np.int16)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=".tmp")
    os.close(fd)
    try:
        sf.write(tmp, pcm, sr, format="WAV", subtype="PCM_16")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _write_bytes_atomic(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise

"""prepare with bad input: every bad file is skipped with its reason and nothing else is lost."""

from __future__ import annotations

import io
import os
import struct
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from rich.console import Console

from lofibeats.data.scan import scan_audio
from lofibeats.errors import DataError

from helpers import RAW_SR, check_cache, prepare, tone, write_tone


def symlink(link: Path, target: Path) -> None:
    try:
        os.symlink(target, link, target_is_directory=target.is_dir())
    except (OSError, NotImplementedError):
        pytest.skip("this platform/user cannot create symlinks")


def wav_with_codec(path: Path, format_tag: int) -> None:
    """A RIFF/WAVE container whose audio uses a codec libsndfile does not know (FFmpeg decodes
    some of those, e.g. WMA 0x0161: give a tag neither knows)."""
    fmt = struct.pack("<HHIIHHH", format_tag, 2, 44100, 176400, 4, 16, 0)
    data = bytes(4000)
    body = (
        b"WAVE"
        + b"fmt "
        + struct.pack("<I", len(fmt))
        + fmt
        + b"data"
        + struct.pack("<I", len(data))
        + data
    )
    path.write_bytes(b"RIFF" + struct.pack("<I", len(body)) + body)


def truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def test_bad_files_are_skipped_with_a_reason_and_valid_audio_is_all_kept(tmp_path: Path):
    raw = tmp_path / "raw"
    bad = raw / "bad ñame"
    bad.mkdir(parents=True)
    (bad / "empty.wav").write_bytes(b"")
    truncate(write_tone(bad / "cut off.wav", 1.0))
    truncate(write_tone(bad / "cut.flac", 1.0))
    (bad / "notes.wav").write_text("this is a text file, not audio\n")
    wav_with_codec(bad / "odd codec.wav", 0x1234)
    sf.write(bad / "one sample.wav", np.zeros((1, 1), np.float32) + 0.5, RAW_SR)
    sf.write(bad / "silence.flac", np.zeros((RAW_SR, 2), np.float32), RAW_SR)
    symlink(raw / "loop", raw)

    good = {"good.wav": 0.5, "six ch 96k.wav": 0.4, "nan ünï.wav": 0.6}
    write_tone(raw / "good.wav", 0.5)
    write_tone(raw / "six ch 96k.wav", 0.4, sr=96000, channels=6, subtype="PCM_24")
    nan = tone(0.6)
    nan[100:150] = np.nan
    nan[200] = np.inf
    nan[300] = -np.inf
    sf.write(raw / "nan ünï.wav", nan, RAW_SR, subtype="FLOAT")

    report = prepare(raw, tmp_path / "cache", rates=(8000, 16000))

    reasons = {s.path: s.reason for s in report.skipped}
    expected = {
        "bad ñame/empty.wav": "empty file (0 bytes)",
        "bad ñame/cut off.wav": "truncated: header promises",
        "bad ñame/cut.flac": "truncated",
        "bad ñame/notes.wav": "not a recognised audio format",
        "bad ñame/odd codec.wav": "cannot decode: unsupported codec",
        "bad ñame/one sample.wav": "too short: 1 samples",
        "bad ñame/silence.flac": "silent",
        "loop": "symlink loop",
    }
    assert sorted(reasons) == sorted(expected)
    for path, start in expected.items():
        assert start in reasons[path], (path, reasons[path])
    assert report.kept == 3
    assert report.warnings == ["nan ünï.wav: 52 NaN/inf samples replaced by silence"]
    console = Console(record=True, width=200, file=io.StringIO())
    console.print(report.summary())
    summary = console.export_text()
    for path, reason in reasons.items():
        assert path in summary and reason in summary
    for sr in (8000, 16000):
        manifest = check_cache(tmp_path / "cache" / f"sr{sr}")
        assert {s.path: s.reason for s in manifest.skipped} == reasons
        assert sorted(s.path for s in manifest.sources) == sorted(good)
        assert manifest.total_seconds == pytest.approx(sum(good.values()), abs=1.5 / sr)
        by_path = {s.path: s for s in manifest.sources}
        assert by_path["six ch 96k.wav"].samples == round(0.4 * sr)


def test_symlinked_folders_and_files_are_followed_once(tmp_path: Path):
    outside = tmp_path / "elsewhere"
    write_tone(outside / "linked.wav")
    raw = tmp_path / "raw"
    write_tone(raw / "a" / "real.wav")
    symlink(raw / "b", outside)  # a folder outside raw_dir: followed
    symlink(raw / "again", raw / "a")  # the same folder twice: scanned once
    symlink(raw / "a" / "up", raw)  # a loop
    symlink(raw / "copy.wav", raw / "a" / "real.wav")  # the same file twice: kept once
    symlink(raw / "gone.wav", tmp_path / "missing.wav")  # broken
    if hasattr(os, "mkfifo"):
        os.mkfifo(raw / "pipe.wav")  # opening it would block forever

    scan = scan_audio(raw)
    assert [f.rel for f in scan.files] == ["a/real.wav", "b/linked.wav"]
    reasons = {s.path: s.reason for s in scan.skipped}
    assert reasons["a/up"].startswith("symlink loop")
    assert reasons["again"].startswith("same folder as a")
    assert reasons["copy.wav"].startswith("same file as a/real.wav")
    assert reasons["gone.wav"] == "broken symlink"
    assert reasons.get("pipe.wav", "not a regular file") == "not a regular file"


def test_missing_empty_or_all_bad_folders_raise_one_line_naming_the_folder(tmp_path: Path):
    with pytest.raises(DataError, match="does not exist") as missing:
        prepare(tmp_path / "nope", tmp_path / "cache")
    empty = tmp_path / "empty"
    (empty / "sub").mkdir(parents=True)
    (empty / "sub" / "readme.md").write_text("no audio here")
    with pytest.raises(DataError, match="no audio files") as no_audio:
        prepare(empty, tmp_path / "cache")
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "x.wav").write_bytes(b"")
    (bad / "y.mp3").write_text("text")
    with pytest.raises(DataError, match="no valid audio") as all_bad:
        prepare(bad, tmp_path / "cache")
    for error, folder in ((missing, "nope"), (no_audio, "empty"), (all_bad, "bad")):
        message = str(error.value)
        assert str(tmp_path / folder) in message and "\n" not in message
    assert "x.wav: empty file" in str(all_bad.value)

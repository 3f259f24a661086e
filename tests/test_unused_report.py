"""Nothing dropped silently: every file prepare does not use is listed by path with its reason,
the first few on screen, all of them in `cache_dir/unused-files.tsv`, and the screen says where."""

from __future__ import annotations

import io
from pathlib import Path

from rich.console import Console

from lofibeats.data.report import MAX_LISTED, UNUSED_NAME, read_unused_list
from lofibeats.data.scan import scan_audio

from helpers import prepare, write_tone


def screen(report) -> str:
    console = Console(record=True, width=400, file=io.StringIO())
    console.print(report.summary())
    return console.export_text()


def test_every_unused_file_is_listed_with_its_reason_and_the_screen_says_where(tmp_path: Path):
    raw = tmp_path / "music"
    write_tone(raw / "good.wav")
    write_tone(raw / "album" / "good too.flac")
    (raw / "album" / "cover.JPG").write_bytes(b"\xff\xd8\xff")
    (raw / "album" / "tracks.cue").write_text("FILE x")
    (raw / "README").write_text("no extension")
    (raw / "loop.xyz").write_bytes(b"\0" * 10)
    (raw / "song.mid").write_bytes(b"MThd")
    (raw / "odd\tname.txt").write_text("a tab in the name")
    (raw / ".DS_Store").write_bytes(b"\0")
    (raw / ".git").mkdir()
    (raw / ".git" / "HEAD").write_text("ref")
    (raw / "broken.mp3").write_text("text, not mp3")
    (raw / "empty.m4a").write_bytes(b"")

    report = prepare(raw, tmp_path / "cache")

    expected = {
        "broken.mp3": "not a recognised audio format",
        "empty.m4a": "empty file (0 bytes)",
        ".DS_Store": "hidden file",
        ".git/": "hidden folder: not scanned",
        "README": "no extension",
        "album/cover.JPG": "not audio: image",
        "album/tracks.cue": "not audio: playlist or cue sheet",
        "loop.xyz": "unknown extension .xyz",
        "odd\tname.txt": "not audio: text or document",
        "song.mid": "not audio: MIDI",
    }
    assert report.kept == 2
    listed = dict(read_unused_list(tmp_path / "cache" / UNUSED_NAME))
    assert report.unused_list == tmp_path / "cache" / UNUSED_NAME
    assert sorted(listed) == sorted(expected)
    for path, start in expected.items():
        assert listed[path].startswith(start), (path, listed[path])
    assert [e.path for e in report.unused][:2] == ["broken.mp3", "empty.m4a"]  # audio first

    text = screen(report)
    assert (
        f"10 files not used: 2 skipped, 8 ignored (all listed with reasons in {report.unused_list})"
        in " ".join(text.split())
    )
    for path, reason in listed.items():
        assert path.replace("\t", " ") in text or "\t" in path
        assert reason.split(":")[0] in text


def test_the_screen_shows_the_first_few_and_the_file_has_them_all(tmp_path: Path):
    raw = tmp_path / "samples"
    write_tone(raw / "kick.wav")
    for i in range(40):
        (raw / f"preset {i:02d}.fxp").write_bytes(b"x")

    report = prepare(raw, tmp_path / "cache")

    text = screen(report)
    assert "preset 00.fxp" in text and f"preset {MAX_LISTED - 1:02d}.fxp" in text
    assert f"preset {MAX_LISTED:02d}.fxp" not in text
    assert f"and {40 - MAX_LISTED} more" in text
    listed = read_unused_list(report.unused_list)
    assert [p for p, _ in listed] == [f"preset {i:02d}.fxp" for i in range(40)]


def test_a_rerun_keeps_the_list_current(tmp_path: Path):
    raw = tmp_path / "music"
    write_tone(raw / "a.wav")
    (raw / "notes.txt").write_text("x")
    prepare(raw, tmp_path / "cache")
    (raw / "notes.txt").unlink()
    again = prepare(raw, tmp_path / "cache")
    assert read_unused_list(again.unused_list) == []
    assert "every file used" in again.headline()


def test_the_scan_reports_progress_and_counts_every_entry(tmp_path: Path):
    for i in range(30):
        (tmp_path / f"d{i % 3}").mkdir(exist_ok=True)
        (tmp_path / f"d{i % 3}" / f"{i}.wav").write_bytes(b"RIFF")
    seen: list[int] = []
    scan = scan_audio(tmp_path, seen.append)
    assert scan.entries == 33 and len(scan.files) == 30
    assert seen and seen[-1] == 33

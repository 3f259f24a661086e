"""Find the audio files under a folder, following folder symlinks safely, and hash their content.

The walk is sorted (so results do not depend on the file system's order) and remembers every real
folder it entered: a symlink back to an ancestor (a loop) or to a folder already scanned is
skipped with a reason instead of being walked again, and so is a second link to the same file.

Nothing is dropped silently: every file that is not a candidate for decoding (hidden, not audio,
an unknown extension, a broken link...) is listed in :attr:`ScanResult.ignored` with its reason,
and hidden folders are listed once (not walked).

Speed (a sample library holds tens of thousands of files): only audio files, folders and symlinks
are stat'ed; every other file is judged by its name and the type `os.scandir` already read, so a
scan costs about what a bare `os.scandir` walk costs plus one `stat` per audio file
(`benchmarks/scan.py`). `progress` is called with the number of entries seen so far, at most
every `PROGRESS_SECONDS`, so a progress display can start at once.
"""

from __future__ import annotations

import hashlib
import operator
import os
import stat
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

from lofibeats.audio.decode import AUDIO_EXTENSIONS
from lofibeats.data.manifest import SkippedEntry

HASH_CHUNK = 1 << 20
_NAME = operator.attrgetter("name")
_POSIX = os.name == "posix"
PROGRESS_SECONDS = 0.1

# Files a music folder commonly holds besides audio, so their reason can say what they are.
_NOT_AUDIO = {
    "image": ".jpg .jpeg .png .gif .bmp .webp .tif .tiff .heic .ico .svg",
    "text or document": ".txt .md .pdf .nfo .log .rtf .doc .docx .odt .html .htm .json .xml "
    ".csv .yaml .yml .ini .url",
    "playlist or cue sheet": ".m3u .m3u8 .pls .cue .xspf .wpl",
    "checksum": ".sfv .md5 .ffp .accurip .sha1 .sha256",
    "archive": ".zip .rar .7z .tar .gz .tgz .bz2 .xz",
    "MIDI (notes, not sound)": ".mid .midi .kar",
    "project or preset of a music program": ".als .alp .flp .rpp .ptx .cpr .logicx .band "
    ".fxp .fxb .nki .nkm .exs .sfz .sf2 .adg .adv",
    "database or system file": ".db .lnk .torrent .part .tmp .bak .lock",
}
NOT_AUDIO = {ext: kind for kind, exts in _NOT_AUDIO.items() for ext in exts.split()}


class AudioCandidate(NamedTuple):
    rel: str  # relative to the scanned folder, POSIX separators
    fspath: str  # where it is (a str: building 20,000 Paths would double the scan's time)
    size: int
    mtime_ns: int

    @property
    def path(self) -> Path:
        return Path(self.fspath)


@dataclass
class ScanResult:
    files: list[AudioCandidate] = field(default_factory=list)
    skipped: list[SkippedEntry] = field(default_factory=list)  # audio by name, refused by the scan
    ignored: list[SkippedEntry] = field(default_factory=list)  # not audio: never read
    entries: int = 0  # every file and folder seen


def not_audio_reason(name: str) -> str:
    """Why a file with this (non-hidden) name is not read as audio."""
    ext = os.path.splitext(name)[1].lower()
    if not ext:
        return "no extension: not read (audio files need one, e.g. .wav, .flac, .mp3, .m4a)"
    kind = NOT_AUDIO.get(ext)
    if kind is not None:
        return f"not audio: {kind}"
    return f"unknown extension {ext}: not an audio format prepare reads"


def scan_audio(root: Path, progress: Callable[[int], None] | None = None) -> ScanResult:
    """Every audio file under `root` (recursively); everything else with its reason."""
    result = ScanResult()
    root_stat = os.stat(root)
    root_key = (root_stat.st_dev, root_stat.st_ino)
    walker = _Walker(result, progress)
    walker.seen_dirs[root_key] = ""
    walker.walk(os.fspath(root), "", [root_key])
    if progress is not None:
        progress(result.entries)
    return result


class _Walker:
    def __init__(self, result: ScanResult, progress: Callable[[int], None] | None):
        self.result = result
        self.progress = progress
        self.next_report = time.monotonic() + PROGRESS_SECONDS
        self.seen_dirs: dict[tuple[int, int], str] = {}
        self.seen_files: dict[tuple[int, int], str] = {}

    def walk(self, folder: str, prefix: str, ancestors: list[tuple[int, int]]) -> None:
        result = self.result
        files, skipped, ignored = result.files, result.skipped, result.ignored
        try:
            with os.scandir(folder) as it:
                entries = sorted(it, key=_NAME)
        except OSError as exc:
            skipped.append(
                SkippedEntry(prefix or ".", f"cannot list folder: {exc.strerror or exc}")
            )
            return
        result.entries += len(entries)
        if self.progress is not None and time.monotonic() >= self.next_report:
            self.progress(result.entries)
            self.next_report = time.monotonic() + PROGRESS_SECONDS
        audio_exts, not_audio = AUDIO_EXTENSIONS, not_audio_reason
        for entry in entries:
            name = entry.name
            rel = prefix + name
            if name[0] == ".":
                if _is_dir(entry):
                    ignored.append(SkippedEntry(rel + "/", "hidden folder: not scanned"))
                else:
                    ignored.append(SkippedEntry(rel, "hidden file"))
                continue
            dot = name.rfind(".")  # the name does not start with "."
            audio = dot > 0 and name[dot:].lower() in audio_exts
            try:
                link = entry.is_symlink()
                plain_file = not link and not audio and not entry.is_dir()
            except OSError:
                link, plain_file = False, False
            if plain_file:
                ignored.append(SkippedEntry(rel, not_audio(name)))  # judged by name: no stat
                continue
            path = entry.path
            try:
                # follows symlinks; on Windows DirEntry.stat() has no inode, os.stat() does
                st = entry.stat() if _POSIX else os.stat(path)
            except OSError as exc:
                reason = "broken symlink" if link else f"cannot read: {exc.strerror or exc}"
                (skipped if audio else ignored).append(SkippedEntry(rel, reason))
                continue
            key = (st.st_dev, st.st_ino)
            if stat.S_ISREG(st.st_mode):
                if not audio:
                    ignored.append(SkippedEntry(rel, not_audio(name)))
                elif key in self.seen_files:
                    skipped.append(
                        SkippedEntry(rel, f"same file as {self.seen_files[key]}: kept once")
                    )
                else:
                    self.seen_files[key] = rel
                    files.append(AudioCandidate(rel, path, st.st_size, st.st_mtime_ns))
            elif stat.S_ISDIR(st.st_mode):
                if key in ancestors:
                    skipped.append(
                        SkippedEntry(rel, "symlink loop: links back to a folder it is inside")
                    )
                elif key in self.seen_dirs:
                    skipped.append(
                        SkippedEntry(
                            rel, f"same folder as {self.seen_dirs[key] or '.'}: scanned once"
                        )
                    )
                else:
                    self.seen_dirs[key] = rel
                    self.walk(path, rel + "/", [*ancestors, key])
            elif audio:  # a pipe or device would block or never end
                skipped.append(SkippedEntry(rel, "not a regular file"))
            else:
                ignored.append(SkippedEntry(rel, "not a regular file"))


def _is_dir(entry: os.DirEntry) -> bool:
    try:
        return entry.is_dir()
    except OSError:
        return False


def content_hash(path: Path) -> str:
    """SHA-256 of the file's bytes, hex (fast where the CPU has SHA instructions)."""
    digest = hashlib.sha256()
    buf = bytearray(HASH_CHUNK)
    view = memoryview(buf)
    with open(path, "rb", buffering=0) as fh:
        while n := fh.readinto(buf):
            digest.update(view[:n])
    return digest.hexdigest()

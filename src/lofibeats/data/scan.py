"""Find the audio files under a folder, following folder symlinks safely, and hash their content.

The walk is sorted (so results do not depend on the file system's order) and remembers every real
folder it entered: a symlink back to an ancestor (a loop) or to a folder already scanned is
skipped with a reason instead of being walked again, and so is a second link to the same file.
Hidden files and folders (names starting with ".") and files with other extensions are ignored
quietly and only counted.
"""

from __future__ import annotations

import hashlib
import os
import stat
from dataclasses import dataclass, field
from pathlib import Path

from lofibeats.audio.decode import AUDIO_EXTENSIONS
from lofibeats.data.manifest import SkippedEntry

HASH_CHUNK = 1 << 20


@dataclass(frozen=True)
class AudioCandidate:
    rel: str  # relative to the scanned folder, POSIX separators
    path: Path
    size: int
    mtime_ns: int


@dataclass
class ScanResult:
    files: list[AudioCandidate] = field(default_factory=list)
    skipped: list[SkippedEntry] = field(default_factory=list)
    ignored: int = 0


def scan_audio(root: Path) -> ScanResult:
    """Every audio file under `root` (recursively); problems become `skipped` entries."""
    result = ScanResult()
    root_stat = root.stat()
    seen_dirs = {(root_stat.st_dev, root_stat.st_ino): ""}
    seen_files: dict[tuple[int, int], str] = {}
    _walk(root, "", [(root_stat.st_dev, root_stat.st_ino)], seen_dirs, seen_files, result)
    return result


def _walk(
    folder: Path,
    prefix: str,
    ancestors: list[tuple[int, int]],
    seen_dirs: dict[tuple[int, int], str],
    seen_files: dict[tuple[int, int], str],
    result: ScanResult,
) -> None:
    try:
        entries = sorted(os.scandir(folder), key=lambda e: e.name)
    except OSError as exc:
        result.skipped.append(
            SkippedEntry(prefix or ".", f"cannot list folder: {exc.strerror or exc}")
        )
        return
    for entry in entries:
        rel = f"{prefix}{entry.name}"
        if entry.name.startswith("."):
            result.ignored += not _is_dir(entry)
            continue
        audio = Path(entry.name).suffix.lower() in AUDIO_EXTENSIONS
        try:
            st = os.stat(entry.path)  # follows symlinks; DirEntry.stat() has no inode on Windows
        except OSError as exc:
            if entry.is_symlink():
                if audio:
                    result.skipped.append(SkippedEntry(rel, "broken symlink"))
                else:
                    result.ignored += 1
            elif audio:
                result.skipped.append(SkippedEntry(rel, f"cannot read: {exc.strerror or exc}"))
            else:
                result.ignored += 1
            continue
        key = (st.st_dev, st.st_ino)
        if stat.S_ISDIR(st.st_mode):
            if key in ancestors:
                result.skipped.append(
                    SkippedEntry(rel, "symlink loop: links back to a folder it is inside")
                )
            elif key in seen_dirs:
                result.skipped.append(
                    SkippedEntry(rel, f"same folder as {seen_dirs[key] or '.'}: scanned once")
                )
            else:
                seen_dirs[key] = rel
                _walk(Path(entry.path), f"{rel}/", [*ancestors, key], seen_dirs, seen_files, result)
        elif not audio:
            result.ignored += 1
        elif not stat.S_ISREG(st.st_mode):  # a pipe or device would block or never end
            result.skipped.append(SkippedEntry(rel, "not a regular file"))
        elif key in seen_files:
            result.skipped.append(SkippedEntry(rel, f"same file as {seen_files[key]}: kept once"))
        else:
            seen_files[key] = rel
            result.files.append(AudioCandidate(rel, Path(entry.path), st.st_size, st.st_mtime_ns))


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

"""The on-disk contract between `prepare` (writer) and the DataModule (reader).

`cache_dir/sr<RATE>/manifest.json` describes every source file seen under `raw_dir`:

```json
{
  "format_version": 1,
  "sr": 16000,
  "raw_dir": "/abs/path/to/raw",
  "settings": {...prepare settings: those that change the samples, val_fraction, shard_mb},
  "sources": [
    {"path": "album/track 1.flac",      # relative to raw_dir, POSIX separators
     "hash": "sha256-hex", "size": 123, "mtime_ns": 0,
     "seconds": 61.2,                   # duration of the kept audio at `sr`
     "samples": 979200,
     "shard": "shard-0001.npy", "offset": 0,   # int16 samples [offset, offset+samples)
     "split": "train"}                  # "train" | "val"
  ],
  "skipped": [{"path": "broken.wav", "reason": "truncated: ...",
               "size": 123, "mtime_ns": 0, "hash": "sha256-hex"}],  # -1/"" when never read
  "shards": ["shard-0001.npy"]
}
```

Shards are 1-D int16 `.npy` arrays (full scale = 32767) holding one or more sources back to
back. Everything is written to a temporary name and renamed, so a reader never sees half a file.
"""

from __future__ import annotations

import contextlib
import json
import os
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from lofibeats.errors import DataError

FORMAT_VERSION = 1
MANIFEST_NAME = "manifest.json"


@dataclass
class SourceEntry:
    path: str
    hash: str
    size: int
    mtime_ns: int
    seconds: float
    samples: int
    shard: str
    offset: int
    split: str


@dataclass
class SkippedEntry:
    path: str
    reason: str
    # what the file was when it was judged, so an unchanged bad file is not decoded again
    size: int = -1
    mtime_ns: int = -1
    hash: str = ""


@dataclass
class Manifest:
    sr: int
    raw_dir: str
    settings: dict[str, Any] = field(default_factory=dict)
    sources: list[SourceEntry] = field(default_factory=list)
    skipped: list[SkippedEntry] = field(default_factory=list)
    shards: list[str] = field(default_factory=list)
    format_version: int = FORMAT_VERSION

    @property
    def total_seconds(self) -> float:
        return sum(s.seconds for s in self.sources)

    def split(self, name: str) -> list[SourceEntry]:
        return [s for s in self.sources if s.split == name]

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Manifest:
        return cls(
            sr=int(data["sr"]),
            raw_dir=str(data["raw_dir"]),
            settings=dict(data.get("settings", {})),
            sources=[SourceEntry(**s) for s in data.get("sources", [])],
            skipped=[SkippedEntry(**s) for s in data.get("skipped", [])],
            shards=list(data.get("shards", [])),
            format_version=int(data.get("format_version", 0)),
        )

    @classmethod
    def load(cls, sr_dir: Path) -> Manifest:
        """Read `sr_dir/manifest.json`; a missing, unreadable or old-format file is a DataError."""
        path = Path(sr_dir) / MANIFEST_NAME
        if not path.is_file():
            raise DataError(
                f"no manifest at {path}: run `python prepare.py` (or train, which prepares)"
            )
        try:
            manifest = cls.from_json(json.loads(path.read_text(encoding="utf-8")))
        except (ValueError, KeyError, TypeError) as exc:
            raise DataError(
                f"corrupt manifest {path} ({exc}): delete {path.parent} and prepare again"
            ) from None
        if manifest.format_version != FORMAT_VERSION:
            raise DataError(
                f"{path} has format version {manifest.format_version}, this code reads "
                f"{FORMAT_VERSION}: delete {path.parent} and prepare again"
            )
        return manifest

    def save(self, sr_dir: Path) -> None:
        """Write atomically: a temp file in the same folder, then rename over the old one."""
        write_text_atomic(Path(sr_dir) / MANIFEST_NAME, json.dumps(self.to_json(), indent=1))


def write_text_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    # not mkstemp: its files are private (0600); this one gets the umask's permissions
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:12]}.tmp")
    try:
        with open(tmp, "x", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
        if isinstance(exc, OSError) and exc.filename is None and exc.errno is not None:
            raise type(exc)(exc.errno, exc.strerror, str(path)) from exc  # name the file
        raise

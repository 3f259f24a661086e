"""Bring one `cache_dir/sr<RATE>/` up to date: reuse, pack, compact, manifest last, then delete.

Order of writes, so that a run killed at any point leaves the previous cache or the new one:
new shards go to new names (temp file + rename, `lofibeats.data.pack`), then the manifest is
replaced (temp file + rename), and only then are shards it no longer names deleted. The next run
deletes whatever a killed run left (temp files, shards no manifest names) before anything else.

Compaction: a shard whose live samples (those of sources still present) fall below half its size
is rewritten, as is any less-than-half-full shard whenever new audio was packed or another such
shard exists; a rerun with nothing changed therefore rewrites nothing.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from lofibeats.data.cache import remove_quietly, remove_stale_files
from lofibeats.data.manifest import MANIFEST_NAME, Manifest, SkippedEntry, SourceEntry
from lofibeats.data.pack import Piece, ShardPacker, next_shard_number, read_shard_header
from lofibeats.data.split import assign_splits
from lofibeats.errors import DataError

log = logging.getLogger(__name__)

COMPACT_LIVE_FRACTION = 0.5


class RateCache:
    """One sample rate's cache folder: what it already holds and how to bring it up to date."""

    def __init__(self, sr_dir: Path, sr: int, raw_dir: str, fingerprint: Mapping[str, Any]):
        self.dir = sr_dir
        self.sr = sr
        self.raw_dir = raw_dir
        self.previous = _load(sr_dir)
        remove_stale_files(sr_dir, self.previous.shards if self.previous else ())
        self._shards: dict[str, tuple[int, int]] = {}  # name -> (samples, data offset in bytes)
        self._entries: dict[str, SourceEntry | SkippedEntry] = {}
        self.repack_samples = 0  # reused samples `commit` rewrites (compaction), once it runs
        prev = self.previous
        if prev is None or prev.sr != sr or prev.raw_dir != raw_dir:
            return
        if any(prev.settings.get(key) != value for key, value in fingerprint.items()):
            return
        for name in prev.shards:
            try:
                self._shards[name] = read_shard_header(sr_dir / name)
            except DataError as exc:
                log.warning("%s: its sources will be prepared again", exc)
        for source in prev.sources:
            shard = self._shards.get(source.shard)
            if shard is not None and source.offset + source.samples <= shard[0]:
                self._entries[source.path] = source
        for skipped in prev.skipped:
            if skipped.size >= 0:
                self._entries[skipped.path] = skipped

    def lookup(self, rel: str) -> SourceEntry | SkippedEntry | None:
        """What this cache recorded for `rel` (only entries whose samples are still intact)."""
        return self._entries.get(rel)

    def packer(self, target_samples: int) -> ShardPacker:
        """A packer for this run's new shards, numbered after every shard that exists here."""
        names = [p.name for p in self.dir.glob("shard-*.npy")] if self.dir.is_dir() else []
        first = next_shard_number([*names, *(self.previous.shards if self.previous else ())])
        return ShardPacker(self.dir, first, target_samples)

    def commit(
        self,
        reused: Sequence[SourceEntry],
        new: Sequence[SourceEntry],
        skipped: Sequence[SkippedEntry],
        settings: Mapping[str, Any],
        val_fraction: float,
        packer: ShardPacker,
    ) -> Manifest:
        """Compact into `packer` (which holds `new`), finish it, write the manifest, clean up."""
        live: dict[str, int] = defaultdict(int)
        for entry in reused:
            live[entry.shard] += entry.samples
        repack = {
            name for name, n in live.items() if n < COMPACT_LIVE_FRACTION * self._shards[name][0]
        }
        small = [
            name for name, n in live.items() if name not in repack and 2 * n < packer.target_samples
        ]
        if len(small) >= 2 or (small and new):
            repack.update(small)

        self.repack_samples = sum(e.samples for e in reused if e.shard in repack)
        sources = [e for e in reused if e.shard not in repack] + list(new)
        for entry in sorted((e for e in reused if e.shard in repack), key=lambda e: e.path):
            data_offset = self._shards[entry.shard][1]
            piece = Piece(
                entry.path, entry.samples, self.dir / entry.shard, data_offset + 2 * entry.offset
            )
            shard, offset = packer.add(piece)
            sources.append(replace(entry, shard=shard, offset=offset))
        packer.finish()

        splits = assign_splits([s.path for s in sources], val_fraction)
        manifest = Manifest(
            sr=self.sr,
            raw_dir=self.raw_dir,
            settings=dict(settings),
            sources=sorted(
                (
                    s if s.split == splits[s.path] else replace(s, split=splits[s.path])
                    for s in sources
                ),
                key=lambda s: s.path,
            ),
            skipped=sorted(skipped, key=lambda s: s.path),
            shards=sorted({s.shard for s in sources}),
        )
        if manifest != self.previous:  # dataclass equality: ~50x faster than comparing JSON
            manifest.save(self.dir)
        for name in set(self.previous.shards if self.previous else ()) - set(manifest.shards):
            remove_quietly(self.dir / name)
        return manifest


def _load(sr_dir: Path) -> Manifest | None:
    """The manifest in `sr_dir`, or None when missing, corrupt or of another format version."""
    if not (sr_dir / MANIFEST_NAME).is_file():
        return None
    try:
        return Manifest.load(sr_dir)
    except DataError as exc:
        log.warning("%s (rebuilding it)", exc)
        return None

"""Read-only access to the int16 shards `prepare` writes, memory-mapped lazily in each process.

Pickling a :class:`ShardStore` sends only file names, so a spawned DataLoader worker never receives
samples: it opens its own maps on first use, and the OS pages the audio in and out. RAM therefore
does not grow with the corpus.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from lofibeats.data.manifest import SourceEntry
from lofibeats.errors import DataError

PCM_SCALE = np.float32(1.0 / 32768.0)


def pcm_to_float(pcm: np.ndarray) -> np.ndarray:
    """int16 samples -> float32 in [-1, 1) (int16 / 32768)."""
    out = pcm.astype(np.float32)
    out *= PCM_SCALE
    return out


@dataclass(frozen=True)
class Spans:
    """Where the sources of one split live: parallel arrays, one entry per source."""

    paths: tuple[str, ...]
    shard: np.ndarray  # index into ShardStore.names
    offset: np.ndarray  # first sample of the source inside its shard
    samples: np.ndarray  # length of the source

    @classmethod
    def from_entries(cls, entries: Sequence[SourceEntry], shard_names: Sequence[str]) -> Spans:
        index = {name: i for i, name in enumerate(shard_names)}
        unknown = sorted({e.shard for e in entries} - index.keys())
        if unknown:
            raise DataError(
                f"manifest names shard {unknown[0]!r} that it does not list: prepare again"
            )
        return cls(
            paths=tuple(e.path for e in entries),
            shard=np.array([index[e.shard] for e in entries], dtype=np.int64),
            offset=np.array([e.offset for e in entries], dtype=np.int64),
            samples=np.array([e.samples for e in entries], dtype=np.int64),
        )

    def __len__(self) -> int:
        return len(self.paths)

    @property
    def longest(self) -> int:
        return int(self.samples.max()) if len(self) else 0


class ShardStore:
    """The shards of one `cache_dir/sr<RATE>/` folder, each opened with `np.load(mmap_mode="r")`."""

    def __init__(self, sr_dir: Path, names: Sequence[str]):
        self.sr_dir = Path(sr_dir)
        self.names = tuple(names)
        self._maps: dict[int, np.memmap] = {}
        # plain ndarray views of the same maps: slicing an np.memmap costs ~4x more Python overhead
        self._views: dict[int, np.ndarray] = {}

    def shard(self, index: int) -> np.memmap:
        """The memory map of shard `index`, opened on first use in this process."""
        arr = self._maps.get(index)
        if arr is None:
            path = self.sr_dir / self.names[index]
            try:
                arr = np.load(path, mmap_mode="r", allow_pickle=False)
            except (OSError, ValueError) as exc:
                raise DataError(
                    f"cannot read shard {path} ({exc}): delete {self.sr_dir} and prepare again"
                ) from None
            if arr.dtype != np.int16 or arr.ndim != 1:
                raise DataError(
                    f"shard {path} holds {arr.dtype} {arr.shape}, not 1-D int16: "
                    f"delete {self.sr_dir} and prepare again"
                )
            self._maps[index] = arr
            self._views[index] = arr.view(np.ndarray)
        return arr

    def read(self, spans: Spans, source: int, start: int, length: int) -> np.ndarray:
        """int16 samples [start, start + length) of source `source` of `spans` (a view, no copy)."""
        index, at = int(spans.shard[source]), int(spans.offset[source]) + start
        view = self._views.get(index)
        if view is None:
            self.shard(index)
            view = self._views[index]
        return view[at : at + length]

    def check(self, spans: Spans) -> None:
        """Every source of `spans` lies inside its shard (reads only the .npy headers)."""
        for i, path in enumerate(spans.paths):
            shard = self.shard(int(spans.shard[i]))
            end = int(spans.offset[i] + spans.samples[i])
            if end > shard.shape[0]:
                raise DataError(
                    f"shard {self.sr_dir / self.names[int(spans.shard[i])]} ends at sample "
                    f"{shard.shape[0]} but source {path!r} needs {end}: delete {self.sr_dir} and prepare again"
                )

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_maps"], state["_views"] = {}, {}  # each process maps the files itself
        return state

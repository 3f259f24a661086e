"""Train batches whose rows walk through the audio: consecutive windows, for carried state.

In `data.mode=stream` each of the B rows of a batch reads the window right after the one it read
in the previous batch, so a model can carry its recurrent state from batch to batch (truncated
backpropagation through time) and hear everything since the row last restarted. A row restarts
at a random place of a random source (picked in proportion to length, like windowed training)
when its source ends or, on average every `segment` windows, at random (so rows decorrelate and
the model learns to start from nothing as well); the batch says which rows restarted (`reset`).

Batch g of a run is `(prev, next, reset)`: per row, prev = window g of its walk, next = window
g + 1, both `window` samples. A row's walk is a sequence of segments, each drawn from
(seed, rank, row, segment index) alone, so batch g is a function of g: any worker can build it,
and where a run stands is still (epoch, batch), the position `TrainLoader` saves for resume.
"""

from __future__ import annotations

import numpy as np
import torch

from lofibeats.data.shards import ShardStore, Spans, pcm_to_float
from lofibeats.data.windows import IndexedBatches, _locate, _valid_starts, require_length

StreamBatch = tuple[torch.Tensor, torch.Tensor, torch.Tensor]


class RowWalk:
    """One row's walk: segments of consecutive windows; segment j is drawn from its own seed."""

    def __init__(self, spans: Spans, window: int, segment: int, seed: tuple[int, ...]) -> None:
        self.spans, self.window, self.segment, self.seed = spans, window, segment, seed
        self.valid = _valid_starts(spans, 2 * window)  # a segment holds at least prev + next
        self._index, self._first = 0, 0  # the segment that covers walk step `_first` onwards
        self._current = self._draw(0)

    def _draw(self, j: int) -> tuple[int, int, int]:
        """Segment j: (source, start sample, windows it lasts as `prev`)."""
        rng = np.random.default_rng([*self.seed, j])
        sources, starts = _locate(self.valid, rng.integers(0, self.valid.sum(), size=1))
        source, start = int(sources[0]), int(starts[0])
        room = (int(self.spans.samples[source]) - start) // self.window - 1  # next must fit too
        wanted = int(rng.geometric(1.0 / self.segment))
        return source, start, max(1, min(room, wanted))

    def at(self, step: int) -> tuple[int, int, bool]:
        """(source, start sample of window `step`, whether the row restarted there)."""
        if step < self._first:  # went back (a new pass of an earlier epoch): walk again
            self._index, self._first, self._current = 0, 0, self._draw(0)
        while step >= self._first + self._current[2]:
            self._first += self._current[2]
            self._index += 1
            self._current = self._draw(self._index)
        source, start, _ = self._current
        offset = step - self._first
        return source, start + offset * self.window, offset == 0


class StreamBatches(IndexedBatches):
    """`batches_per_epoch` batches per epoch of B walking rows (see the module doc); the walk goes
    on across epochs. Use with `TrainLoader`, like `TrainBatches`."""

    def __init__(
        self,
        store: ShardStore,
        spans: Spans,
        *,
        batch_size: int,
        window: int,
        segment: int,
        batches_per_epoch: int,
        seed: int,
        rank: int = 0,
    ):
        require_length(spans, 2 * window, "train", str(store.sr_dir))
        super().__init__(batches_per_epoch, seed, rank)
        self.store, self.spans = store, spans
        self.batch_size, self.window, self.segment = batch_size, window, segment
        self._walks: list[RowWalk] | None = None  # built lazily, per process

    def walks(self) -> list[RowWalk]:
        if self._walks is None:
            self._walks = [
                RowWalk(self.spans, self.window, self.segment, (self.seed, self.rank, row))
                for row in range(self.batch_size)
            ]
        return self._walks

    def batch(self, index: int, epoch: int) -> StreamBatch:
        """Batch `index` of `epoch`: walk step epoch * batches_per_epoch + index of every row."""
        step = epoch * self.batches_per_epoch + index
        pcm = np.empty((self.batch_size, 2 * self.window), dtype=np.int16)
        reset = torch.zeros(self.batch_size, dtype=torch.bool)
        for row, walk in enumerate(self.walks()):
            source, start, restarted = walk.at(step)
            pcm[row] = self.store.read(self.spans, source, start, 2 * self.window)
            reset[row] = restarted
        audio = torch.from_numpy(pcm_to_float(pcm))
        return audio[:, : self.window], audio[:, self.window :], reset

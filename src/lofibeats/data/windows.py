"""The (prev, next) windows a model trains and validates on.

A window is `prev_len + next_len` contiguous samples of one source: `next` starts where `prev`
ends, and no window straddles two sources. Train windows are drawn uniformly over every valid start
position of the corpus (so a source is picked in proportion to its length); val windows sit at
fixed, evenly spaced positions.

Train batches are seeded from (seed, epoch, rank, batch index). Worker `w` of `n` builds batches
w, w + n, w + 2n, ... and the DataLoader returns them in index order, so a run draws the same
windows whatever `num_workers` is, while workers and DDP ranks still draw different ones.

Because a batch is a function of its index, where a run stands in an epoch is two numbers: the epoch
and how many batches the training loop has taken. :class:`TrainLoader` keeps them as its
`state_dict` (a plain dict, which Lightning saves in every checkpoint under `loops.fit_loop`), and a
run resumed mid-epoch draws the rest of that epoch exactly as an unbroken run would.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, IterableDataset, get_worker_info

from lofibeats.data.shards import ShardStore, Spans, pcm_to_float
from lofibeats.errors import DataError

Batch = tuple[torch.Tensor, torch.Tensor]


def require_length(spans: Spans, need: int, split: str, where: str) -> None:
    """DataError unless some source of `spans` holds at least `need` samples (one whole window)."""
    if spans.longest < need:
        raise DataError(
            f"corpus too short: no {split} source in {where} is {need} samples long; "
            f"need {need} samples per source, longest is {spans.longest}; "
            "lower data.prev_len_max/next_len or add audio"
        )


def _valid_starts(spans: Spans, window: int) -> np.ndarray:
    """How many windows of `window` samples fit in each source (0 if it is too short)."""
    return np.maximum(spans.samples - window + 1, 0)


def _locate(valid: np.ndarray, positions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Map positions in [0, valid.sum()) on the concatenated start ranges to (source, start)."""
    ends = np.cumsum(valid)
    source = np.searchsorted(ends, positions, side="right")
    return source, positions - (ends[source] - valid[source])


class IndexedBatches(IterableDataset):
    """Train batches that are a function of (epoch, index), `batches_per_epoch` per epoch; a
    subclass says how to build one (`batch`). Use with :class:`TrainLoader` (or
    `DataLoader(batch_size=None)` and :meth:`set_epoch`).

    Where a pass starts is a *position*: a small plain dict made by :meth:`position` and applied
    by :meth:`seek`, here `{"epoch": e, "batch": k}`, which :class:`TrainLoader` saves and
    restores unchanged.
    """

    def __init__(self, batches_per_epoch: int, seed: int, rank: int) -> None:
        self.batches_per_epoch, self.seed, self.rank = batches_per_epoch, seed, rank
        # Shared memory: persistent workers keep their own copy of this dataset, yet must see the
        # (epoch, first batch) that the main process seeks to before each pass.
        self._start = torch.zeros(2, dtype=torch.int64).share_memory_()

    def position(self, epoch: int, batch: int) -> dict[str, int]:
        """The position of batch `batch` of `epoch` (`batch == len(self)`: the epoch is drawn)."""
        return {"epoch": int(epoch), "batch": int(batch)}

    def seek(self, position: Mapping[str, Any]) -> None:
        """Make the next pass draw from `position` (see :meth:`position`) to the end of its epoch."""
        self._start[0], self._start[1] = int(position["epoch"]), int(position["batch"])

    def set_epoch(self, epoch: int) -> None:
        """Make the next pass draw all of `epoch`."""
        self.seek(self.position(epoch, 0))

    def __len__(self) -> int:
        return self.batches_per_epoch

    def batch(self, index: int, epoch: int) -> tuple[torch.Tensor, ...]:
        """Batch `index` of `epoch`: the same in any process, for the same seed and rank."""
        raise NotImplementedError

    def __iter__(self) -> Iterator[tuple[torch.Tensor, ...]]:
        info = get_worker_info()
        worker, workers = (info.id, info.num_workers) if info is not None else (0, 1)
        epoch, start = self._start.tolist()
        # the DataLoader deals a pass's batches out to its workers in turn from worker 0
        for index in range(start + worker, self.batches_per_epoch, workers):
            yield self.batch(index, epoch)


class TrainBatches(IndexedBatches):
    """`batches_per_epoch` random `(prev, next)` batches per epoch. One batch shares one prev
    length Tp, drawn in [prev_len_min, prev_len_max]."""

    def __init__(
        self,
        store: ShardStore,
        spans: Spans,
        *,
        batch_size: int,
        prev_len_min: int,
        prev_len_max: int,
        next_len: int,
        batches_per_epoch: int,
        seed: int,
        rank: int = 0,
    ):
        require_length(spans, prev_len_max + next_len, "train", str(store.sr_dir))
        super().__init__(batches_per_epoch, seed, rank)
        self.store = store
        self.spans = spans
        self.batch_size = batch_size
        self.prev_len_min = prev_len_min
        self.prev_len_max = prev_len_max
        self.next_len = next_len

    def batch(self, index: int, epoch: int) -> Batch:
        """Batch `index` of `epoch`: the same windows in any process, for the same seed and rank."""
        rng = np.random.default_rng([self.seed, epoch, self.rank, index])
        prev_len = int(rng.integers(self.prev_len_min, self.prev_len_max + 1))
        window = prev_len + self.next_len
        valid = _valid_starts(self.spans, window)
        sources, starts = _locate(valid, rng.integers(0, valid.sum(), size=self.batch_size))
        pcm = np.empty((self.batch_size, window), dtype=np.int16)
        for row, (source, start) in enumerate(zip(sources.tolist(), starts.tolist(), strict=True)):
            pcm[row] = self.store.read(self.spans, source, start, window)
        return (
            torch.from_numpy(pcm_to_float(pcm[:, :prev_len])),
            torch.from_numpy(pcm_to_float(pcm[:, prev_len:])),
        )


class ValWindows(Dataset):
    """`count` fixed windows with prev length `prev_len`, one `(prev, next)` pair per item.

    Window k starts at position floor((k + 1/2) * V / count) of the V valid start positions of all
    sources laid end to end: evenly spread over the val audio, no RNG, identical in every run.
    """

    def __init__(
        self, store: ShardStore, spans: Spans, *, count: int, prev_len: int, next_len: int
    ):
        window = prev_len + next_len
        require_length(spans, window, "val", str(store.sr_dir))
        self.store = store
        self.spans = spans
        self.prev_len = prev_len
        self.next_len = next_len
        valid = _valid_starts(spans, window)
        total = int(valid.sum())
        positions = (np.arange(count, dtype=np.int64) * 2 + 1) * total // (2 * count)
        self.sources, self.starts = _locate(valid, positions)

    def __len__(self) -> int:
        return len(self.sources)

    def __getitem__(self, index: int) -> Batch:
        pcm = self.store.read(
            self.spans,
            int(self.sources[index]),
            int(self.starts[index]),
            self.prev_len + self.next_len,
        )
        audio = torch.from_numpy(pcm_to_float(pcm))
        return audio[: self.prev_len], audio[self.prev_len :]


def collate_pairs(items: Sequence[Batch]) -> Batch:
    """Stack `(prev, next)` pairs into a `(prev [B, Tp], next [B, Tn])` tuple."""
    return torch.stack([p for p, _ in items]), torch.stack([n for _, n in items])


class TrainLoader(DataLoader):
    """A DataLoader over :class:`TrainBatches` that seeks the dataset as each pass starts.

    Lightning calls `set_epoch` only on samplers, and an IterableDataset has none. `epoch_fn`
    returns the current epoch (e.g. the trainer's); without it, passes are counted 0, 1, 2, ...

    Resumable: :meth:`state_dict` is the dataset's position after the batches this loader has handed
    out (counted here, in the main process, so batches that workers have prefetched do not count).
    Lightning saves it in every checkpoint (`loops.fit_loop.state_dict.combined_loader`) and, on
    resume, calls :meth:`load_state_dict` before the first pass, which then goes on from there if it
    is for the saved epoch; every other pass starts at batch 0.
    """

    def __init__(
        self,
        dataset: IndexedBatches,
        epoch_fn: Callable[[], int] | None = None,
        **kwargs: Any,
    ):
        super().__init__(dataset, batch_size=None, **kwargs)
        self.epoch_fn = epoch_fn
        self._passes = 0
        self._epoch = self._taken = 0  # the pass now (or last) drawn, and its batches handed out
        self._resume: dict[str, Any] | None = None

    def state_dict(self) -> dict[str, Any]:
        """Where the next batch comes from: a plain dict (it loads with `weights_only=True`)."""
        if self._resume is not None:  # loaded, and no pass has started since
            return dict(self._resume)
        return self.dataset.position(self._epoch, self._taken)

    def load_state_dict(self, state_dict: Mapping[str, Any]) -> None:
        """Go on from `state_dict` (what :meth:`state_dict` returned) at the next pass."""
        try:
            epoch, batch = int(state_dict["epoch"]), int(state_dict["batch"])
        except (KeyError, TypeError, ValueError):
            raise DataError(
                f"the train loader state in this checkpoint is {state_dict!r}, not a position "
                "like {'epoch': 0, 'batch': 3}: resume from another checkpoint"
            ) from None
        self._resume = dict(state_dict)
        if self.epoch_fn is None:  # the pass count is this loader's epoch clock: restore it too
            self._passes = epoch + (batch >= len(self.dataset))

    def __iter__(self) -> Iterator[Batch]:
        # A generator, so the epoch is read (and workers start) at the first `next()`: Lightning
        # makes a resumed run's first iterator before it moves past an epoch that the checkpoint
        # ended, and then the trainer still reports that epoch.
        epoch = self.epoch_fn() if self.epoch_fn is not None else self._passes
        self._passes += 1
        resume, self._resume = self._resume, None
        if resume is not None and int(resume["epoch"]) == epoch:
            position = resume
        else:
            position = self.dataset.position(epoch, 0)
        self.dataset.seek(position)
        self._epoch, self._taken = epoch, int(position["batch"])
        for batch in super().__iter__():
            self._taken += 1
            yield batch

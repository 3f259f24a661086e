"""`LofiDataModule`: (prev, next) batches memory-mapped from `cache_dir/sr<RATE>/`.

A batch is a tuple `(prev [B, Tp], next [B, Tn])` of float32 in [-1, 1]; `next` continues `prev`
in the same source. Train batches are random (Tp drawn per batch), val windows are fixed (Tp =
prev_len_max). With `mode="stream"` train batches are `(prev, next, reset)` of rows that walk
through the audio window after window (`lofibeats.data.stream_windows`), for models that carry
their state from batch to batch. See `lofibeats.data.windows` for how windows are placed and seeded, and how the train
loader's `state_dict` lets a run resumed mid-epoch draw the rest of that epoch.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pytorch_lightning as pl
from torch.utils.data import DataLoader

from lofibeats.data.manifest import MANIFEST_NAME, Manifest
from lofibeats.data.shards import ShardStore, Spans, pcm_to_float
from lofibeats.data.stream_windows import StreamBatches
from lofibeats.data.windows import TrainBatches, TrainLoader, ValWindows, collate_pairs
from lofibeats.errors import ConfigError, DataError
from lofibeats.units import to_samples
from lofibeats.validate import choice, number

_KEYS = (
    "cache_dir",
    "sr",
    "prev_len_min",
    "prev_len_max",
    "next_len",
    "batch_size",
    "num_workers",
    "train_batches_per_epoch",
    "val_windows",
    "val_fraction",
    "seed",
)
#: keys newer than some saved data configs (checkpoints remember theirs): absent = this default
_OPTIONAL = {"mode": "windows", "stream_segment": "4s"}
MODES = ("windows", "stream")


class LofiDataModule(pl.LightningDataModule):
    """Train/val (prev, next) windows over the prepared int16 shards of one sample rate.

    `cache_dir` is the folder that holds `sr<RATE>/`. Lengths are samples (int) or durations
    ("0.5s", "250ms") at `sr`. `prepare_cfg` is the data config that :meth:`prepare_data` hands to
    `ensure_prepared`; without it the cache must already be prepared.
    """

    def __init__(
        self,
        *,
        cache_dir: str | Path,
        sr: int,
        prev_len_min: int | str,
        prev_len_max: int | str,
        next_len: int | str,
        batch_size: int = 32,
        num_workers: int = 0,
        train_batches_per_epoch: int = 200,
        val_windows: int = 64,
        val_fraction: float = 0.2,
        seed: int = 1234,
        mode: str = "windows",
        stream_segment: int | str = "4s",
        prepare_cfg: Mapping[str, Any] | None = None,
    ):
        super().__init__()
        self.sr = number(sr, "data.sr", kind=int, low=1)
        self.prev_len_min = to_samples(prev_len_min, self.sr, "data.prev_len_min")
        self.prev_len_max = to_samples(prev_len_max, self.sr, "data.prev_len_max")
        self.next_len = to_samples(next_len, self.sr, "data.next_len")
        if self.prev_len_min > self.prev_len_max:
            raise ConfigError(
                f"data.prev_len_min={prev_len_min!r} ({self.prev_len_min} samples) exceeds "
                f"data.prev_len_max={prev_len_max!r} ({self.prev_len_max} samples): lower it"
            )
        self.batch_size = number(batch_size, "data.batch_size", kind=int, low=1)
        self.num_workers = number(num_workers, "data.num_workers", kind=int, low=0)
        self.train_batches_per_epoch = number(
            train_batches_per_epoch, "data.train_batches_per_epoch", kind=int, low=1
        )
        self.val_windows = number(val_windows, "data.val_windows", kind=int, low=1)
        self.seed = number(seed, "data.seed", kind=int, low=0)
        self.val_fraction = number(val_fraction, "data.val_fraction", low=0, high=1, high_open=True)
        self.mode = choice(mode, MODES, "data.mode")
        self.stream_segment = to_samples(stream_segment, self.sr, "data.stream_segment")
        self.sr_dir = Path(cache_dir).expanduser().absolute() / f"sr{self.sr}"
        self.prepare_cfg = prepare_cfg
        self._store: ShardStore | None = None
        self._splits: dict[str, Spans] = {}
        self._train: TrainBatches | StreamBatches | None = None
        self._val: ValWindows | None = None

    @classmethod
    def from_config(cls, data_cfg: Mapping[str, Any]) -> LofiDataModule:
        """Build from `conf/data/*.yaml` (a DictConfig or a dict); reads the cache that `prepare`
        keeps for this config's audio folder (`data.cache_dir/<folder>-<hash>/sr<RATE>/`)."""
        missing = [key for key in _KEYS if key not in data_cfg]
        if missing:
            raise ConfigError(
                f"data.{missing[0]} is missing from the data config: add it (see conf/data/default.yaml)"
            )
        # prepare is imported only here and in prepare_data: the windows need none of it
        from lofibeats.data.prepare import resolve_cache_dir

        values = {key: data_cfg[key] for key in _KEYS if key != "cache_dir"}
        values.update({key: data_cfg.get(key, default) for key, default in _OPTIONAL.items()})
        return cls(cache_dir=resolve_cache_dir(data_cfg), **values, prepare_cfg=data_cfg)

    def in_samples(self, data_cfg: Mapping[str, Any]) -> dict[str, Any]:
        """`data_cfg` with its lengths in samples, as this module resolved them: what a
        checkpoint keeps, and what agrees with the model's own `prev_len_max` / `next_len`
        (Lightning refuses a run whose model and data hyperparameters disagree)."""
        return {
            **data_cfg,
            "prev_len_min": self.prev_len_min,
            "prev_len_max": self.prev_len_max,
            "next_len": self.next_len,
            "stream_segment": self.stream_segment,
        }

    def prepare_data(self) -> None:
        """Build the shards for `sr` if missing (Lightning runs this on one process per node)."""
        if self.prepare_cfg is not None:
            from lofibeats.data.prepare import ensure_prepared

            ensure_prepared(self.prepare_cfg, self.sr)

    def setup(self, stage: str | None = None) -> None:
        """Read the manifest and check the shards; no samples are loaded (they are memory-mapped)."""
        if self._store is not None:
            return
        manifest = Manifest.load(self.sr_dir)
        if manifest.sr != self.sr:
            raise DataError(
                f"{self.sr_dir / MANIFEST_NAME} is for {manifest.sr} Hz, data.sr={self.sr}: "
                f"delete {self.sr_dir} and prepare again"
            )
        store = ShardStore(self.sr_dir, manifest.shards)
        splits = {
            name: Spans.from_entries(manifest.split(name), manifest.shards)
            for name in ("train", "val")
        }
        for spans in splits.values():
            store.check(spans)
        self._store, self._splits = store, splits

    def _spans(self, split: str) -> Spans:
        self.setup()
        spans = self._splits[split]
        if not len(spans):
            where = self.sr_dir / MANIFEST_NAME
            if split == "val":
                raise DataError(
                    f"no val sources in {where}: raise data.val_fraction (now {self.val_fraction}) "
                    "or add more audio files, then prepare again"
                )
            raise DataError(
                f"no train sources in {where}: add audio files or lower data.val_fraction"
            )
        return spans

    @property
    def train_dataset(self) -> TrainBatches | StreamBatches:
        """Train batches for this DDP rank (the attached trainer's; 0 without one): random
        windows, or (data.mode=stream) rows that walk through the audio (`stream_windows`)."""
        rank = self.trainer.global_rank if self.trainer is not None else 0
        if self._train is not None and self._train.rank == rank:
            return self._train
        if self.mode == "stream":
            self._train = StreamBatches(
                self.store,
                self._spans("train"),
                batch_size=self.batch_size,
                window=self.next_len,
                segment=max(1, round(self.stream_segment / self.next_len)),
                batches_per_epoch=self.train_batches_per_epoch,
                seed=self.seed,
                rank=rank,
            )
        else:
            self._train = TrainBatches(
                self.store,
                self._spans("train"),
                batch_size=self.batch_size,
                prev_len_min=self.prev_len_min,
                prev_len_max=self.prev_len_max,
                next_len=self.next_len,
                batches_per_epoch=self.train_batches_per_epoch,
                seed=self.seed,
                rank=rank,
            )
        return self._train

    @property
    def val_dataset(self) -> ValWindows:
        if self._val is None:
            self._val = ValWindows(
                self.store,
                self._spans("val"),
                count=self.val_windows,
                prev_len=self.prev_len_max,
                next_len=self.next_len,
            )
        return self._val

    @property
    def store(self) -> ShardStore:
        """The memory-mapped shards (reads the manifest on first use)."""
        self.setup()
        assert self._store is not None
        return self._store

    def _loader_kwargs(self) -> dict[str, Any]:
        if self.num_workers == 0:
            return {}
        # spawn everywhere: what Windows/macOS use anyway, so Linux runs exercise the same path
        return {
            "num_workers": self.num_workers,
            "persistent_workers": True,
            "multiprocessing_context": "spawn",
        }

    def train_dataloader(self) -> TrainLoader:
        trainer = self.trainer
        epoch_fn = (lambda: trainer.current_epoch) if trainer is not None else None
        return TrainLoader(self.train_dataset, epoch_fn=epoch_fn, **self._loader_kwargs())

    def val_dataloader(self) -> DataLoader:
        return DataLoader(
            self.val_dataset,
            batch_size=self.batch_size,
            shuffle=False,
            collate_fn=collate_pairs,
            **self._loader_kwargs(),
        )

    def val_clip(self, index: int, n_samples: int) -> np.ndarray:
        """The first `n_samples` of val source `index` (modulo their number) as float32 in [-1, 1].

        A source shorter than `n_samples` is padded with leading silence, so the clip always has
        `n_samples` samples and still ends on real audio (what a prime is continued from).
        """
        if n_samples < 1:
            raise ValueError(f"val_clip needs n_samples >= 1, got {n_samples}")
        spans = self._spans("val")
        source = index % len(spans)
        pcm = self.store.read(spans, source, 0, min(n_samples, int(spans.samples[source])))
        clip = np.zeros(n_samples, dtype=np.float32)
        clip[n_samples - len(pcm) :] = pcm_to_float(pcm)
        return clip

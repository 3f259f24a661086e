"""What a listener can pick: the runs under `outputs/`, loaded models, val clips and uploads.

A run is listed by what it left behind (`config_resolved.yaml`: family and rate; `status.json`:
val bits/sample, steps), without loading its checkpoint; a model is loaded when a take first
needs it and shared by every stream that plays it (inference only reads the weights). Val
clips (primes, style targets) come from the data the checkpoint was trained on, as
`generate.py prime=val` reads them.
"""

from __future__ import annotations

import json
import re
import threading
import uuid
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf
import torch
import yaml

from lofibeats.audio.decode import MonoReader
from lofibeats.data.datamodule import LofiDataModule
from lofibeats.data.manifest import Manifest
from lofibeats.errors import CheckpointError, DataError, LofiError
from lofibeats.generation.prime import data_config_for
from lofibeats.generation.style import clip_latent
from lofibeats.models.base import LofiModule
from lofibeats.models.checkpoint import module_from_checkpoint, read_checkpoint
from lofibeats.models.decoding import auto_beat_prior, has_lookback
from lofibeats.models.vseq2seq import VSeq2SeqModule

CLIP_SECONDS = 4.0  # a val clip as a style target: the first seconds of a val source
MAX_UPLOAD_SECONDS = 30.0  # an uploaded clip: its first seconds are kept (its z: their mean)
STYLE_VAL_CLIPS = 4  # val clips offered as style targets


@dataclass(frozen=True)
class CheckpointInfo:
    """One pickable checkpoint: `id` is what the page sends back (a path under outputs/)."""

    id: str
    path: Path
    name: str
    family: str | None = None
    sr: int | None = None
    frame_size: int | None = None
    bits: float | None = None
    steps: int | None = None
    status: str | None = None
    overrides: tuple[str, ...] = ()
    mtime: float = 0.0

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "family": self.family,
            "sr": self.sr,
            "frame_size": self.frame_size,
            "bits_per_sample": self.bits,
            "steps": self.steps,
            "status": self.status,
            "overrides": list(self.overrides),
        }


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError, UnicodeDecodeError):
        return {}
    return data if isinstance(data, dict) else {}


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, UnicodeDecodeError):
        return {}
    return data if isinstance(data, dict) else {}


def _int(value: Any) -> int | None:
    return int(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def describe_checkpoint(path: Path, outputs_dir: Path) -> CheckpointInfo:
    """A checkpoint's entry from the files of its run (`<run>/checkpoints/<name>.ckpt`)."""
    path = path.absolute()
    run = path.parent.parent if path.parent.name == "checkpoints" else path.parent
    try:
        rel = path.relative_to(outputs_dir.absolute())
        ckpt_id = rel.as_posix()
        run_name = run.relative_to(outputs_dir.absolute()).as_posix()
    except ValueError:
        ckpt_id, run_name = path.as_posix(), run.name
    name = run_name if path.stem == "last" else f"{run_name} ({path.stem})"
    config, status = _read_yaml(run / "config_resolved.yaml"), _read_json(run / "status.json")
    model = config.get("model") if isinstance(config.get("model"), dict) else {}
    data = config.get("data") if isinstance(config.get("data"), dict) else {}
    metrics = status.get("metrics") if isinstance(status.get("metrics"), dict) else {}
    bits = metrics.get("val/bits_per_sample")
    overrides = status.get("overrides") if isinstance(status.get("overrides"), list) else []
    try:
        mtime = path.stat().st_mtime
    except OSError:
        mtime = 0.0
    return CheckpointInfo(
        id=ckpt_id,
        path=path,
        name=name,
        family=model.get("family") if isinstance(model.get("family"), str) else None,
        sr=_int(data.get("sr")),
        frame_size=_int(model.get("frame_size")),
        bits=float(bits) if isinstance(bits, (int, float)) else None,
        steps=_int(status.get("steps")),
        status=str(status["status"]) if "status" in status else None,
        overrides=tuple(str(o) for o in overrides),
        mtime=mtime,
    )


def scan_checkpoints(outputs_dir: Path, extra: Iterable[Path] = ()) -> dict[str, CheckpointInfo]:
    """{id: info} of the runs under `outputs_dir`, newest first: each run's `last.ckpt` (its
    `best.ckpt` too when it has one), plus the `extra` checkpoints (the one live.py was
    started with, wherever it is)."""
    outputs_dir = Path(outputs_dir).expanduser()
    found: list[Path] = [Path(p).expanduser() for p in extra]
    if outputs_dir.is_dir():
        found += [p for p in outputs_dir.glob("**/checkpoints/*.ckpt") if p.is_file()]
    infos: dict[str, CheckpointInfo] = {}
    for path in found:
        info = describe_checkpoint(path, outputs_dir)
        infos.setdefault(info.id, info)
    ordered = sorted(infos.values(), key=lambda i: (-i.mtime, i.path.stem != "last", i.id))
    return {info.id: info for info in ordered}


@dataclass
class LoadedModel:
    """A checkpoint loaded for inference, shared by every stream that plays it."""

    info: CheckpointInfo
    module: LofiModule
    data_cfg: Mapping[str, Any] | None
    shelf: Path
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _val: LofiDataModule | None = None
    _val_count: int | None = None
    _latents: dict[str, torch.Tensor] = field(default_factory=dict)

    @property
    def latent(self) -> bool:
        """Whether takes of this model have a latent z (the creativity and style knobs)."""
        return isinstance(self.module, VSeq2SeqModule)

    @property
    def lookback(self) -> bool:
        """Whether this model recalls where the music last repeated (the loop knob)."""
        return has_lookback(self.module.net)

    @property
    def plans(self) -> bool:
        """Whether this model draws a beat plan (the beat prior knob)."""
        return auto_beat_prior(self.module.net) is not None

    def _datamodule(self) -> LofiDataModule:
        """The val data (prepared on first use, as generate.py does); DataError if none."""
        with self._lock:
            if self._val is None:
                if not self.data_cfg:
                    raise DataError(f"{self.info.path} does not say what data it was trained on")
                datamodule = LofiDataModule.from_config(data_config_for(self.module, self.data_cfg))
                datamodule.prepare_data()
                datamodule.setup("validate")
                self._val_count = len(Manifest.load(datamodule.sr_dir).split("val"))
                self._val = datamodule
            return self._val

    def val_count(self) -> int:
        """How many val sources there are (0 when the data cannot be read)."""
        try:
            self._datamodule()
        except (LofiError, OSError):
            return 0
        return self._val_count or 0

    def val_clip(self, index: int, n_samples: int) -> np.ndarray:
        """The first `n_samples` of val source `index` (modulo their number), float32."""
        return self._datamodule().val_clip(index, n_samples)

    def style_targets(self, uploads: Uploads) -> list[dict[str, str]]:
        """The style targets a take of this model offers: val clips, uploads, random."""
        if not self.latent:
            return []
        targets = [
            {"id": f"val:{i}", "name": f"val clip {i}"}
            for i in range(min(STYLE_VAL_CLIPS, self.val_count()))
        ]
        targets += [{"id": f"upload:{u.id}", "name": u.name} for u in uploads.list()]
        return [*targets, {"id": "random", "name": "random (a prior sample)"}]

    def clip_latent(self, target: str, uploads: Uploads) -> torch.Tensor:
        """z [D] of a style target id `val:<n>` or `upload:<id>` (posterior mean of the clip)."""
        with self._lock:
            cached = self._latents.get(target)
        if cached is not None:
            return cached
        if target.startswith("val:"):
            index = int(target[4:])
            if index >= max(1, self.val_count()):
                raise DataError(f"style={target}: this model has {self.val_count()} val clips")
            path = self.shelf / f"val_{index}.wav"
            if not path.is_file():
                sr = self.module.sample_rate
                self.shelf.mkdir(parents=True, exist_ok=True)
                clip = self.val_clip(index, round(CLIP_SECONDS * sr))
                sf.write(path, clip, sr, subtype="FLOAT")
        else:
            upload = uploads.get(target.partition(":")[2])
            if upload is None:
                raise DataError(f"style={target}: no such upload (upload the clip again)")
            path = upload.path
        assert isinstance(self.module, VSeq2SeqModule)
        z = clip_latent(self.module, path)
        with self._lock:
            self._latents[target] = z
        return z


class ModelCache:
    """Loaded models by checkpoint id, the `max_models` most recently used; each loads once
    even when several streams ask for it at the same time."""

    def __init__(self, shelf: Path, device: torch.device, max_models: int = 2) -> None:
        self.shelf, self.device, self.max_models = shelf, device, max(1, max_models)
        self._models: OrderedDict[str, LoadedModel] = OrderedDict()
        self._loading: dict[str, threading.Lock] = {}
        self._lock = threading.Lock()

    def get(self, info: CheckpointInfo) -> LoadedModel:
        """The loaded model of `info`; a CheckpointError (one line) if it cannot load."""
        with self._lock:
            if info.id in self._models:
                self._models.move_to_end(info.id)
                return self._models[info.id]
            lock = self._loading.setdefault(info.id, threading.Lock())
        with lock:
            with self._lock:
                if info.id in self._models:
                    return self._models[info.id]
            ckpt = read_checkpoint(info.path, map_location=self.device)
            try:
                module = module_from_checkpoint(ckpt, info.path, map_location=self.device)
            except (KeyError, TypeError, ValueError, RuntimeError) as exc:
                raise CheckpointError(f"cannot rebuild the model of {info.path}: {exc}") from None
            module.eval()
            data_cfg = ckpt.get("datamodule_hyper_parameters")
            shelf = self.shelf / re.sub(r"[^A-Za-z0-9_.-]+", "_", info.id)
            loaded = LoadedModel(
                info, module, data_cfg if isinstance(data_cfg, dict) else None, shelf
            )
            with self._lock:
                self._models[info.id] = loaded
                while len(self._models) > self.max_models:
                    self._models.popitem(last=False)
                self._loading.pop(info.id, None)
            return loaded


@dataclass(frozen=True)
class Upload:
    id: str
    name: str
    seconds: float
    path: Path


class Uploads:
    """Clips listeners uploaded as style targets: decoded once (any format `prepare` reads),
    kept as float WAV files in `folder`, the `max_count` newest."""

    def __init__(self, folder: Path, max_count: int = 16) -> None:
        self.folder, self.max_count = folder, max(1, max_count)
        self._items: OrderedDict[str, Upload] = OrderedDict()
        self._lock = threading.Lock()

    def add(self, data: bytes, name: str) -> Upload:
        """Decode `data` (the bytes of file `name`); a DataError saying why it cannot be used."""
        shown = Path(name).name[:80] or "clip"
        if not data:
            raise DataError(f"upload {shown!r}: the file is empty: upload an audio file")
        self.folder.mkdir(parents=True, exist_ok=True)
        upload_id = uuid.uuid4().hex[:12]
        suffix = re.sub(r"[^a-z0-9]", "", Path(shown).suffix.lower())[:8]
        raw = self.folder / f"{upload_id}.upload{'.' + suffix if suffix else ''}"
        raw.write_bytes(data)
        try:
            audio, sr = _decode_start(raw, MAX_UPLOAD_SECONDS)
        except LofiError as exc:
            raise DataError(
                f"upload {shown!r}: not a readable audio clip ({exc}): upload a wav, flac, "
                "ogg, mp3 or m4a file"
            ) from None
        finally:
            raw.unlink(missing_ok=True)
        if not np.any(audio):
            raise DataError(f"upload {shown!r}: the clip is digital silence: upload music")
        path = self.folder / f"{upload_id}.wav"
        sf.write(path, audio, sr, subtype="FLOAT")
        upload = Upload(upload_id, shown, len(audio) / sr, path)
        with self._lock:
            self._items[upload_id] = upload
            while len(self._items) > self.max_count:
                _, old = self._items.popitem(last=False)
                old.path.unlink(missing_ok=True)
        return upload

    def get(self, upload_id: str) -> Upload | None:
        with self._lock:
            return self._items.get(upload_id)

    def list(self) -> list[Upload]:
        with self._lock:
            return list(self._items.values())


def _decode_start(path: Path, seconds: float) -> tuple[np.ndarray, int]:
    """The first `seconds` of audio file `path` as mono float32, and its rate."""
    with MonoReader(path) as reader:
        assert reader.info is not None
        sr = reader.info.sr
        want, blocks, have = round(seconds * sr), [], 0
        for block in reader.blocks():
            blocks.append(block[: want - have])
            have += len(blocks[-1])
            if have >= want:
                break
    if not have:
        raise DataError("no audio in the file")
    return np.clip(np.concatenate(blocks), -1.0, 1.0).astype(np.float32), sr

"""One source file -> int16 audio at every requested rate: the unit of work `prepare` parallelises.

It runs in spawned worker processes, so everything here is importable at top level and the job and
result are small picklable records; audio goes through files in the staging folder, never through
pickles.

One decoding pass feeds a level meter (at the source rate) and one streaming resampler per rate;
the resampled float32 audio is kept in RAM up to `ram_bytes` per rate and spilled to a temp file
beyond that. The gain (loudness normalisation) and the trim range are only known after the whole
file is measured, so a second pass over that audio applies them and produces int16 per rate:
returned in the result when it totals at most `ram_bytes`, else written to a raw int16 file in
the staging folder. Memory therefore stays bounded however long the file is.

Skipped, with the reason recorded: files that cannot be read or decoded (see
`lofibeats.audio.decode`), files shorter than MIN_SECONDS, digital silence, and, when normalising
or trimming, files with nothing above the gate or threshold ("silent"). NaN/inf samples are
replaced by 0 and reported as a warning (the rest of the file is kept).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from lofibeats.audio.decode import BLOCK_FRAMES, AudioDecodeError, MonoReader
from lofibeats.audio.loudness import (
    ABSOLUTE_GATE_DBFS,
    LevelMeter,
    db_to_amplitude,
    normalization_gain_db,
    to_int16,
)
from lofibeats.audio.resample import QUALITY, MultiRateResampler
from lofibeats.data.scan import content_hash

PIPELINE_VERSION = 1  # bump when the produced samples change, so caches are rebuilt
MIN_SECONDS = 0.01
RAM_BYTES = 64 << 20
WRITE_CHUNK = 1 << 18

KEPT, SKIPPED, UNCHANGED = "kept", "skipped", "unchanged"


@dataclass(frozen=True)
class AudioSettings:
    """The prepare settings that decide the samples."""

    normalize_loudness: bool
    target_dbfs: float
    trim_silence: bool
    silence_dbfs: float

    def fingerprint(self) -> dict[str, Any]:
        """What a manifest records; a cache made with another fingerprint is rebuilt.

        Values that have no effect (target_dbfs without normalisation...) are left out, so changing
        them rebuilds nothing.
        """
        return {
            "pipeline": PIPELINE_VERSION,
            "resampler": f"soxr-{QUALITY}",
            "normalize_loudness": self.normalize_loudness,
            "target_dbfs": float(self.target_dbfs) if self.normalize_loudness else None,
            "trim_silence": self.trim_silence,
            "silence_dbfs": float(self.silence_dbfs) if self.trim_silence else None,
        }


@dataclass(frozen=True)
class SourceJob:
    index: int
    path: Path
    rel: str
    rates: tuple[int, ...]
    settings: AudioSettings
    staging_dir: Path
    known_hash: str | None = None  # equal content hash -> "unchanged", nothing decoded
    block_frames: int = BLOCK_FRAMES
    ram_bytes: int = RAM_BYTES


@dataclass
class SourceResult:
    rel: str
    rates: tuple[int, ...]
    status: str = KEPT
    hash: str = ""
    reason: str = ""
    input_seconds: float = 0.0
    samples: dict[int, int] = field(default_factory=dict)
    # int16 per rate: the samples, or a staging file holding them (raw little-endian)
    output: dict[int, np.ndarray | Path] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)

    def skip(self, reason: str) -> SourceResult:
        self.status, self.reason = SKIPPED, reason
        self.samples, self.output = {}, {}
        return self


def process_source(job: SourceJob) -> SourceResult:
    """Decode, measure, resample and write `job.path` at `job.rates`; never raises for bad input."""
    result = SourceResult(job.rel, job.rates)
    try:
        result.hash = content_hash(job.path)
    except OSError as exc:
        return result.skip(f"cannot read: {exc.strerror or exc}")
    if job.known_hash == result.hash:
        result.status = UNCHANGED
        return result
    with ExitStack() as stack:
        spills = {
            rate: stack.enter_context(
                _Spill(job.staging_dir / f"{job.index}.sr{rate}.f32", job.ram_bytes)
            )
            for rate in job.rates
        }
        try:
            with MonoReader(job.path, job.block_frames) as reader:
                meter = LevelMeter(reader.info.sr)
                resampler = MultiRateResampler(reader.info.sr, job.rates)
                for block in reader.blocks():
                    meter.add(block)
                    for rate, out in resampler.push(block).items():
                        spills[rate].append(out)
                for rate, out in resampler.flush().items():
                    spills[rate].append(out)
        except AudioDecodeError as exc:
            return result.skip(str(exc))
        meter.finish()
        sr = reader.info.sr
        result.input_seconds = reader.frames_read / sr
        if reader.nonfinite:
            result.warnings.append(f"{reader.nonfinite} NaN/inf samples replaced by silence")
        if note := reader.shortfall_warning:
            result.warnings.append(note)

        shortest = min(spill.length for spill in spills.values())
        if reader.frames_read < MIN_SECONDS * sr or shortest < 1:
            return result.skip(
                f"too short: {reader.frames_read} samples at {sr} Hz (need at least {MIN_SECONDS * 1000:g} ms)"
            )
        if meter.peak == 0.0:
            return result.skip("silent: digital silence throughout")
        gain_db = 0.0
        if job.settings.normalize_loudness:
            loudness = meter.loudness_dbfs()
            if loudness is None:
                return result.skip(f"silent: nothing above {ABSOLUTE_GATE_DBFS:g} dBFS")
            gain_db = normalization_gain_db(loudness, meter.peak, job.settings.target_dbfs)
        start, end = 0, reader.frames_read
        if job.settings.trim_silence:
            # The threshold applies to the normalised level, so it means the same for every file.
            active = meter.active_range(db_to_amplitude(job.settings.silence_dbfs - gain_db))
            if active is None:
                return result.skip(
                    f"silent: nothing above data.silence_dbfs={job.settings.silence_dbfs:g} dBFS"
                )
            start, end = active

        spans = {
            rate: (math.floor(start * rate / sr), min(spill.length, math.ceil(end * rate / sr)))
            for rate, spill in spills.items()
        }
        in_ram = 2 * sum(hi - lo for lo, hi in spans.values()) <= job.ram_bytes
        limit = job.settings.normalize_loudness
        for rate, (lo, hi) in spans.items():
            chunks = spills[rate].chunks(lo, hi, WRITE_CHUNK)
            if in_ram:
                pcm = result.output[rate] = np.empty(hi - lo, dtype=np.int16)
                pos = 0
                for chunk in chunks:
                    to_int16(chunk, gain_db, limit=limit, out=pcm[pos : pos + len(chunk)])
                    pos += len(chunk)
            else:
                staged = result.output[rate] = job.staging_dir / f"{job.index}.sr{rate}.i16"
                with open(staged, "wb") as fh:
                    for chunk in chunks:
                        fh.write(
                            to_int16(chunk, gain_db, limit=limit).astype("<i2", copy=False).data
                        )
            result.samples[rate] = hi - lo
    return result


class _Spill:
    """float32 samples appended block by block: in RAM up to `ram_bytes`, then in a temp file."""

    def __init__(self, path: Path, ram_bytes: int):
        self.path = path
        self.length = 0
        self._ram_bytes = ram_bytes
        self._blocks: list[np.ndarray] = []
        self._fh = None

    def __enter__(self) -> _Spill:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._blocks = []
        if self._fh is not None:
            self._fh.close()
            self._fh = None
            self.path.unlink(missing_ok=True)

    def append(self, x: np.ndarray) -> None:
        if not len(x):
            return
        if self._fh is None and (self.length + len(x)) * 4 > self._ram_bytes:
            self._fh = open(self.path, "w+b")  # noqa: SIM115 - closed in __exit__
            for block in self._blocks:
                self._fh.write(block.data)
            self._blocks = []
        if self._fh is not None:
            self._fh.write(np.ascontiguousarray(x, dtype=np.float32).data)
        else:
            self._blocks.append(x)
        self.length += len(x)

    def chunks(self, start: int, stop: int, size: int) -> Iterator[np.ndarray]:
        """Samples [start, stop) in pieces of at most `size`."""
        if self._fh is not None:
            self._fh.flush()
            self._fh.seek(start * 4)
            buf = np.empty(size, dtype=np.float32)
            for pos in range(start, stop, size):
                n = min(size, stop - pos)
                got = self._fh.readinto(memoryview(buf[:n]).cast("B")) // 4
                yield buf[:got]
            return
        offset = 0
        for block in self._blocks:
            lo, hi = max(start - offset, 0), min(stop - offset, len(block))
            for pos in range(lo, hi, size):
                yield block[pos : min(pos + size, hi)]
            offset += len(block)

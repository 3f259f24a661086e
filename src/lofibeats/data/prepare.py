"""`prepare`: a folder of audio files -> int16 `.npy` shards + `manifest.json` per sample rate.

`cache_dir/sr<RATE>/` holds the result (see `lofibeats.data.manifest`). A run:

1. takes the cache folder's lock (`lofibeats.data.cache`) and deletes what a killed run left;
2. scans `raw_dir` (`lofibeats.data.scan`): audio by extension, symlink loops skipped;
3. decides per file and rate what is already done: same size and mtime as recorded -> reused;
   same size, other mtime -> its content hash is checked and, if equal, reused; anything else is
   decoded. A cache made with other sample-changing settings (`AudioSettings.fingerprint`) is
   rebuilt; `val_fraction` and `shard_mb` only re-split / re-pack;
4. decodes the rest in parallel (spawned processes, one file each, every rate from one decoding
   pass; `lofibeats.data.process`, `lofibeats.data.workers`), with a progress bar, packing each
   result into new shards as it arrives (`lofibeats.data.pack`);
5. per rate, compacts and writes the manifest last (`lofibeats.data.update`), so a run killed at
   any point leaves the old cache or the new one.

Bad files are skipped with a reason, never fatal to the others; only a folder that is missing,
empty or without any valid audio raises :class:`DataError`. Every file not used (skipped audio,
and files the scan ignored: hidden, not audio, unknown extension) is listed with its reason in
`cache_dir/unused-files.tsv` (`lofibeats.data.report`). NaN/inf samples in float files are
replaced by silence with a warning. The split is by file, from a hash of its relative path
(`lofibeats.data.split`).

A full disk (ENOSPC/EDQUOT) anywhere in the run becomes one :class:`DiskFullError` line naming the
file and folder, about how many bytes this run needs there (exact for the files already decoded,
from the headers of the others) and how many are free; by then every new shard of the run is
deleted again, so the previous cache is as it was (`lofibeats.data.space`).

The progress display appears once the scan takes a moment, or when there is audio to decode: a
rerun with nothing to do prints nothing.
"""

from __future__ import annotations

import hashlib
import os
import sys
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from lofibeats.audio.decode import AUDIO_EXTENSIONS, AudioDecodeError, MonoReader
from lofibeats.data.cache import cache_lock, staging_area
from lofibeats.data.manifest import Manifest, SkippedEntry, SourceEntry
from lofibeats.data.pack import Piece
from lofibeats.data.process import KEPT, UNCHANGED, AudioSettings, SourceJob, SourceResult
from lofibeats.data.report import PrepareReport, write_unused_list
from lofibeats.data.scan import AudioCandidate, ScanResult, scan_audio
from lofibeats.data.space import DiskFullError, disk_full_message, is_disk_full
from lofibeats.data.update import RateCache
from lofibeats.data.workers import PrepareProgress, default_workers, progress_bar, run_jobs
from lofibeats.errors import ConfigError, DataError
from lofibeats.validate import number

PREPARE_KEYS = (
    "prepare_workers",
    "shard_mb",
    "normalize_loudness",
    "target_dbfs",
    "trim_silence",
    "silence_dbfs",
    "val_fraction",
)
SCAN_QUIET_SECONDS = 0.3  # a scan shorter than this shows no progress line
HEADER_PROBES = 200  # files whose length a disk-full estimate reads from their headers, at most
MANIFEST_BYTES_PER_SOURCE = 300  # about, in manifest.json


def prepare_corpus(
    raw_dir: Path,
    cache_dir: Path,
    sample_rates: Sequence[int],
    *,
    workers: int | None,
    shard_mb: float,
    normalize_loudness: bool,
    target_dbfs: float,
    trim_silence: bool,
    silence_dbfs: float,
    val_fraction: float,
    progress: bool = True,
) -> PrepareReport:
    """Prepare (or bring up to date) `cache_dir/sr<RATE>/` for every rate from the audio in `raw_dir`."""
    started = time.perf_counter()
    rates = _check_rates(sample_rates)
    workers = _check_workers(workers)
    shard_mb = number(shard_mb, "data.shard_mb", low=0.0, low_open=True)
    target_dbfs = number(target_dbfs, "data.target_dbfs", high=0.0, high_open=True)
    silence_dbfs = number(silence_dbfs, "data.silence_dbfs", high=0.0, high_open=True)
    val_fraction = number(val_fraction, "data.val_fraction", low=0.0, high=1.0, high_open=True)
    settings = AudioSettings(
        bool(normalize_loudness), float(target_dbfs), bool(trim_silence), float(silence_dbfs)
    )
    raw_dir = Path(raw_dir).expanduser().absolute()
    cache_dir = Path(cache_dir).expanduser().absolute()
    if not raw_dir.is_dir():
        raise DataError(
            f"audio folder {raw_dir} does not exist: set data.raw_dir to a folder of audio files "
            "(null = the built-in corpus)"
        )
    report = PrepareReport(raw_dir, cache_dir, rates)
    run = _Run(raw_dir, cache_dir)
    try:
        with (
            progress_bar(progress) as bar,
            cache_lock(cache_dir),
            staging_area(cache_dir) as staging,
        ):
            scan = _scan(raw_dir, bar)
            report.ignored = scan.ignored
            if not scan.files and not scan.skipped:
                extensions = " ".join(sorted(AUDIO_EXTENSIONS))
                raise DataError(
                    f"no audio files ({extensions}) in {raw_dir}: add some or point data.raw_dir "
                    f"elsewhere{_ignored_example(scan.ignored)}"
                )
            committed = _update(
                scan, rates, settings, shard_mb, val_fraction, workers, staging, bar, run
            )
    except OSError as exc:
        if not is_disk_full(exc):
            raise
        raise DiskFullError(run.disk_full_line(exc)) from None

    decoded = [r for r in run.results.values() if r.status != UNCHANGED]
    report.kept = len(committed[0].sources)
    report.seconds = committed[0].total_seconds
    report.skipped = committed[0].skipped
    report.decoded = len(decoded)
    report.decoded_seconds = sum(r.input_seconds for r in decoded)
    report.warnings = [f"{r.rel}: {note}" for r in decoded for note in r.warnings]
    try:
        report.unused_list = write_unused_list(report)
    except OSError as exc:
        report.warnings.append(
            f"could not write the list of unused files in {cache_dir} ({exc.strerror or exc})"
        )
    report.wall_seconds = time.perf_counter() - started
    return report


def _scan(raw_dir: Path, bar: PrepareProgress) -> ScanResult:
    """`scan_audio` with a progress line that appears once the scan takes a moment."""
    task = bar.add_task(f"scanning {raw_dir.name or raw_dir}", total=None, speed="")
    started = time.perf_counter()

    def seen(entries: int) -> None:
        if time.perf_counter() - started > SCAN_QUIET_SECONDS:
            bar.ensure_started()
        bar.update(task, completed=entries, speed="files and folders")

    scan = scan_audio(raw_dir, seen)
    bar.update(task, total=scan.entries, completed=scan.entries)
    return scan


def _update(
    scan: ScanResult,
    rates: tuple[int, ...],
    settings: AudioSettings,
    shard_mb: float,
    val_fraction: float,
    workers: int,
    staging: Path,
    bar: PrepareProgress,
    run: _Run,
) -> list[Manifest]:
    """Decode what changed, pack it, and commit every rate's cache (manifest last)."""
    fingerprint = settings.fingerprint()
    caches = run.caches = [
        RateCache(run.cache_dir / f"sr{rate}", rate, run.raw_key, fingerprint) for rate in rates
    ]
    target_samples = max(1, int(shard_mb * (1 << 20)) // 2)
    packers = {cache.sr: cache.packer(target_samples) for cache in caches}
    committed: list[Manifest] = []
    try:
        jobs = run.jobs = _plan_jobs(scan.files, caches, settings, staging)
        if jobs:
            bar.ensure_started()
        placed = {}
        for result in run_jobs(jobs, workers, bar.show, bar):
            # New audio goes into shards as it arrives, so RAM holds one file's output at a time.
            for rate, out in result.output.items():
                source = (
                    out
                    if isinstance(out, np.ndarray)
                    else Piece(result.rel, result.samples[rate], out)
                )
                placed[rate, result.rel] = packers[rate].add(source)
            result.output = {}
            run.results[result.rel] = result

        by_rate = {c.sr: _collect(c, scan.files, scan.skipped, run.results, placed) for c in caches}
        reused, new, skipped = by_rate[rates[0]]
        if not reused and not new:
            example = f" (e.g. {skipped[0].path}: {skipped[0].reason})" if skipped else ""
            raise DataError(
                f"no valid audio in {run.raw_dir}: all {len(skipped)} audio files were skipped{example}; "
                "fix them or point data.raw_dir elsewhere"
            )
        manifest_settings = {
            **fingerprint,
            "val_fraction": float(val_fraction),
            "shard_mb": float(shard_mb),
        }
        for cache in caches:
            committed.append(
                cache.commit(
                    *by_rate[cache.sr], manifest_settings, float(val_fraction), packers[cache.sr]
                )
            )
            del packers[cache.sr]  # its shards are named by the new manifest now
    finally:
        for packer in packers.values():  # rates not committed: their new shards are garbage
            packer.abort()
    return committed


def _plan_jobs(
    files: Sequence[AudioCandidate],
    caches: Sequence[RateCache],
    settings: AudioSettings,
    staging: Path,
) -> list[SourceJob]:
    """One job per file that some rate lacks; largest first, so parallel workers finish together."""
    jobs = []
    for cand in sorted(files, key=lambda c: -c.size):
        rates, hashes = [], set()
        for cache in caches:
            entry = cache.lookup(cand.rel)
            if entry is not None and (entry.size, entry.mtime_ns) == (cand.size, cand.mtime_ns):
                continue
            rates.append(cache.sr)
            same_size = entry is not None and entry.size == cand.size and entry.hash
            hashes.add(entry.hash if same_size else None)
        if rates:
            known = hashes.pop() if len(hashes) == 1 else None
            jobs.append(
                SourceJob(len(jobs), cand.path, cand.rel, tuple(rates), settings, staging, known)
            )
    return jobs


def _collect(
    cache: RateCache,
    files: Sequence[AudioCandidate],
    scan_skipped: Sequence[SkippedEntry],
    results: Mapping[str, SourceResult],
    placed: Mapping[tuple[int, str], tuple[str, int]],
) -> tuple[list[SourceEntry], list[SourceEntry], list[SkippedEntry]]:
    """This rate's reused sources, new (already packed) sources and skipped files."""
    reused: list[SourceEntry] = []
    new: list[SourceEntry] = []
    skipped = list(scan_skipped)
    for cand in files:
        result = results.get(cand.rel)
        if result is not None and cache.sr in result.rates and result.status != UNCHANGED:
            if result.status == KEPT:
                shard, offset = placed[cache.sr, cand.rel]
                samples = result.samples[cache.sr]
                new.append(
                    SourceEntry(
                        cand.rel,
                        result.hash,
                        cand.size,
                        cand.mtime_ns,
                        samples / cache.sr,
                        samples,
                        shard,
                        offset,
                        "",
                    )
                )
            else:
                skipped.append(
                    SkippedEntry(cand.rel, result.reason, cand.size, cand.mtime_ns, result.hash)
                )
            continue
        # Not decoded for this rate: the cache's entry is current (same size and mtime, or same hash).
        entry = cache.lookup(cand.rel)
        if entry.mtime_ns != cand.mtime_ns:
            entry = replace(entry, mtime_ns=cand.mtime_ns)
        (reused if isinstance(entry, SourceEntry) else skipped).append(entry)
    return reused, new, skipped


def resolve_raw_dir(data_cfg: Mapping[str, Any]) -> Path:
    """`data.raw_dir` (~ expanded), or the built-in corpus, rendered first if needed."""
    raw = data_cfg.get("raw_dir")
    if raw is not None:
        return Path(str(raw)).expanduser().absolute()
    from lofibeats.audio.synth import builtin_corpus_dir, render_builtin_corpus  # only when used

    out_dir, tracks, seconds, sr, seed = _builtin(data_cfg)
    render_builtin_corpus(out_dir, tracks, seconds, sr, seed)
    return builtin_corpus_dir(out_dir, tracks, seconds, sr, seed).absolute()


def resolve_cache_dir(data_cfg: Mapping[str, Any]) -> Path:
    """`data.cache_dir/<folder name>-<hash of its absolute path>` ("builtin-<hash>" for the corpus).

    Each audio folder gets its own cache, so switching `data.raw_dir` never mixes or rebuilds
    another folder's shards.
    """
    root = data_cfg.get("cache_dir")
    if root is None:
        raise ConfigError("data.cache_dir is null: set it to a folder for the prepared shards")
    raw = data_cfg.get("raw_dir")
    if raw is None:
        from lofibeats.audio.synth import builtin_corpus_dir

        folder = builtin_corpus_dir(*_builtin(data_cfg))
        name = "builtin"
    else:
        folder = Path(str(raw)).expanduser()
        name = folder.resolve().name or "root"
    digest = hashlib.sha256(str(folder.resolve()).encode("utf-8")).hexdigest()[:8]
    return Path(str(root)).expanduser().absolute() / f"{name}-{digest}"


def prepare_from_config(
    data_cfg: Mapping[str, Any], sample_rates: Sequence[int], *, progress: bool = True
) -> PrepareReport:
    """Prepare `sample_rates` for the folder and settings of a data config (`conf/data/*.yaml`)."""
    missing = [key for key in PREPARE_KEYS if key not in data_cfg]
    if missing:
        raise ConfigError(
            f"data.{missing[0]} is missing from the data config: add it (see conf/data/default.yaml)"
        )
    options = {key: data_cfg[key] for key in PREPARE_KEYS}
    options["workers"] = options.pop("prepare_workers")
    cache_dir = resolve_cache_dir(data_cfg)
    return prepare_corpus(
        resolve_raw_dir(data_cfg), cache_dir, sample_rates, **options, progress=progress
    )


def ensure_prepared(data_cfg: Mapping[str, Any], sr: int, *, progress: bool = True) -> Path:
    """The prepared `cache/sr<sr>` folder for this data config, (re)built only if missing or stale.

    What `LofiDataModule.prepare_data()` calls; without changes it only stats the audio files.
    """
    if isinstance(sr, bool) or not isinstance(sr, int) or sr < 1:
        raise ConfigError(f"data.sr={sr!r}: give a sample rate in Hz, e.g. 8000")
    report = prepare_from_config(data_cfg, [sr], progress=progress)
    if report.decoded and progress:
        print(report.headline(), file=sys.stderr)
    return report.cache_dir / f"sr{sr}"


def _builtin(data_cfg: Mapping[str, Any]) -> tuple[Path, Any, Any, Any, Any]:
    builtin = data_cfg.get("builtin")
    if builtin is None:
        raise ConfigError(
            "data.builtin is missing: add it (see conf/data/default.yaml) or set data.raw_dir"
        )
    try:
        return (
            Path(str(builtin["dir"])).expanduser().absolute(),
            builtin["tracks"],
            builtin["seconds"],
            builtin["sr"],
            builtin["seed"],
        )
    except KeyError as exc:
        raise ConfigError(
            f"data.builtin.{exc.args[0]} is missing: add it (see conf/data/default.yaml)"
        ) from None


def _check_rates(sample_rates: Iterable[int]) -> tuple[int, ...]:
    rates = (
        list(sample_rates)
        if isinstance(sample_rates, Iterable) and not isinstance(sample_rates, str)
        else []
    )
    if not rates or any(isinstance(r, bool) or not isinstance(r, int) or r < 1 for r in rates):
        raise ConfigError(
            f"data.sample_rates={sample_rates!r}: give a list of sample rates in Hz, e.g. [8000, 16000, 22050]"
        )
    return tuple(sorted(set(rates)))


def _check_workers(workers: int | None) -> int:
    if workers is None:
        return default_workers()
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ConfigError(
            f"data.prepare_workers={workers!r}: give a number of processes >= 1, or null for all cores"
        )
    return workers


def _ignored_example(ignored: Sequence[SkippedEntry]) -> str:
    if not ignored:
        return ""
    first = ignored[0]
    more = f" and {len(ignored) - 1} more files" if len(ignored) > 1 else ""
    return f" (found {first.path}: {first.reason}{more})"


@dataclass
class _Run:
    """What a prepare run has done so far: enough to say how much space it needs."""

    raw_dir: Path
    cache_dir: Path
    caches: list[RateCache] = field(default_factory=list)
    jobs: list[SourceJob] = field(default_factory=list)
    results: dict[str, SourceResult] = field(default_factory=dict)

    @property
    def raw_key(self) -> str:
        return str(self.raw_dir.resolve())

    def disk_full_line(self, exc: OSError) -> str:
        """One line: what could not be written, where, about how much this run needs there."""
        filename = _disk_full_filename(exc)
        if filename is not None:
            where, what = filename.parent, filename.name
            if where.parent.name == ".staging" or where.name == ".staging":
                where, what = self.cache_dir, "staged audio"
        else:
            where, what = self.cache_dir, "prepared audio"
        return disk_full_message(
            what,
            where,
            self.bytes_needed(),
            "the previous cache is intact: free some space and run prepare again",
        )

    def bytes_needed(self) -> int:
        """About how many bytes this run writes into the cache: the new shards of every rate
        (exact for the files already decoded, from the others' headers), the shards compaction
        rewrites, and the manifests."""
        total, unknown = 0, []
        for job in self.jobs:
            result = self.results.get(job.rel)
            if result is not None:
                total += 2 * sum(result.samples.values())
            else:
                unknown.append(job)
        probed, probed_in, rest_in = 0, 0, 0
        for i, job in enumerate(unknown):
            size = _size(job.path)
            if i < HEADER_PROBES:
                probed += int(2 * _header_seconds(job.path) * sum(job.rates))
                probed_in += size
            else:
                rest_in += size
        total += probed + (probed * rest_in // probed_in if probed_in else 0)
        total += sum(2 * cache.repack_samples for cache in self.caches)
        sources = len(self.jobs) + sum(len(c.previous.sources) for c in self.caches if c.previous)
        return total + MANIFEST_BYTES_PER_SOURCE * sources


def _disk_full_filename(exc: BaseException) -> Path | None:
    while exc is not None:
        if isinstance(exc, OSError) and exc.filename:
            return Path(os.fsdecode(exc.filename))
        exc = exc.__cause__ or exc.__context__
    return None


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


def _header_seconds(path: Path) -> float:
    """The length a file's header gives (0 when it cannot be read)."""
    try:
        with MonoReader(path) as reader:
            return reader.info.seconds
    except (AudioDecodeError, OSError):
        return 0.0

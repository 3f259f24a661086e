"""prepare: formats, rates, loudness, trimming, splits, parallel workers, bounded memory."""

from __future__ import annotations

import tracemalloc
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import soxr

from lofibeats.data.process import AudioSettings, SourceJob, process_source
from lofibeats.data.split import assign_splits

from helpers import RAW_SR, check_cache, prepare, source_audio, tone, write_tone


def rms_dbfs(pcm: np.ndarray) -> float:
    x = pcm.astype(np.float64) / 32767
    return 10 * np.log10(np.mean(x**2))


def test_formats_nested_folders_odd_names_and_several_rates(tmp_path: Path):
    raw = tmp_path / "raw"
    durations = {
        "a.wav": 0.5,
        "b.flac": 0.4,
        "c.ogg": 0.6,
        "d.mp3": 0.7,
        "e.aiff": 0.3,
        "LOUD.WAV": 0.25,
        "album one/ünïcödé track.AIF": 0.35,
        "album one/deeper/x y.wav": 0.45,
    }
    for rel, seconds in durations.items():
        write_tone(raw / rel, seconds, freq=300 + 40 * len(rel))
    (raw / "notes.txt").write_text("not audio")
    (raw / "album one" / "cover.jpg").write_bytes(b"\xff\xd8\xff")
    write_tone(raw / ".hidden.wav", 0.5)

    report = prepare(raw, tmp_path / "cache", rates=(8000, 16000, 22050))

    assert report.kept == len(durations) and report.decoded == len(durations)
    assert report.skipped == []
    assert {e.path: e.reason for e in report.ignored} == {
        ".hidden.wav": "hidden file",
        "album one/cover.jpg": "not audio: image",
        "notes.txt": "not audio: text or document",
    }
    assert "8000, 16000, 22050 Hz" in report.headline()
    for sr in (8000, 16000, 22050):
        manifest = check_cache(tmp_path / "cache" / f"sr{sr}")
        assert manifest.sr == sr and manifest.raw_dir == str(raw.resolve())
        assert sorted(s.path for s in manifest.sources) == sorted(durations)
        exact = [
            s
            for s in manifest.sources
            if Path(s.path).suffix.lower() in (".wav", ".flac", ".aiff", ".aif")
        ]
        for source in exact:
            assert source.samples == round(durations[source.path] * sr)
        assert manifest.total_seconds == pytest.approx(sum(durations.values()), abs=0.1)
        assert {s.split for s in manifest.sources} == {"train", "val"}


def test_loudness_normalisation_reaches_target_and_never_clips(tmp_path: Path):
    raw = tmp_path / "raw"
    write_tone(raw / "quiet.wav", 1.0, amp=0.01 * np.sqrt(2))  # -40 dBFS RMS
    loud = np.sign(tone(1.0)) * 2.0  # float file, 6 dB over full scale
    sf.write(raw / "hot.wav", loud, RAW_SR, subtype="FLOAT")

    prepare(raw, tmp_path / "on", rates=(16000,))
    quiet = source_audio(tmp_path / "on" / "sr16000", "quiet.wav")
    assert rms_dbfs(quiet) == pytest.approx(-20.0, abs=0.3)
    hot = source_audio(tmp_path / "on" / "sr16000", "hot.wav")
    assert np.abs(hot.astype(np.int32)).max() < 32767

    prepare(raw, tmp_path / "off", rates=(16000,), normalize_loudness=False)
    quiet_off = source_audio(tmp_path / "off" / "sr16000", "quiet.wav")
    expected = soxr.resample(sf.read(raw / "quiet.wav", dtype="float32")[0], RAW_SR, 16000)
    np.testing.assert_allclose(quiet_off / 32767, expected, atol=2 / 32767)
    hot_off = source_audio(tmp_path / "off" / "sr16000", "hot.wav")
    assert hot_off.max() == 32767 and hot_off.min() == -32767  # clipped, not wrapped


def test_trim_silence_cuts_leading_and_trailing_silence_only(tmp_path: Path):
    raw = tmp_path / "raw"
    raw.mkdir()
    gap = np.zeros((RAW_SR // 2, 1), dtype=np.float32)
    body = tone(1.0)
    body[RAW_SR // 3 : RAW_SR // 2] = 0  # silence inside is kept
    sf.write(raw / "padded.wav", np.concatenate([gap, body, gap]), RAW_SR)

    kept = prepare(raw, tmp_path / "cache", trim_silence=True)
    assert kept.seconds == pytest.approx(1.0, abs=0.02)
    untrimmed = prepare(raw, tmp_path / "cache", trim_silence=False)
    assert untrimmed.decoded == 1  # a sample-changing setting rebuilds
    assert untrimmed.seconds == pytest.approx(2.0, abs=1e-3)


def test_split_is_by_path_hash_with_a_tie_break_for_tiny_corpora(tmp_path: Path):
    paths = [f"track-{i:03d}.wav" for i in range(200)]
    splits = assign_splits(paths, 0.25)
    assert 30 <= sum(s == "val" for s in splits.values()) <= 70
    more = assign_splits([*paths, *(f"new-{i}.wav" for i in range(50))], 0.25)
    assert all(more[p] == splits[p] for p in paths)
    assert sorted(assign_splits(["a.wav", "b.wav"], 0.0).values()) == ["train", "val"]
    assert sorted(assign_splits(["a.wav", "b.wav"], 0.999).values()) == ["train", "val"]
    assert assign_splits(["only.wav"], 0.5) in ({"only.wav": "train"}, {"only.wav": "val"})

    raw = tmp_path / "raw"
    write_tone(raw / "one.wav")
    write_tone(raw / "two.wav")
    manifest = prepare(raw, tmp_path / "cache", val_fraction=0.0) and check_cache(
        tmp_path / "cache" / "sr8000"
    )
    assert sorted(s.split for s in manifest.sources) == ["train", "val"]


def test_parallel_workers_give_the_same_cache_as_one(tmp_path: Path):
    raw = tmp_path / "raw"
    for i in range(3):
        write_tone(raw / f"t{i}.wav", 0.3 + 0.1 * i, freq=200 + 100 * i, channels=2)
    prepare(raw, tmp_path / "one", rates=(8000, 16000), workers=1)
    prepare(raw, tmp_path / "two", rates=(8000, 16000), workers=2)
    for sr in (8000, 16000):
        a, b = check_cache(tmp_path / "one" / f"sr{sr}"), check_cache(tmp_path / "two" / f"sr{sr}")
        same = ("path", "hash", "samples", "split")  # shard and offset follow the finishing order
        assert [[getattr(s, k) for k in same] for s in a.sources] == [
            [getattr(s, k) for k in same] for s in b.sources
        ]
        for s in a.sources:
            np.testing.assert_array_equal(
                source_audio(tmp_path / "one" / f"sr{sr}", s.path),
                source_audio(tmp_path / "two" / f"sr{sr}", s.path),
            )


def test_long_files_stream_in_blocks_with_bounded_memory(tmp_path: Path):
    """Decoding, resampling and writing never hold a whole file in RAM: the peak does not grow."""
    sr = 44100
    settings = AudioSettings(True, -20.0, True, -60.0)

    def run(seconds: float, name: str, **limits) -> tuple[dict[int, np.ndarray], int]:
        path = write_tone(tmp_path / f"{seconds}.wav", seconds, sr, channels=2, subtype="PCM_16")
        staging = tmp_path / name
        staging.mkdir()
        job = SourceJob(0, path, path.name, (8000, 44100), settings, staging, **limits)
        tracemalloc.start()
        result = process_source(job)
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        assert result.status == "kept"
        staged = sorted(p.name for p in staging.iterdir())
        assert staged == ([] if "ram_bytes" not in limits else ["0.sr44100.i16", "0.sr8000.i16"])
        return {
            r: out if staged == [] else np.fromfile(out, "<i2") for r, out in result.output.items()
        }, peak

    _, short_peak = run(6.0, "short", block_frames=4096, ram_bytes=0)
    streamed, long_peak = run(40.0, "long", block_frames=4096, ram_bytes=0)
    assert long_peak < 1.3 * short_peak  # ~constant: per-block buffers, not the file
    assert long_peak < 40.0 * sr * 2 * 4 / 3  # well under the decoded float32 file
    in_ram, _ = run(40.0, "in_ram")
    for rate in (8000, 44100):
        assert len(streamed[rate]) == round(40.0 * rate)
        np.testing.assert_array_equal(streamed[rate], in_ram[rate])

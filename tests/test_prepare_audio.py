"""The building blocks of prepare: block decoding, streaming resampling, levels, shard packing."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import soxr

from lofibeats.audio.decode import AudioDecodeError, MonoReader
from lofibeats.audio.loudness import (
    CEILING_DBFS,
    LevelMeter,
    db_to_amplitude,
    normalization_gain_db,
    to_int16,
)
from lofibeats.audio.resample import MultiRateResampler
from lofibeats.data.pack import Piece, ShardPacker, read_shard_header
from lofibeats.errors import DataError

from helpers import tone, write_tone


def blocks_of(x: np.ndarray, seed: int = 0):
    """`x` cut into blocks of random sizes (1 .. 5000 samples)."""
    rng = np.random.default_rng(seed)
    pos = 0
    while pos < len(x):
        n = int(rng.integers(1, 5000))
        yield x[pos : pos + n]
        pos += n


def test_mono_reader_mixes_channels_in_bounded_blocks(tmp_path: Path):
    data = tone(0.3, 48000, channels=6)
    sf.write(tmp_path / "six.wav", data, 48000, subtype="FLOAT")
    with MonoReader(tmp_path / "six.wav", block_frames=1000) as reader:
        blocks = list(reader.blocks())
    assert reader.info.channels == 6 and reader.frames_read == len(data)
    assert max(len(b) for b in blocks) == 1000
    np.testing.assert_allclose(np.concatenate(blocks), data.mean(axis=1), atol=1e-6)
    with (
        pytest.raises(AudioDecodeError, match="not a recognised audio format"),
        MonoReader(Path(__file__)),
    ):
        pass
    sf.write(tmp_path / "slow.wav", data[:, :1], 100)
    with pytest.raises(AudioDecodeError, match="100 Hz"), MonoReader(tmp_path / "slow.wav"):
        pass


@pytest.mark.parametrize(
    ("in_rate", "out_rate"), [(44100, 8000), (44100, 22050), (22050, 22050), (8000, 48000)]
)
def test_streaming_resampler_matches_one_shot_resampling(in_rate: int, out_rate: int):
    x = np.random.default_rng(1).standard_normal(in_rate).astype(np.float32) * 0.1
    resampler = MultiRateResampler(in_rate, [out_rate])
    parts = [resampler.push(block)[out_rate] for block in blocks_of(x)]
    parts.append(resampler.flush()[out_rate])
    streamed = np.concatenate(parts)
    assert len(streamed) == round(len(x) * out_rate / in_rate)
    np.testing.assert_allclose(streamed, soxr.resample(x, in_rate, out_rate), atol=1e-4)


def test_gated_loudness_ignores_silence_and_is_block_size_independent():
    sr = 16000
    x = tone(8.0, sr, amp=0.1)[:, 0]  # RMS 0.1/sqrt(2): -23.0 dBFS
    padded = np.concatenate([np.zeros(3 * sr, np.float32), x, np.zeros(3 * sr, np.float32)])
    whole, pieces = LevelMeter(sr), LevelMeter(sr)
    whole.add(padded)
    for block in blocks_of(padded):
        pieces.add(block)
    for meter in (whole, pieces):
        meter.finish()
        assert meter.loudness_dbfs() == pytest.approx(20 * np.log10(0.1 / np.sqrt(2)), abs=0.3)
        assert meter.peak == pytest.approx(0.1, abs=1e-3)
        start, end = meter.active_range(db_to_amplitude(-60))
        assert abs(start - 3 * sr) <= meter.window and abs(end - 11 * sr) <= meter.window
    silent = LevelMeter(sr)
    silent.add(np.full(sr, 1e-5, np.float32))  # -100 dBFS: below the absolute gate
    silent.finish()
    assert silent.loudness_dbfs() is None


def test_limiter_never_clips_and_gain_is_capped_for_peaky_audio():
    x = np.linspace(-4, 4, 10001, dtype=np.float32)
    limited = to_int16(x, 0.0, limit=True)
    assert np.abs(limited.astype(np.int32)).max() <= round(32767 * db_to_amplitude(CEILING_DBFS))
    assert np.all(np.diff(limited.astype(np.int32)) >= 0)  # monotonic: no wrap, no fold-over
    small = np.float32([0.1, -0.2])
    np.testing.assert_array_equal(to_int16(small, 0.0, limit=True), np.rint(small * 32767))
    clipped = to_int16(x, 0.0, limit=False)
    assert clipped.min() == -32767 and clipped.max() == 32767
    assert normalization_gain_db(-40.0, 0.05, -20.0) == pytest.approx(20.0)
    assert normalization_gain_db(-40.0, 1.0, -20.0) < 6.0  # a full-scale peak limits the boost


def test_shards_fill_to_the_target_and_are_plain_npy(tmp_path: Path):
    staged = tmp_path / "staged.i16"
    np.arange(100, dtype="<i2").tofile(staged)
    packer = ShardPacker(tmp_path / "sr8000", 7, target_samples=64)
    placed = [
        packer.add(np.full(30, 1, np.int16)),
        packer.add(Piece("b", 50, staged, 20)),  # samples 10..59 of the file
        packer.add(np.full(100, 3, np.int16)),  # larger than the target: a shard of its own
        packer.add(np.full(5, 4, np.int16)),
    ]
    assert list(tmp_path.joinpath("sr8000").iterdir()) != [] and packer.written == [
        "shard-00007.npy",
        "shard-00008.npy",
    ]
    assert packer.finish() == ["shard-00007.npy", "shard-00008.npy", "shard-00009.npy"]
    assert placed == [
        ("shard-00007.npy", 0),
        ("shard-00007.npy", 30),
        ("shard-00008.npy", 0),
        ("shard-00009.npy", 0),
    ]
    first = np.load(tmp_path / "sr8000" / "shard-00007.npy")
    np.testing.assert_array_equal(first, np.concatenate([np.full(30, 1), np.arange(10, 60)]))
    assert read_shard_header(tmp_path / "sr8000" / "shard-00009.npy") == (5, 128)
    assert sorted(p.name for p in (tmp_path / "sr8000").iterdir()) == packer.written


def test_aborted_packing_leaves_nothing_and_damaged_shards_are_refused(tmp_path: Path):
    packer = ShardPacker(tmp_path, 1, target_samples=10)
    packer.add(np.zeros(20, np.int16))
    packer.add(np.zeros(5, np.int16))
    packer.abort()
    assert list(tmp_path.iterdir()) == []
    np.save(tmp_path / "shard-00001.npy", np.arange(100, dtype=np.int16))
    data = (tmp_path / "shard-00001.npy").read_bytes()
    (tmp_path / "shard-00001.npy").write_bytes(data[:-10])
    with pytest.raises(DataError, match="header promises"):
        read_shard_header(tmp_path / "shard-00001.npy")
    np.save(tmp_path / "shard-00002.npy", np.zeros((2, 2), np.int16))
    with pytest.raises(DataError, match="not 1-D int16"):
        read_shard_header(tmp_path / "shard-00002.npy")


def test_decoding_a_wav_truncated_mid_file_is_refused(tmp_path: Path):
    path = write_tone(tmp_path / "t.wav", 1.0)
    path.write_bytes(path.read_bytes()[:-1000])
    with pytest.raises(AudioDecodeError, match="truncated"), MonoReader(path):
        pass

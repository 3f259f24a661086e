"""Every format a music folder commonly holds is decoded: tones encoded into each container with
PyAV (FFmpeg) or soundfile, decoded by `MonoReader` and by a whole `prepare` run."""

from __future__ import annotations

import tracemalloc
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from lofibeats.audio.decode import AUDIO_EXTENSIONS, AudioDecodeError, MonoReader, _FFmpegSource

from helpers import check_cache, prepare, sine

av = pytest.importorskip("av")

FREQ = 440.0


def tone(seconds: float, sr: int, channels: int = 2, amp: float = 0.3) -> np.ndarray:
    """[channels, frames] float32: a FREQ sine, in phase on every channel but the second's
    polarity flipped for a third of its length (so a decoder that drops channels shows)."""
    x = np.repeat(sine(FREQ, amp, seconds, sr)[None], channels, axis=0)
    if channels > 1:
        x[1, : x.shape[1] // 3] *= -1
    return x.astype(np.float32)


def encode(
    path: Path,
    codec: str | None,
    sr: int = 44100,
    seconds: float = 0.5,
    channels: int = 2,
    container: str | None = None,
    video: str | None = None,
) -> Path:
    """Encode a tone with FFmpeg (through PyAV): an audio track in `codec` (None: no audio), and a
    few frames of `video` (an FFmpeg video encoder) when given."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w", format=container) as out:
        vstream = astream = None
        if video:
            vstream = out.add_stream(video, rate=10)
            vstream.width, vstream.height, vstream.pix_fmt = 32, 32, "yuv420p"
        if codec:
            options = {"strict": "experimental"} if codec == "vorbis" else {}
            astream = out.add_stream(codec, rate=sr, options=options)
            astream.layout = "stereo" if channels == 2 else "mono"
            if codec == "wmav2":
                astream.bit_rate = 64000
            x = tone(seconds, sr, channels)
            size = astream.codec_context.frame_size or 1024
            for start in range(0, x.shape[1], size):
                chunk = np.ascontiguousarray(x[:, start : start + size])
                frame = av.AudioFrame.from_ndarray(chunk, format="fltp", layout=astream.layout.name)
                frame.sample_rate, frame.pts = sr, start
                out.mux(astream.encode(frame))
            out.mux(astream.encode(None))
        if vstream is not None:
            for i in range(round(seconds * 10)):
                image = np.full((32, 32, 3), 20 * i, np.uint8)
                frame = av.VideoFrame.from_ndarray(image, format="rgb24")
                frame.pts = i
                out.mux(vstream.encode(frame))
            out.mux(vstream.encode(None))
    return path


# name -> (how to make it, sample rate, decoder that reads it). Lossy codecs add or drop up to a
# frame of padding, so lengths are checked loosely.
FFMPEG_FILES = {
    "aac in mp4.m4a": ({"codec": "aac"}, 44100),
    "audiobook.M4B": ({"codec": "alac", "container": "ipod"}, 44100),
    "raw adts.aac": ({"codec": "aac", "container": "adts"}, 44100),
    "clip with sound.mp4": ({"codec": "aac", "video": "mpeg4"}, 44100),
    "opus.webm": ({"codec": "libopus"}, 48000),
    "vp8 and opus.webm": ({"codec": "libopus", "video": "libvpx"}, 48000),
    "vorbis.mka": ({"codec": "vorbis"}, 44100),
    "flac and video.mkv": ({"codec": "flac", "video": "mpeg4"}, 22050),
    "windows media.wma": ({"codec": "wmav2"}, 44100),
    "ogg opus.opus": ({"codec": "libopus", "container": "ogg"}, 48000),
    "ogg flac.oga": ({"codec": "flac", "container": "ogg"}, 32000),
}


def dominant_hz(x: np.ndarray, sr: int) -> float:
    spectrum = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    return float(np.argmax(spectrum) * sr / len(x))


@pytest.mark.parametrize("name", sorted(FFMPEG_FILES))
def test_each_container_decodes_to_the_tone_it_holds(tmp_path: Path, name: str):
    make, sr = FFMPEG_FILES[name]
    path = encode(tmp_path / name, sr=sr, **make)
    assert Path(name).suffix.lower() in AUDIO_EXTENSIONS
    with MonoReader(path, block_frames=1000) as reader:
        blocks = list(reader.blocks())
    x = np.concatenate(blocks)
    assert reader.info.sr == sr and reader.info.channels == 2
    assert max(len(b) for b in blocks) <= 1000 and all(b.dtype == np.float32 for b in blocks)
    assert reader.frames_read == len(x)
    assert abs(len(x) - 0.5 * sr) <= 0.1 * sr, len(x)
    assert dominant_hz(x, sr) == pytest.approx(FREQ, abs=4)
    n = len(x)
    rms = float(np.sqrt(np.mean(x[n // 2 : -n // 10] ** 2)))
    assert rms == pytest.approx(0.3 / np.sqrt(2), rel=0.05)  # in phase: the channels' average
    assert float(np.sqrt(np.mean(x[n // 20 : n // 4] ** 2))) < 0.02  # opposite: they cancel
    assert reader.nonfinite == 0


def test_libsndfile_formats_keep_exact_lengths_and_upper_case_names(tmp_path: Path):
    x = tone(0.25, 22050).T
    for name, fmt in {"a.WAV": None, "b.aif": "AIFF", "c.AIFF": "AIFF", "d.oga": "OGG"}.items():
        sf.write(tmp_path / name, x, 22050, format=fmt)
        with MonoReader(tmp_path / name) as reader:
            n = sum(len(b) for b in reader.blocks())
        assert reader.info.decoder == "soundfile" and n == len(x), name


def test_a_video_without_sound_is_refused_with_that_reason(tmp_path: Path):
    path = encode(tmp_path / "silent film.mp4", None, video="mpeg4")
    with pytest.raises(AudioDecodeError, match=r"^no audio track \(a video without sound\)$"):
        MonoReader(path).__enter__()


def test_garbage_with_an_ffmpeg_extension_is_refused_and_an_ogg_flac_falls_back(tmp_path: Path):
    (tmp_path / "text.m4a").write_text("not audio at all\n" * 50)
    with pytest.raises(AudioDecodeError, match="not a recognised audio format"):
        MonoReader(tmp_path / "text.m4a").__enter__()
    # libsndfile cannot open this Ogg FLAC; FFmpeg can
    path = encode(tmp_path / "x.ogg", "flac", container="ogg")
    with MonoReader(path) as reader:
        assert reader.info.decoder == "ffmpeg"
        assert sum(len(b) for b in reader.blocks()) == round(0.5 * 44100)


@pytest.mark.parametrize("fmt", ["u8", "s16", "s32", "flt", "dbl", "u8p", "s16p", "s32p", "fltp"])
def test_every_ffmpeg_sample_format_becomes_the_same_mono_float(fmt: str):
    x = tone(0.01, 8000, channels=2, amp=0.5)  # [2, 80]
    scale = {"u8": 128, "s16": 32768, "s32": 2**31, "flt": 1, "dbl": 1}[fmt.rstrip("p")]
    dtype = {"u8": np.uint8, "s16": np.int16, "s32": np.int32, "flt": np.float32}
    data = np.round(x * scale) if scale > 1 else x
    if fmt.startswith("u8"):
        data = data + 128
    data = data.astype(dtype.get(fmt.rstrip("p"), np.float64))
    if not fmt.endswith("p"):
        data = np.ascontiguousarray(data.T).reshape(1, -1)  # packed: interleaved
    frame = av.AudioFrame.from_ndarray(data, format=fmt, layout="stereo")
    frame.sample_rate = 8000
    source = _FFmpegSource.__new__(_FFmpegSource)
    source.info = type("Info", (), {"sr": 8000})()
    mono = source._mono(frame)
    assert mono.dtype == np.float32
    np.testing.assert_allclose(mono, x.mean(axis=0), atol=1.5 / 128)


def test_ffmpeg_decoding_memory_is_bounded_by_the_block_size(tmp_path: Path):
    path = encode(tmp_path / "long.m4a", "aac", sr=48000, seconds=8.0)
    tracemalloc.start()
    try:
        with MonoReader(path, block_frames=4096) as reader:
            for _ in reader.blocks():
                pass
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    whole = 4 * reader.frames_read  # the file as one mono float32 array
    assert reader.frames_read >= 7.9 * 48000
    assert peak < whole / 4, (peak, whole)


def test_prepare_keeps_every_format_and_lists_the_video_without_sound(tmp_path: Path):
    raw = tmp_path / "music"
    for name, (make, sr) in FFMPEG_FILES.items():
        encode(raw / "ffmpeg" / name, sr=sr, **make)
    x = tone(0.5, 44100).T
    for name, fmt in {"a.wav": None, "b.flac": None, "c.ogg": None, "d.AIF": "AIFF"}.items():
        sf.write(raw / name, x, 44100, format=fmt)
    encode(raw / "ffmpeg" / "silent film.mp4", None, video="mpeg4")

    report = prepare(raw, tmp_path / "cache", rates=(16000,))

    manifest = check_cache(tmp_path / "cache" / "sr16000")
    assert report.kept == len(FFMPEG_FILES) + 4 == len(manifest.sources)
    assert {s.path: s.reason for s in report.skipped} == {
        "ffmpeg/silent film.mp4": "no audio track (a video without sound)"
    }
    for source in manifest.sources:
        assert source.seconds == pytest.approx(0.5, abs=0.06), source.path

"""Decode an audio file block by block into mono float32, so memory never grows with its length.

Two decoders, chosen by extension, each falling back on the other when it cannot open a file:

- libsndfile (through soundfile) for what it reads well: WAV, FLAC, AIFF, Ogg Vorbis, MP3, CAF...
- FFmpeg (through PyAV, whose wheels carry the codecs) for AAC/M4A/MP4, WebM/MKA/MKV, WMA, Opus,
  ALAC, APE, WavPack, AC-3 and the audio track of video files. Opus goes to FFmpeg first: it
  decoded the real-corpus Opus files 3x faster than libsndfile (660x vs 221x real time), and
  `prepare` ran at 88x instead of 46-55x real time on them (one worker). FFmpeg's own Opus
  decoder and libopus (libsndfile's) agree to ~-50 dB RMS; the lengths are identical.

A file libsndfile cannot open (an Ogg FLAC, an MP3 on an old libsndfile) is tried with FFmpeg and
the other way round; when neither opens it, the first decoder's reason is reported.

Anything wrong with the file itself raises :class:`AudioDecodeError`, whose message is a short
reason ("empty file (0 bytes)", "truncated: ...", "not a recognised audio format ...", "no audio
track (a video without sound)") that `prepare` records as the reason it skipped the file.

Decisions:

- Non-finite samples (NaN/inf, only possible in float data) are replaced by 0 and counted in
  :attr:`MonoReader.nonfinite`, so one bad region does not cost the whole file; `prepare` reports
  the count as a warning.
- A file whose header promises more audio than it holds is *truncated* and refused: for WAV/AIFF
  (the header's data size exceeds the bytes present) and for every libsndfile format with an exact
  length (FLAC, CAF, ...: fewer frames decoded than declared). MP3, Ogg and everything FFmpeg
  decodes only carry estimates of their length, so a shortfall there is kept and reported in
  :attr:`MonoReader.shortfall_warning`.
- FFmpeg's sample rate and channel count are taken from the first decoded frame (HE-AAC headers
  give half the real rate); a later frame at another rate is resampled to the first one's.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf

from lofibeats.errors import DataError

# What libsndfile reads (and is tried first for).
SNDFILE_EXTENSIONS = frozenset(
    {".wav", ".wave", ".flac", ".ogg", ".oga", ".mp3", ".aiff", ".aif", ".aifc", ".caf", ".w64"}
)
# What FFmpeg reads (and is tried first for). Video containers: their audio track is used.
FFMPEG_EXTENSIONS = frozenset(
    {".opus", ".m4a", ".m4b", ".aac", ".mp4", ".m4v", ".mov", ".3gp", ".webm", ".weba", ".mka"}
    | {".mkv", ".wma", ".asf", ".wmv", ".avi", ".ac3", ".mp2", ".ape", ".wv", ".tta", ".amr"}
)
AUDIO_EXTENSIONS = SNDFILE_EXTENSIONS | FFMPEG_EXTENSIONS
VIDEO_EXTENSIONS = frozenset({".mp4", ".m4v", ".mov", ".3gp", ".webm", ".mkv", ".wmv", ".avi"})
BLOCK_FRAMES = 1 << 16
MIN_SAMPLE_RATE = 1000  # below this a header is corrupt (or the file is not meant as audio)

# Formats whose frame count is an estimate (bitrate- or page-based), not a promise.
_ESTIMATED_LENGTH = frozenset({"MP3", "OGG"})
# libsndfile's log line for a RIFF/AIFF audio chunk whose declared size exceeds the file.
_SHORT_CHUNK = re.compile(r"^\s*(?:data|SSND)\s*:\s*(\d+)\s*\(should be (\d+)\)", re.MULTILINE)
# libsndfile's frame count for a stream of unknown length.
_UNKNOWN_FRAMES = 2**63 - 1
# Declared sizes that mean "unknown" (streamed WAVs), not a promise.
_UNKNOWN_SIZES = frozenset({0, 0xFFFFFFFF, 0x7FFFFFFF})
# FFmpeg sample formats (packed and planar) -> (numpy dtype, scale to [-1, 1), offset).
_AV_SAMPLES = {
    "u8": (np.uint8, 1 / 128, -128.0),
    "s16": (np.int16, 1 / 32768, 0.0),
    "s32": (np.int32, 1 / 2**31, 0.0),
    "s64": (np.int64, 1 / 2**63, 0.0),
    "flt": (np.float32, 1.0, 0.0),
    "dbl": (np.float64, 1.0, 0.0),
}


class AudioDecodeError(DataError):
    """The file cannot be decoded; the message is the reason, without the path."""


class _CannotOpen(AudioDecodeError):
    """This decoder cannot open the file (the other one may)."""

    def __init__(self, reason: str, decoder: str, unrecognised: bool = False):
        super().__init__(reason)
        self.decoder = decoder
        self.unrecognised = unrecognised  # no format matched the content


def _reason(failed: list[_CannotOpen]) -> _CannotOpen:
    """Why no decoder opened a file: the first decoder's reason, unless FFmpeg (which probes the
    content for every format it knows) found no format at all: then that is the reason."""
    if any(e.unrecognised and e.decoder == "ffmpeg" for e in failed):
        return next(e for e in failed if e.unrecognised)
    return failed[0]


class _Corrupt(Exception):
    """FFmpeg failed in the middle of the stream; the message is its reason."""


@dataclass(frozen=True)
class AudioInfo:
    sr: int
    channels: int
    frames: int  # exact for WAV/FLAC/AIFF..., an estimate for MP3/Ogg/FFmpeg, 0 when unknown
    format: str  # libsndfile's major format ("WAV", "OGG") or FFmpeg's container ("mp4")
    subtype: str  # libsndfile's subtype ("PCM_16", "VORBIS") or FFmpeg's codec ("aac")
    decoder: str = "soundfile"  # "soundfile" | "ffmpeg"

    @property
    def seconds(self) -> float:
        return self.frames / self.sr

    @property
    def exact_length(self) -> bool:
        return (
            self.decoder == "soundfile"
            and self.format not in _ESTIMATED_LENGTH
            and self.frames != _UNKNOWN_FRAMES
        )


class MonoReader:
    """`with MonoReader(path) as r: for block in r.blocks(): ...` yields mono float32 blocks.

    Channels are averaged. After iterating, :attr:`frames_read` and :attr:`nonfinite` say how
    many frames were decoded and how many non-finite samples were zeroed.
    """

    def __init__(self, path: Path, block_frames: int = BLOCK_FRAMES):
        self.path = Path(path)
        self.block_frames = int(block_frames)
        self.frames_read = 0
        self.nonfinite = 0
        self.info: AudioInfo | None = None
        self._source: _SndfileSource | _FFmpegSource | None = None

    def __enter__(self) -> MonoReader:
        try:
            size = self.path.stat().st_size
        except OSError as exc:
            raise AudioDecodeError(f"cannot read: {exc.strerror or exc}") from None
        if size == 0:
            raise AudioDecodeError("empty file (0 bytes)")
        suffix = self.path.suffix.lower()
        openers = (
            (_FFmpegSource, _SndfileSource)
            if suffix in FFMPEG_EXTENSIONS
            else (_SndfileSource, _FFmpegSource)
        )
        failed: list[_CannotOpen] = []
        for opener in openers:
            try:
                self._source = opener(self.path, suffix)
                break
            except _CannotOpen as exc:
                failed.append(exc)
            except AudioDecodeError:
                if not failed:  # the first decoder's verdict on the file itself
                    raise
        else:
            raise AudioDecodeError(str(_reason(failed))) from None
        self.info = self._source.info
        if self.info.sr < MIN_SAMPLE_RATE or self.info.channels <= 0:
            info = self.info
            self.close()
            raise AudioDecodeError(
                f"implausible header ({info.sr} Hz, {info.channels} channels; "
                f"audio needs >= {MIN_SAMPLE_RATE} Hz)"
            )
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        if self._source is not None:
            self._source.close()
            self._source = None

    def blocks(self) -> Iterator[np.ndarray]:
        """Mono float32 blocks of up to `block_frames` frames, each a new array."""
        if self._source is None or self.info is None:
            raise RuntimeError("use MonoReader as a context manager")
        for block in self._source.blocks(self.block_frames, self):
            n = len(block)
            if self._source.check_finite:
                finite = np.isfinite(block)
                if not finite.all():
                    self.nonfinite += int(block.size - np.count_nonzero(finite))
                    block[~finite] = 0.0
            self.frames_read += n
            yield block
        info = self.info
        if info.exact_length and self.frames_read < info.frames:
            raise AudioDecodeError(f"truncated: decoded {self.frames_read} of {info.frames} frames")

    @property
    def shortfall_warning(self) -> str | None:
        """For formats with an estimated length: a note when far fewer frames decoded than that."""
        info = self.info
        if info is None or info.exact_length or info.frames <= 0:
            return None
        missing = info.frames - self.frames_read
        if missing > max(info.sr // 10, info.frames // 100):
            return (
                f"decoded {self.frames_read / info.sr:.1f} s but the header estimates "
                f"{info.seconds:.1f} s: the file may be truncated"
            )
        return None


class _SndfileSource:
    """libsndfile through soundfile."""

    def __init__(self, path: Path, suffix: str):
        try:
            self._file = sf.SoundFile(path)
        except sf.LibsndfileError as exc:
            message = exc.error_string.rstrip(".")
            if "not recognised" in message:
                raise _CannotOpen(
                    f"not a recognised audio format ({message})", "soundfile", unrecognised=True
                ) from None
            raise _CannotOpen(
                f"cannot decode: unsupported codec or corrupt header ({message})", "soundfile"
            ) from None
        except (sf.SoundFileError, OSError) as exc:
            raise _CannotOpen(f"cannot open: {exc}", "soundfile") from None
        f = self._file
        self.info = AudioInfo(
            int(f.samplerate), int(f.channels), int(f.frames), f.format, f.subtype
        )
        self.check_finite = not f.subtype.startswith("PCM")
        short = _declared_chunk_shortfall(f.extra_info)
        if short is not None:
            self.close()
            declared, present = short
            raise AudioDecodeError(
                f"truncated: header promises {declared} bytes of audio, file holds {present}"
            )

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def blocks(self, block_frames: int, reader: MonoReader) -> Iterator[np.ndarray]:
        f, channels = self._file, self.info.channels
        buf = np.empty((block_frames, channels), dtype=np.float32)
        while True:
            try:
                block = f.read(block_frames, dtype="float32", always_2d=True, out=buf)
            except (sf.SoundFileError, OSError) as exc:
                message = (
                    getattr(exc, "error_string", str(exc)).removeprefix("Error : ").rstrip(".")
                )
                raise AudioDecodeError(
                    f"corrupt or truncated after {reader.frames_read} frames ({message})"
                ) from None
            if len(block) == 0:
                return
            yield _mix_to_mono(block)


class _FFmpegSource:
    """FFmpeg through PyAV: the first (default) audio track of any container it demuxes."""

    check_finite = True

    def __init__(self, path: Path, suffix: str):
        import av  # only when used: a WAV-only corpus never loads FFmpeg

        self._av = av
        self._container = None
        try:
            self._container = av.open(os.fspath(path), metadata_errors="ignore")
        except av.FFmpegError as exc:
            reason = _av_reason(exc)
            if isinstance(exc, av.error.InvalidDataError):
                raise _CannotOpen(
                    f"not a recognised audio format ({reason})", "ffmpeg", unrecognised=True
                ) from None
            raise _CannotOpen(f"cannot open: {reason}", "ffmpeg") from None
        container = self._container
        try:
            stream = container.streams.best("audio")
            if stream is None:
                video = bool(container.streams.video) or suffix in VIDEO_EXTENSIONS
                raise AudioDecodeError(
                    "no audio track (a video without sound)" if video else "no audio track"
                )
            if stream.codec_context is None:
                raise _CannotOpen("cannot decode: no decoder for its audio codec", "ffmpeg")
            self._frames = self._decoded(stream)
            try:
                self._first = next(self._frames)
            except StopIteration:
                raise AudioDecodeError("no audio: the audio track holds no samples") from None
            except _Corrupt as exc:
                raise _CannotOpen(
                    f"cannot decode: corrupt or unsupported ({exc})", "ffmpeg"
                ) from None
        except BaseException:
            self.close()
            raise
        first = self._first
        sr, channels = int(first.sample_rate), len(first.layout.channels)
        self.info = AudioInfo(
            sr,
            channels,
            _estimated_frames(stream, container, sr),
            container.format.name.split(",")[0],
            stream.codec_context.name,
            decoder="ffmpeg",
        )
        self._resampler = None

    def close(self) -> None:
        if self._container is not None:
            self._container.close()
            self._container = None

    def _decoded(self, stream: Any) -> Iterator[Any]:
        """Decoded frames; a decoder or demuxer failure is an AudioDecodeError."""
        av = self._av
        try:
            for packet in self._container.demux(stream):
                yield from packet.decode()
        except av.FFmpegError as exc:
            raise _Corrupt(_av_reason(exc)) from None

    def blocks(self, block_frames: int, reader: MonoReader) -> Iterator[np.ndarray]:
        pending: list[np.ndarray] = []
        held = 0
        first, self._first = self._first, None
        try:
            for mono in self._monos(first):
                pending.append(mono)
                held += len(mono)
                if held < block_frames:
                    continue
                joined = np.concatenate(pending) if len(pending) > 1 else pending[0]
                whole = len(joined) - len(joined) % block_frames
                for start in range(0, whole, block_frames):
                    yield joined[start : start + block_frames]
                pending = [joined[whole:]] if whole < len(joined) else []
                held = len(joined) - whole
        except _Corrupt as exc:
            raise AudioDecodeError(
                f"corrupt or truncated after {reader.frames_read + held} frames ({exc})"
            ) from None
        if pending:
            yield np.concatenate(pending) if len(pending) > 1 else pending[0]

    def _monos(self, first: Any) -> Iterator[np.ndarray]:
        """Every decoded frame as mono float32 at the first frame's rate (empty ones dropped)."""
        if first is not None:
            yield self._mono(first)
        for frame in self._frames:
            mono = self._mono(frame)
            if len(mono):
                yield mono
        if self._resampler is not None:
            for frame in self._resampler.resample(None):
                yield self._mono(frame)

    def _mono(self, frame: Any) -> np.ndarray:
        """One decoded frame as a new mono float32 array at the file's rate."""
        if frame.sample_rate != self.info.sr:
            if self._resampler is None:
                self._resampler = self._av.AudioResampler(format="fltp", rate=self.info.sr)
            parts = [self._mono(f) for f in self._resampler.resample(frame)]
            return np.concatenate(parts) if parts else np.zeros(0, np.float32)
        name = frame.format.name
        planar = name.endswith("p")
        dtype, scale, offset = _AV_SAMPLES[name.removesuffix("p")]
        data = frame.to_ndarray()
        channels = len(frame.layout.channels)
        if not planar:  # packed: one row of interleaved samples
            data = data.reshape(-1, channels).T
        mono = data[0].astype(np.float32)
        for c in range(1, channels):
            mono += data[c]
        if offset:
            mono += np.float32(offset * channels)
        factor = scale / channels
        if factor != 1.0:
            mono *= np.float32(factor)
        return mono


def _estimated_frames(stream: Any, container: Any, sr: int) -> int:
    """The track's length in frames from the container's header, 0 when it gives none."""
    if stream.duration is not None and stream.time_base is not None:
        seconds = stream.duration * stream.time_base
    elif container.duration is not None:
        seconds = Fraction(container.duration, 1_000_000)  # AV_TIME_BASE
    else:
        return 0
    return max(0, round(seconds * sr))


def _av_reason(exc: Exception) -> str:
    return str(getattr(exc, "strerror", None) or exc).rstrip(".")


def _mix_to_mono(block: np.ndarray) -> np.ndarray:
    """Average the channels of a [frames, channels] block into a new 1-D float32 array."""
    mono = block[:, 0].copy()
    channels = block.shape[1]
    for c in range(1, channels):
        mono += block[:, c]
    if channels > 1:
        mono *= np.float32(1.0 / channels)
    return mono


def _declared_chunk_shortfall(log: str) -> tuple[int, int] | None:
    """(declared, present) bytes when libsndfile logged an audio chunk larger than the file."""
    for match in _SHORT_CHUNK.finditer(log):
        declared, present = int(match.group(1)), int(match.group(2))
        if declared > present and declared not in _UNKNOWN_SIZES:
            return declared, present
    return None

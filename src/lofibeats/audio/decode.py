"""Decode an audio file block by block into mono float32, so memory never grows with its length.

Anything wrong with the file itself raises :class:`AudioDecodeError`, whose message is a short
reason ("empty file (0 bytes)", "truncated: ...", "not a recognised audio format ...") that
`prepare` records as the reason it skipped the file.

Decisions:

- Non-finite samples (NaN/inf, only possible in float files) are replaced by 0 and counted in
  :attr:`MonoReader.nonfinite`, so one bad region does not cost the whole file; `prepare` reports
  the count as a warning.
- A file whose header promises more audio than it holds is *truncated* and refused: for WAV/AIFF
  (the header's data size exceeds the bytes present) and for every format with an exact length
  (FLAC, CAF, ...: fewer frames decoded than declared). MP3 and Ogg only carry estimates of their
  length, so a shortfall there is kept and reported in :attr:`MonoReader.shortfall_warning`.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf

from lofibeats.errors import DataError

AUDIO_EXTENSIONS = frozenset({".wav", ".flac", ".ogg", ".mp3", ".aiff", ".aif"})
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


class AudioDecodeError(DataError):
    """The file cannot be decoded; the message is the reason, without the path."""


@dataclass(frozen=True)
class AudioInfo:
    sr: int
    channels: int
    frames: int
    format: str
    subtype: str

    @property
    def seconds(self) -> float:
        return self.frames / self.sr


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
        self._file: sf.SoundFile | None = None
        self.info: AudioInfo | None = None

    def __enter__(self) -> MonoReader:
        try:
            size = self.path.stat().st_size
        except OSError as exc:
            raise AudioDecodeError(f"cannot read: {exc.strerror or exc}") from None
        if size == 0:
            raise AudioDecodeError("empty file (0 bytes)")
        try:
            self._file = sf.SoundFile(self.path)
        except sf.LibsndfileError as exc:
            message = exc.error_string.rstrip(".")
            if "not recognised" in message:
                raise AudioDecodeError(f"not a recognised audio format ({message})") from None
            raise AudioDecodeError(
                f"cannot decode: unsupported codec or corrupt header ({message})"
            ) from None
        except (sf.SoundFileError, OSError) as exc:
            raise AudioDecodeError(f"cannot open: {exc}") from None
        f = self._file
        self.info = AudioInfo(
            int(f.samplerate), int(f.channels), int(f.frames), f.format, f.subtype
        )
        if f.samplerate < MIN_SAMPLE_RATE or f.channels <= 0:
            self.close()
            raise AudioDecodeError(
                f"implausible header ({f.samplerate} Hz, {f.channels} channels; "
                f"audio needs >= {MIN_SAMPLE_RATE} Hz)"
            )
        short = _declared_chunk_shortfall(f.extra_info)
        if short is not None:
            self.close()
            declared, present = short
            raise AudioDecodeError(
                f"truncated: header promises {declared} bytes of audio, file holds {present}"
            )
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def blocks(self) -> Iterator[np.ndarray]:
        """Mono float32 blocks of up to `block_frames` frames, each a new array."""
        if self._file is None or self.info is None:
            raise RuntimeError("use MonoReader as a context manager")
        f, info = self._file, self.info
        check_finite = not info.subtype.startswith("PCM")
        buf = np.empty((self.block_frames, info.channels), dtype=np.float32)
        while True:
            try:
                block = f.read(self.block_frames, dtype="float32", always_2d=True, out=buf)
            except (sf.SoundFileError, OSError) as exc:
                message = (
                    getattr(exc, "error_string", str(exc)).removeprefix("Error : ").rstrip(".")
                )
                raise AudioDecodeError(
                    f"corrupt or truncated after {self.frames_read} frames ({message})"
                ) from None
            n = len(block)
            if n == 0:
                break
            if check_finite:
                finite = np.isfinite(block)
                if not finite.all():
                    self.nonfinite += int(block.size - np.count_nonzero(finite))
                    block[~finite] = 0.0
            self.frames_read += n
            yield _mix_to_mono(block)
        exact = info.format not in _ESTIMATED_LENGTH and info.frames != _UNKNOWN_FRAMES
        if exact and self.frames_read < info.frames:
            raise AudioDecodeError(f"truncated: decoded {self.frames_read} of {info.frames} frames")

    @property
    def shortfall_warning(self) -> str | None:
        """For MP3/Ogg: a note when far fewer frames decoded than the header estimated."""
        if self.info is None or self.info.format not in _ESTIMATED_LENGTH:
            return None
        missing = self.info.frames - self.frames_read
        if missing > max(self.info.sr // 10, self.info.frames // 100):
            return (
                f"decoded {self.frames_read / self.info.sr:.1f} s but the header estimates "
                f"{self.info.seconds:.1f} s: the file may be truncated"
            )
        return None


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

"""Two measures that tell music from noise: a steady beat and a tonal (non-flat) spectrum.

`audio_sanity` flags broken output (silence, DC, clipping, white noise); these two tell whether
audio that passes it sounds like music, as defined in issue 11:

* **beat** (:func:`beat_strength`): the onset envelope (half-wave rectified log-mel flux, 40 mels,
  100 frames/s), mean removed, its normalised autocorrelation r(lag) = sum e_t e_t+lag / sum e_t^2,
  the highest r over lags 0.25-2.0 s (30-240 BPM), median over 4-s segments. A steady pulse
  repeats its onsets, so r is high at the beat period; noise gives only the chance maximum of
  ~175 lags of a random sequence (about 0.12).
* **flatness** (:func:`band_flatness`): geometric over arithmetic mean of the power spectrum
  between 100 and 4000 Hz of 64-ms Hann frames, median over frames. Tones and chords put their
  power in a few bins (near 0); white noise spreads it evenly (exp(-euler_gamma) ~= 0.56). The band
  leaves out the rumble and the air above 4 kHz, where low-passed music and noise look alike.

Both work at any sample rate; the lags and segments are in seconds, converted with the actual
frame rate (sr / round(sr / 100)). The 40 mel bands span 0 to sr / 2, so compare beats at one
rate (issue 11's figures are at 16 kHz): a built-in track reads 0.63 at 16 kHz but 0.45 at
44.1 kHz, where more of the bands hold only the hiss above its low-pass.

Neither tells music from a replay of itself (a looped 0.2-s fragment has a steadier beat than
the music it came from): `lofibeats.metrics.repetition` measures that, and `music_stats`
reports all of them.
"""

from __future__ import annotations

import math

import numpy as np

from lofibeats.audio.spectrogram import log_mel_spectrogram
from lofibeats.metrics.repetition import repetition
from lofibeats.metrics.sanity import as_signal, audio_sanity

ONSET_MELS = 40
ONSET_RATE = 100  # onset envelope frames per second
ONSET_WINDOW_SECONDS = 0.04  # STFT window of the onset envelope (the next power of two)
BEAT_LAGS_SECONDS = (0.25, 2.0)  # 240 down to 30 BPM
SEGMENT_SECONDS = 4.0
MIN_BEAT_SECONDS = 1.0  # below this the lags searched would not reach 0.5 s (120 BPM)
# A segment whose onset envelope varies less than this (std, dB summed over the mel bands) has
# no onsets and scores 0. Music varies by tens of dB, white noise by ~5; a steady tone only
# by the STFT's phase jitter (< 1 dB), which repeats with the hop and would otherwise read as a
# near-perfect beat once normalised (a 440 Hz sine at 16 kHz: 0.94).
MIN_ONSET_STD_DB = 1.0

FLATNESS_BAND_HZ = (100.0, 4000.0)
FLATNESS_FRAME_SECONDS = 0.064
_AMIN = 1e-20  # power floor inside the logarithm
_SILENT_FRAME_RMS = 1e-5  # frames below -100 dBFS have no spectral shape and are left out


def onset_envelope(x: np.ndarray, sr: int) -> tuple[np.ndarray, float]:
    """(half-wave rectified log-mel flux per frame, frames per second).

    The frames whose STFT window reaches past either end of `x` (zero-padded there) are dropped:
    the step from padding to sound would read as an onset at the edges of every clip.
    """
    x = as_signal(x, "onset_envelope")
    hop = max(1, round(sr / ONSET_RATE))
    n_fft = 1 << (max(2, round(ONSET_WINDOW_SECONDS * sr)) - 1).bit_length()
    db = log_mel_spectrogram(x.astype(np.float32), sr, n_mels=ONSET_MELS, n_fft=n_fft, hop=hop)
    flux = np.maximum(np.diff(db.astype(np.float64), axis=1), 0.0).sum(axis=0)
    edge = math.ceil(n_fft / (2 * hop))
    return flux[edge : flux.size - edge], sr / hop


def _segments(envelope: np.ndarray, length: int) -> np.ndarray:
    """[n, length] windows of `envelope` spread evenly from its start to its end (they overlap
    a little when `length` does not divide it, so no stretch is left out); one window of the
    whole envelope when it is shorter than `length`."""
    if envelope.size <= length:
        return envelope[None]
    count = math.ceil(envelope.size / length)
    starts = np.round(np.linspace(0, envelope.size - length, count)).astype(np.int64)
    return envelope[starts[:, None] + np.arange(length)]


def beat_strength(x: np.ndarray, sr: int) -> float:
    """The beat measure (module doc): median over 4-s segments of the highest normalised
    autocorrelation of the onset envelope at lags 0.25-2.0 s.

    A clip shorter than 4 s is one segment, searched up to half its length (the longest lag
    whose autocorrelation still averages over half the segment); below `MIN_BEAT_SECONDS` it is
    a ValueError. A segment without onsets (silence, a steady tone: `MIN_ONSET_STD_DB`) scores 0.
    """
    x = as_signal(x, "beat_strength")
    if x.size < MIN_BEAT_SECONDS * sr:
        raise ValueError(
            f"beat_strength needs at least {MIN_BEAT_SECONDS:g} s of audio, got {x.size / sr:.3f} s"
        )
    envelope, rate = onset_envelope(x, sr)
    segments = _segments(envelope, round(SEGMENT_SECONDS * rate))
    length = segments.shape[1]
    lo = math.ceil(BEAT_LAGS_SECONDS[0] * rate)
    hi = min(math.floor(BEAT_LAGS_SECONDS[1] * rate), length // 2)
    centred = segments - segments.mean(axis=1, keepdims=True)
    spectrum = np.fft.rfft(centred, n=2 * length, axis=1)
    acf = np.fft.irfft(spectrum.real**2 + spectrum.imag**2, n=2 * length, axis=1)[:, : hi + 1]
    onsets = centred.std(axis=1) >= MIN_ONSET_STD_DB
    peaks = acf[:, lo:].max(axis=1) / np.where(onsets, acf[:, 0], 1.0)
    return float(np.median(np.where(onsets, peaks, 0.0)))


def band_flatness(x: np.ndarray, sr: int) -> float:
    """The flatness measure (module doc): median over 64-ms Hann frames (hop 32 ms) of the
    geometric over the arithmetic mean of the power at 100-4000 Hz (up to sr / 2 below 8 kHz).

    A clip shorter than one frame is zero-padded to one; frames below -100 dBFS are left out and
    all-silent audio gives 0.
    """
    x = as_signal(x, "band_flatness")
    frame = max(2, round(FLATNESS_FRAME_SECONDS * sr))
    if x.size < frame:
        x = np.pad(x, (0, frame - x.size))
    frames = np.lib.stride_tricks.sliding_window_view(x, frame)[:: frame // 2]
    frames = frames[np.sqrt(np.mean(frames**2, axis=1)) >= _SILENT_FRAME_RMS]
    if not frames.size:
        return 0.0
    freqs = np.fft.rfftfreq(frame, 1.0 / sr)
    band = (freqs >= FLATNESS_BAND_HZ[0]) & (freqs <= FLATNESS_BAND_HZ[1])
    power = np.abs(np.fft.rfft(frames * np.hanning(frame), axis=1)[:, band]) ** 2
    power = np.maximum(power, _AMIN)
    flatness = np.exp(np.mean(np.log(power), axis=1)) / np.mean(power, axis=1)
    return float(np.median(flatness))


def music_stats(x: np.ndarray, sr: int, past: np.ndarray | None = None) -> dict[str, float | str]:
    """`audio_sanity`'s statistics (rms, dc_offset, verdict, ...) plus "beat", "flatness" and
    `repetition`'s "repeat", "loop" and "copy_span" (how much of `x` copies what came before
    it: its own earlier audio and `past`, the audio it continues, if given).

    "flatness" is this module's band-limited median; sanity's "spectral_flatness" (full band,
    mean, 32-ms frames) stays what its noise verdict is judged on.
    """
    return {
        **audio_sanity(x, sr),
        "beat": beat_strength(x, sr),
        "flatness": band_flatness(x, sr),
        **repetition(x, sr, past),
    }

"""Long-form generation: lengths, context cropping, chunk sizes, crossfade, determinism, primes."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np
import pytest
import soundfile as sf
import torch
from torch import nn

from lofibeats.errors import ConfigError, DataError
from lofibeats.generation.engine import Continuation
from lofibeats.generation.longform import generate_long
from lofibeats.generation.prime import pad_to_context, read_prime
from lofibeats.generation.stream import SILENCE_NOISE_STD, fade_curves
from lofibeats.models.base import LofiModule
from lofibeats.models.configs import ModelConfig
from lofibeats.models.sampling import Sampling


@dataclass(frozen=True)
class DoubleConfig(ModelConfig):
    family: ClassVar[str] = "double"

    @classmethod
    def parse(cls, **given) -> DoubleConfig:
        return cls(**given)


class RecordingNet(nn.Module):
    """A `OnePassNet` test double: each call continues `prev` and records what it was given.

    `mode="ramp"`: sample i of a call is prev[-1] + step * (i + 1) (+ tiny seeded noise), so the
    audio is one continuous ramp exactly when every call sees the right context.
    `mode="levels"`: every call returns a constant level drawn from the generator, so chunk
    boundaries are steps unless a crossfade smooths them.
    """

    def __init__(self, mode: str) -> None:
        super().__init__()
        self.mode = mode
        self.calls: list[tuple[torch.Tensor, int, Sampling, dict]] = []

    def continue_audio(self, prev, n_samples, sampling, generator=None, **options):
        self.calls.append((prev.clone(), n_samples, sampling, options))
        rows = prev.shape[0]
        if self.mode == "levels":
            level = torch.rand(rows, 1, generator=generator) - 0.5
            return level.expand(rows, n_samples).clone()
        steps = torch.arange(1, n_samples + 1, dtype=torch.float32) * 1e-4
        noise = torch.rand(rows, n_samples, generator=generator) * 1e-6
        return prev[:, -1:] + steps + noise


class RecordingModule(LofiModule):
    """A family whose network is a `RecordingNet` (no decode loop: it continues audio itself)."""

    config_class = DoubleConfig

    def __init__(
        self, context_len: int = 32, chunk_len: int = 16, sr: int = 8000, mode: str = "ramp"
    ):
        super().__init__(sr=sr, prev_len_max=context_len, next_len=chunk_len)
        self.net = RecordingNet(mode)

    @property
    def calls(self) -> list[tuple[torch.Tensor, int, Sampling, dict]]:
        return self.net.calls


def _prime(rows: int = 2, length: int = 40) -> torch.Tensor:
    return torch.linspace(-0.2, 0.0, length).repeat(rows, 1)


@pytest.mark.parametrize("n_samples", [1, 15, 16, 17, 100])
def test_length_chunks_and_context(n_samples: int) -> None:
    module = RecordingModule(context_len=32, chunk_len=16)
    prime = _prime()
    sampling = Sampling(temperature=0.7)
    out = generate_long(module, prime, n_samples, sampling=sampling, seed=0)

    assert out.shape == (2, n_samples)
    sizes = [n for _, n, _, _ in module.calls]
    assert sizes == [16] * -(-n_samples // 16)  # whole native chunks, the last one cut
    full = torch.cat([prime, out], dim=1)
    produced = 0
    for prev, size, given, _ in module.calls:
        end = prime.shape[1] + produced
        assert prev.shape[1] == 32  # cropped to the model's context
        torch.testing.assert_close(prev, full[:, end - 32 : end])
        assert given == sampling
        produced += size


def test_short_prime_is_not_padded_and_grows_to_context() -> None:
    module = RecordingModule(context_len=32, chunk_len=16)
    generate_long(module, _prime(length=8), 64, seed=0)
    assert [prev.shape[1] for prev, *_ in module.calls] == [8, 24, 32, 32]


def test_ramp_is_continuous_across_chunks() -> None:
    module = RecordingModule(context_len=32, chunk_len=16)
    out = generate_long(module, _prime(), 200, seed=0)
    steps = out.diff(dim=1)
    assert torch.allclose(steps, torch.full_like(steps, 1e-4), atol=2e-6)


def test_same_seed_same_audio_other_seed_differs() -> None:
    module = RecordingModule(mode="levels")
    a = generate_long(module, _prime(), 90, seed=3)
    b = generate_long(module, _prime(), 90, seed=3)
    c = generate_long(module, _prime(), 90, seed=4)
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


def test_sampling_and_options_reach_the_network_and_training_mode_is_restored() -> None:
    module = RecordingModule()
    module.train()
    sampling = Sampling.parse(temperature=0.8, top_p=0.9, decoding="greedy")
    generate_long(module, _prime(), 20, seed=0, sampling=sampling, creativity=0.5)
    assert len(module.calls) == 2
    assert all(given == sampling for _, _, given, _ in module.calls)
    assert all(options == {"creativity": 0.5} for *_, options in module.calls)
    assert module.training
    assert generate_long(module, _prime(), 5, seed=0).shape == (2, 5)
    assert module.calls[-1][2] == Sampling()  # the default knobs: sample at temperature 1
    assert Continuation(module, "auto").name == "reference"  # no decode loop, no backend
    with pytest.raises(ConfigError, match="engine=fused"):
        generate_long(module, _prime(), 5, engine="fused")


def test_no_prime_starts_from_near_silence() -> None:
    module = RecordingModule(context_len=2000, chunk_len=16)
    out = generate_long(module, None, 20, seed=0, batch_size=3)
    first_prev = module.calls[0][0]
    assert out.shape == (3, 20)
    assert first_prev.shape == (3, 2000)
    assert first_prev.std().item() == pytest.approx(SILENCE_NOISE_STD, rel=0.1)


@pytest.mark.parametrize(
    ("n_samples", "calls"),
    [
        (8, 1),  # one block's 8 kept samples; its 8-sample tail is never blended
        (16, 2),  # 8 kept + an 8-sample tail, then a block whose head is blended into it
        (20, 3),
        (40, 5),
        (30, 4),
    ],
)
def test_crossfade_request_sizes_and_length(n_samples: int, calls: int) -> None:
    """Every call makes one native chunk of 16 (asking for more would start a second pass,
    whose seam the fade could not hide) and keeps 16 - crossfade = 8 new samples."""
    module = RecordingModule(context_len=32, chunk_len=16)
    out = generate_long(module, _prime(), n_samples, seed=0, crossfade=8)
    assert out.shape == (2, n_samples)
    assert [n for _, n, _, _ in module.calls] == [16] * calls
    full = torch.cat([_prime(), out], dim=1)
    for k, (prev, *_) in enumerate(module.calls):  # each call sees the kept (blended) audio
        end = 40 + 8 * k
        torch.testing.assert_close(prev, full[:, end - 32 : end])


def test_crossfade_with_the_real_gan_is_deterministic() -> None:
    from lofibeats.models.gan import GanModule

    torch.manual_seed(0)
    gan = GanModule(
        sr=8000, prev_len_max=128, next_len=64, hidden=8, layers=1, ratios=[4, 4], noise_dim=4
    )
    a = generate_long(gan, _prime(length=128), 300, seed=1, crossfade=16)
    b = generate_long(gan, _prime(length=128), 300, seed=1, crossfade=16)
    assert a.shape == (2, 300) and torch.equal(a, b) and a.abs().max() <= 1.0


@pytest.mark.parametrize("fade", ["equal_power", "linear"])
def test_crossfade_removes_seam_jumps(fade: str) -> None:
    def levels() -> RecordingModule:
        return RecordingModule(context_len=32, chunk_len=32, mode="levels")

    hard = generate_long(levels(), _prime(), 160, seed=1)
    soft = generate_long(levels(), _prime(), 160, seed=1, crossfade=16, fade=fade)
    largest_jump = hard.diff(dim=1).abs().max().item()
    assert largest_jump > 0.2  # the double really has seams
    # a fade over 16 samples spreads each step: no single-sample jump above ~1/10 of it
    assert soft.diff(dim=1).abs().max().item() < largest_jump / 8


def test_fade_curves() -> None:
    out, into = fade_curves(64, "equal_power")
    torch.testing.assert_close(out**2 + into**2, torch.ones(64))
    out, into = fade_curves(64, "linear")
    torch.testing.assert_close(out + into, torch.ones(64))
    assert into[0] < 0.05 and into[-1] > 0.95
    with pytest.raises(ConfigError, match="fade='cubic'"):
        fade_curves(8, "cubic")


def test_bad_arguments() -> None:
    module = RecordingModule(chunk_len=16)
    with pytest.raises(ConfigError, match="crossfade=16"):
        generate_long(module, _prime(), 10, crossfade=16)
    with pytest.raises(ConfigError, match="n_samples=0"):
        generate_long(module, _prime(), 0)
    with pytest.raises(ValueError, match="batch, samples"):
        generate_long(module, torch.zeros(10), 10)


def test_progress_bar_runs(capsys: pytest.CaptureFixture[str]) -> None:
    out = generate_long(RecordingModule(), _prime(), 50, seed=0, progress=True)
    assert out.shape == (2, 50)
    assert "RTF" in capsys.readouterr().out


def test_read_prime_mixes_resamples_and_crops(tmp_path: Path) -> None:
    t = np.arange(44100) / 44100
    stereo = np.stack([0.5 * np.sin(2 * np.pi * 440 * t), 0.1 * np.ones_like(t)], axis=1)
    path = tmp_path / "prime.wav"
    sf.write(path, stereo, 44100)
    audio, file_sr = read_prime(path, 8000, seconds=0.5)
    assert file_sr == 44100
    assert audio.dtype == np.float32 and audio.shape == (4000,)
    assert audio.mean() == pytest.approx(0.05, abs=0.01)  # the mono mix of the DC channel
    assert np.sqrt(np.mean((audio - audio.mean()) ** 2)) == pytest.approx(
        0.25 / np.sqrt(2), rel=0.05
    )


def test_a_prime_is_levelled_like_the_training_audio(tmp_path: Path) -> None:
    """prepare brings every file to data.target_dbfs; a file prime gets the same treatment, so a
    quiet (or hot) recording is not a different world to the model."""
    t = np.arange(16000) / 16000
    path = tmp_path / "quiet.flac"
    sf.write(path, 0.01 * np.sin(2 * np.pi * 220 * t), 16000)
    raw, _ = read_prime(path, 16000)
    levelled, _ = read_prime(path, 16000, target_dbfs=-20.0)
    rms_db = 20 * np.log10(np.sqrt(np.mean(levelled**2)))
    assert rms_db == pytest.approx(-20.0, abs=0.5) and np.abs(raw).max() < 0.011
    assert np.all(np.abs(levelled * 32767 - np.round(levelled * 32767)) < 1e-3)  # int16 steps
    silent = tmp_path / "silent.wav"
    sf.write(silent, np.zeros(8000), 8000)
    with pytest.raises(DataError, match="silent"):
        read_prime(silent, 8000, target_dbfs=-20.0)


def test_read_prime_errors(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="no such file"):
        read_prime(tmp_path / "missing.wav", 8000)
    text = tmp_path / "notes.wav"
    text.write_text("not audio")
    with pytest.raises(DataError, match="not a readable audio file"):
        read_prime(text, 8000)


def test_pad_to_context() -> None:
    padded = pad_to_context(np.ones((2, 3), np.float32), 5)
    np.testing.assert_array_equal(padded, [[0, 0, 1, 1, 1]] * 2)
    assert pad_to_context(np.ones(7), 5).shape == (7,)

"""The built-in procedural lofi corpus: files, determinism, idempotence, and musical content."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from lofibeats.audio.synth import (
    SYNTH_VERSION,
    builtin_corpus_dir,
    corpus_stamp,
    plan_corpus,
    render_builtin_corpus,
)
from lofibeats.audio.synth import corpus as corpus_module
from lofibeats.audio.synth.music import BPM_RANGE, SWING_RANGE
from lofibeats.errors import ConfigError

TRACKS, SECONDS, SR, SEED = 3, 6.0, 8000, 0


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> tuple[list[Path], dict]:
    paths = render_builtin_corpus(tmp_path_factory.mktemp("builtin"), TRACKS, SECONDS, SR, SEED)
    stamp = json.loads(corpus_stamp(paths[0].parent).read_text(encoding="utf-8"))
    return paths, stamp


def _read(path: Path) -> np.ndarray:
    audio, sr = sf.read(path, dtype="float64")
    assert sr == SR
    return audio


def _estimate_bpm(audio: np.ndarray, sr: int, lo: float = 60.0, hi: float = 100.0) -> float:
    """Tempo from the autocorrelation of the onset strength (half-wave rectified spectral flux)."""
    hop = sr // 200  # 5 ms frames
    n_fft = 4 * hop
    mag = torch.stft(
        torch.as_tensor(audio, dtype=torch.float32),
        n_fft,
        hop,
        window=torch.hann_window(n_fft),
        return_complex=True,
    ).abs()
    logmag = torch.log1p(100 * mag)
    flux = torch.clamp(logmag[:, 1:] - logmag[:, :-1], min=0).sum(0).numpy().astype(np.float64)
    flux -= flux.mean()
    autocorr = np.correlate(flux, flux, "full")[len(flux) - 1 :]
    fps = sr / hop
    lags = np.arange(int(fps * 60 / hi), int(fps * 60 / lo) + 1)
    return 60 * fps / lags[np.argmax(autocorr[lags])]


def test_files_count_length_rate_and_format(corpus: tuple[list[Path], dict]) -> None:
    paths, stamp = corpus
    folder = builtin_corpus_dir(paths[0].parent.parent, TRACKS, SECONDS, SR, SEED)
    assert folder.name == "t3-s6-sr8000-seed0"
    assert paths == sorted(folder.glob("*.wav"))
    assert len(paths) == TRACKS
    for path in paths:
        info = sf.info(path)
        assert (info.samplerate, info.channels, info.frames) == (SR, 1, round(SECONDS * SR))
        assert info.format == "WAV" and info.subtype == "PCM_16"
    assert stamp["synth_version"] == SYNTH_VERSION
    assert stamp["settings"] == {"tracks": TRACKS, "seconds": SECONDS, "sr": SR, "seed": SEED}
    assert [t["file"] for t in stamp["tracks"]] == [p.name for p in paths]
    assert not list(folder.glob("*.tmp"))


def test_tracks_are_loud_but_never_clip(corpus: tuple[list[Path], dict]) -> None:
    for path in corpus[0]:
        audio = _read(path)
        peak = np.abs(audio).max()
        assert 0.85 < peak < 0.999  # normalised to about -1 dBFS
        frames = audio[: len(audio) // 800 * 800].reshape(-1, 800)  # 100 ms frames
        quiet = np.sqrt((frames**2).mean(axis=1)) < 10 ** (-40 / 20)
        assert quiet.mean() < 0.05, f"{path.name} is silent in {quiet.mean():.0%} of its frames"


def _tonality(audio: np.ndarray) -> tuple[float, float]:
    """(spectral flatness, share of 80-1500 Hz energy in the 7 strongest pitch classes)."""
    power = np.abs(np.fft.rfft(audio * np.hanning(len(audio)))) ** 2 + 1e-20
    flatness = np.exp(np.log(power).mean()) / power.mean()
    freqs = np.fft.rfftfreq(len(audio), 1 / SR)
    band = (freqs > 80) & (freqs < 1500)
    pitch_class = np.round(12 * np.log2(freqs[band] / 440) + 69).astype(int) % 12
    chroma = np.bincount(pitch_class, weights=power[band], minlength=12)
    return float(flatness), float(np.sort(chroma)[-7:].sum() / chroma.sum())


def test_tracks_are_tonal_not_noise(corpus: tuple[list[Path], dict]) -> None:
    """Music: a peaky spectrum whose pitched energy sits in a few pitch classes (a key)."""
    for path in corpus[0]:
        flatness, top7 = _tonality(_read(path))
        assert flatness < 0.1 and top7 > 0.8, path.name
    flatness, top7 = _tonality(np.random.default_rng(0).standard_normal(round(SECONDS * SR)))
    assert flatness > 0.1 and top7 < 0.8  # the same measures reject white noise


def test_tempo_matches_the_recorded_bpm(corpus: tuple[list[Path], dict]) -> None:
    paths, stamp = corpus
    for path, track in zip(paths, stamp["tracks"], strict=True):
        estimate = _estimate_bpm(_read(path), SR)
        assert estimate == pytest.approx(track["bpm"], rel=0.03), path.name


def test_tracks_differ_from_each_other(corpus: tuple[list[Path], dict]) -> None:
    paths, stamp = corpus
    bpms = sorted(t["bpm"] for t in stamp["tracks"])
    assert min(np.diff(bpms)) > 2.0
    assert len({t["key"] for t in stamp["tracks"]}) == TRACKS
    assert len({t["progression"] for t in stamp["tracks"]}) == TRACKS
    audio = [_read(p) for p in paths]
    for i in range(TRACKS):
        for j in range(i + 1, TRACKS):
            corr = np.corrcoef(audio[i], audio[j])[0, 1]
            assert abs(corr) < 0.3


def test_same_seed_gives_identical_bytes(corpus: tuple[list[Path], dict], tmp_path: Path) -> None:
    again = render_builtin_corpus(tmp_path, TRACKS, SECONDS, SR, SEED)
    for a, b in zip(corpus[0], again, strict=True):
        assert a.read_bytes() == b.read_bytes()


def test_different_seed_gives_different_audio(
    corpus: tuple[list[Path], dict], tmp_path: Path
) -> None:
    other = render_builtin_corpus(tmp_path, TRACKS, SECONDS, SR, SEED + 1)
    assert other[0].parent != corpus[0][0].parent
    for a, b in zip(corpus[0], other, strict=True):
        assert a.read_bytes() != b.read_bytes()
        assert abs(np.corrcoef(_read(a), _read(b))[0, 1]) < 0.3


def test_second_call_does_not_render(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    paths = render_builtin_corpus(tmp_path, 2, 2.0, SR, SEED)
    mtimes = [p.stat().st_mtime_ns for p in paths]

    def must_not_render(*args: object) -> np.ndarray:
        raise AssertionError("rendered a complete corpus again")

    monkeypatch.setattr(corpus_module, "render_track", must_not_render)
    assert render_builtin_corpus(tmp_path, 2, 2.0, SR, SEED) == paths
    assert [p.stat().st_mtime_ns for p in paths] == mtimes


def test_settings_get_their_own_folders(tmp_path: Path) -> None:
    debug = render_builtin_corpus(tmp_path, 2, 1.0, SR, SEED)
    longer = render_builtin_corpus(tmp_path, 3, 2.0, SR, SEED)
    assert debug[0].parent != longer[0].parent
    assert sf.info(debug[0]).frames == SR and sf.info(longer[0]).frames == 2 * SR
    assert all(p.is_file() for p in debug + longer)


@pytest.mark.parametrize("damage", ["stamp", "wav", "truncate", "version"])
def test_incomplete_folder_is_rendered_again(tmp_path: Path, damage: str) -> None:
    paths = render_builtin_corpus(tmp_path, 2, 1.0, SR, SEED)
    original = paths[1].read_bytes()
    stamp_path = corpus_stamp(paths[0].parent)
    if damage == "stamp":
        stamp_path.unlink()
    elif damage == "wav":
        paths[1].unlink()
    elif damage == "truncate":
        paths[1].write_bytes(original[:100])
    else:
        stamp = json.loads(stamp_path.read_text(encoding="utf-8"))
        stamp["synth_version"] = SYNTH_VERSION - 1
        stamp_path.write_text(json.dumps(stamp), encoding="utf-8")
        paths[1].write_bytes(original[:100])
    assert render_builtin_corpus(tmp_path, 2, 1.0, SR, SEED) == paths
    assert paths[1].read_bytes() == original
    assert json.loads(stamp_path.read_text(encoding="utf-8"))["synth_version"] == SYNTH_VERSION


def test_crash_mid_render_leaves_no_stamp_and_no_temp_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = corpus_module.render_track
    calls = []

    def crash_on_second(*args: object) -> np.ndarray:
        calls.append(args)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(*args)

    monkeypatch.setattr(corpus_module, "render_track", crash_on_second)
    with pytest.raises(KeyboardInterrupt):
        render_builtin_corpus(tmp_path, 3, 1.0, SR, SEED)
    folder = builtin_corpus_dir(tmp_path, 3, 1.0, SR, SEED)
    assert not corpus_stamp(folder).exists()
    assert [p.name for p in folder.iterdir()] == ["lofi-000.wav"]

    monkeypatch.setattr(corpus_module, "render_track", real)
    assert len(render_builtin_corpus(tmp_path, 3, 1.0, SR, SEED)) == 3
    assert corpus_stamp(folder).is_file()


@pytest.mark.parametrize("sr", [16000, 22050])
def test_other_sample_rates(tmp_path: Path, sr: int) -> None:
    (path,) = render_builtin_corpus(tmp_path, 1, 1.5, sr, SEED)
    audio, file_sr = sf.read(path)
    assert file_sr == sr and len(audio) == round(1.5 * sr)
    assert 0.85 < np.abs(audio).max() < 0.999


def test_plans_stay_in_the_lofi_ranges() -> None:
    plans = plan_corpus(40, seed=7)
    assert all(BPM_RANGE[0] <= p.bpm <= BPM_RANGE[1] for p in plans)
    assert all(SWING_RANGE[0] <= p.swing <= SWING_RANGE[1] for p in plans)
    assert len({p.bpm for p in plans}) == 40
    assert plan_corpus(40, seed=7) == plans


@pytest.mark.parametrize(
    ("kwargs", "key"),
    [
        ({"tracks": 0}, "data.builtin.tracks"),
        ({"seconds": 0.0}, "data.builtin.seconds"),
        ({"sr": 1000}, "data.builtin.sr"),
        ({"seed": -1}, "data.builtin.seed"),
    ],
)
def test_bad_settings_name_their_config_key(tmp_path: Path, kwargs: dict, key: str) -> None:
    settings = {"tracks": 1, "seconds": 1.0, "sr": SR, "seed": 0} | kwargs
    with pytest.raises(ConfigError, match=key):
        render_builtin_corpus(tmp_path, **settings)
    assert not any(tmp_path.iterdir())

"""generate.py: composed in-process for the details, run as a real subprocess once end to end."""

from __future__ import annotations

import os
import runpy
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from hydra.core.global_hydra import GlobalHydra
from omegaconf import DictConfig

from lofibeats.commands.generate import generate
from lofibeats.commands.inference import load_for_inference, val_datamodule
from lofibeats.errors import ConfigError, DataError
from lofibeats.models.seq2seq import Seq2SeqModule

from helpers import LOOKBACK, REPO, SR, save_checkpoint, save_tiny_checkpoint, sine, write_tracks


def _generate(make_cfg: Callable[..., DictConfig], *overrides: str) -> tuple[list[dict], Path]:
    cfg = make_cfg("generate", ["progress=false", "n=2", "seconds=0.05", *overrides])
    return generate(cfg), Path(cfg.out_dir)


def test_wav_prime_is_mixed_resampled_padded_and_kept(
    make_cfg: Callable[..., DictConfig],
    ckpt: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    prime = tmp_path / "prime.wav"  # 10 ms of stereo at 44.1 kHz: 80 samples at 8 kHz, < context
    sf.write(prime, np.stack([sine(300, 0.3, 0.01, 44100)] * 2, axis=1), 44100)
    rows, out_dir = _generate(make_cfg, f"ckpt={ckpt}", f"prime={prime}", "prime_seconds=null")

    printed, notes = capsys.readouterr()
    assert "note: resampled the prime from 44100 Hz to the model's 8000 Hz\n" in notes
    assert "warning: the prime is 0.01 s, shorter than the model's context" in notes
    assert "note: levelled the prime to -20 dBFS, as the training audio was\n" in notes
    assert len(notes.splitlines()) == 3
    assert [row["take"] for row in rows] == ["take_00", "take_01"]
    for row in rows:
        audio, sr = sf.read(out_dir / f"{row['take']}.wav")
        assert sr == SR and audio.shape == (80 + 400,)  # the unpadded prime + the continuation
        assert (out_dir / f"{row['take']}.png").stat().st_size > 1000
        assert row["seconds"] == pytest.approx(0.05)
        assert row["rtf"] > 0 and row["verdict"] in ("silent", "dc", "clipped", "noise", "ok")
    assert "take_01" in printed and "real-time factor" in printed and "copy span" in printed


@pytest.mark.parametrize(("context", "used"), [("16ms", 2.0), ("3s", 3.0)])
def test_an_auto_prime_is_the_models_context_and_at_least_two_seconds(
    make_cfg: Callable[..., DictConfig], tmp_path: Path, context: str, used: float
) -> None:
    """The plan reads 4 s back: a default prime shorter than that would be padded with silence."""
    torch.manual_seed(0)
    module = Seq2SeqModule(sr=SR, prev_len_max=context, next_len=64, hidden=8, layers=1)
    ckpt = save_checkpoint(tmp_path / "run" / "last.ckpt", module)
    prime = tmp_path / "prime.wav"
    sf.write(prime, sine(300, 0.3, 5.0), SR)
    rows, out_dir = _generate(make_cfg, f"ckpt={ckpt}", f"prime={prime}", "n=1")
    assert make_cfg("generate").prime_seconds == "auto"
    assert sf.info(out_dir / "take_00.wav").frames == round(used * SR) + 400


def test_val_prime_take_i_continues_val_clip_i(
    make_cfg: Callable[..., DictConfig], ckpt: Path, tmp_path: Path
) -> None:
    raw = write_tracks(tmp_path / "raw")
    cfg = make_cfg(
        "generate",
        ["progress=false", "n=3", "seconds=0.05", f"ckpt={ckpt}", "prime=val", "prime_seconds=0.25",
         f"data.raw_dir={raw}", "data.prepare_workers=1"],
    )  # fmt: skip
    generate(cfg)
    datamodule = val_datamodule(load_for_inference(cfg)[0], cfg.data)  # data.* given: cfg.data
    for i in range(3):
        take = sf.read(Path(cfg.out_dir) / f"take_{i:02d}.wav", dtype="float32")[0]
        assert take.shape == (2000 + 400,)
        np.testing.assert_allclose(take[:2000], datamodule.val_clip(i, 2000), atol=1 / 32767)


def test_no_prime_is_deterministic_per_seed(
    make_cfg: Callable[..., DictConfig], ckpt: Path
) -> None:
    def take(seed: int, folder: str) -> np.ndarray:
        _, out_dir = _generate(
            make_cfg, f"ckpt={ckpt}", "prime=none", "n=1", f"seed={seed}", f"out_dir={folder}"
        )
        return sf.read(out_dir / "take_00.wav")[0]

    first = take(5, "${paths.root_dir}/a")
    assert first.shape == (400,)
    np.testing.assert_array_equal(first, take(5, "${paths.root_dir}/b"))
    assert not np.array_equal(first, take(6, "${paths.root_dir}/c"))


def test_ckpt_last_prefers_the_newest_last_ckpt(
    make_cfg: Callable[..., DictConfig], tmp_path: Path
) -> None:
    old = save_tiny_checkpoint(tmp_path / "outputs/2026-01-01/00-00-00_1/checkpoints/last.ckpt")
    new = save_tiny_checkpoint(
        tmp_path / "outputs/multirun/2026-01-02/00-00-00/3/checkpoints/last.ckpt"
    )
    best = save_tiny_checkpoint(tmp_path / "outputs/2026-01-03/00-00-00_1/checkpoints/best.ckpt")
    for path, mtime in ((old, 1e9), (new, 1.1e9), (best, 1.2e9)):  # best: newest, but not last
        os.utime(path, (mtime, mtime))
    module, found, _ = load_for_inference(make_cfg("generate", ["ckpt=last"]))
    assert found == new
    assert module.family == "seq2seq" and module.sample_rate == SR and not module.training


def test_user_errors_are_one_line_lofi_errors(
    make_cfg: Callable[..., DictConfig], ckpt: Path, tmp_path: Path
) -> None:
    not_audio = tmp_path / "notes.wav"
    not_audio.write_text("hello")
    with pytest.raises(DataError, match="not a readable audio file"):
        _generate(make_cfg, f"ckpt={ckpt}", f"prime={not_audio}")
    with pytest.raises(DataError, match="no such file"):
        _generate(make_cfg, f"ckpt={ckpt}", f"prime={tmp_path / 'missing.wav'}")
    with pytest.raises(ConfigError, match=r"options\.wobble"):
        _generate(make_cfg, f"ckpt={ckpt}", "prime=none", "+options.wobble=1")
    with pytest.raises(ConfigError, match=r"options\.temperature is now temperature"):
        _generate(make_cfg, f"ckpt={ckpt}", "prime=none", "+options.temperature=0.5")
    with pytest.raises(ConfigError, match="seconds=-1"):
        _generate(make_cfg, f"ckpt={ckpt}", "seconds=-1")
    with pytest.raises(ConfigError, match="weights='bf16': choose one of float32, float16"):
        _generate(make_cfg, f"ckpt={ckpt}", "prime=none", "weights=bf16")


def test_float16_weights_decode_and_say_so(
    make_cfg: Callable[..., DictConfig], ckpt: Path, capsys
) -> None:
    """weights=float16 reaches the fused sample-level engine (whose float16 decode
    tests/test_fused_speedpath.py checks against the reference) and the line above the table
    names the precision."""
    rows, out_dir = _generate(make_cfg, f"ckpt={ckpt}", "prime=none", "weights=float16")
    assert "fused (C kernel), float16 weights engine" in capsys.readouterr().out
    assert np.abs(sf.read(out_dir / "take_00.wav")[0]).max() > 0
    _generate(make_cfg, f"ckpt={ckpt}", "prime=none")
    assert "float16 weights" not in capsys.readouterr().out


def test_decoding_knobs_are_top_level_keys(
    make_cfg: Callable[..., DictConfig], ckpt: Path, tmp_path: Path
) -> None:
    prime = tmp_path / "prime.wav"
    sf.write(prime, sine(220, 0.3, 0.05), SR)

    def take(folder: str, *overrides: str) -> np.ndarray:
        _, out_dir = _generate(
            make_cfg, f"ckpt={ckpt}", f"prime={prime}", "n=1", f"out_dir={folder}", *overrides
        )
        return sf.read(out_dir / "take_00.wav")[0]

    # greedy decoding draws nothing: the seed does not matter; sampled decoding does
    greedy = take("${paths.root_dir}/g1", "decoding=greedy", "seed=1")
    np.testing.assert_array_equal(greedy, take("${paths.root_dir}/g2", "decoding=greedy", "seed=2"))
    np.testing.assert_array_equal(greedy, take("${paths.root_dir}/t0", "temperature=0", "seed=3"))
    nucleus = take("${paths.root_dir}/p1", "top_p=0.5", "seed=1")
    assert not np.array_equal(nucleus, take("${paths.root_dir}/p2", "top_p=0.5", "seed=2"))
    with pytest.raises(ConfigError, match="top_p=1.5"):
        take("${paths.root_dir}/bad", "top_p=1.5")
    with pytest.raises(ConfigError, match="decoding='beam'"):
        take("${paths.root_dir}/bad", "decoding=beam")


def test_old_spellings_of_the_decoding_knobs_name_the_new_key(
    make_cfg: Callable[..., DictConfig],
    ckpt: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with pytest.raises(ConfigError, match="options.top_p is now top_p: give top_p=<value>"):
        _generate(make_cfg, f"ckpt={ckpt}", "prime=none", "+options.top_p=0.5")
    for script, override, new in (
        ("generate.py", "options.decoding=greedy", "decoding=greedy"),
        ("train.py", "model.temperature=0.7", "temperature=0.7"),
        ("train.py", "model.plan_hidden=512", "model.hidden=512"),  # renamed in format 3
    ):
        monkeypatch.setattr(sys, "argv", [script, override, f"paths.root_dir={tmp_path}"])
        GlobalHydra.instance().clear()
        with pytest.raises(SystemExit) as exit_info:
            runpy.run_path(str(REPO / script), run_name="__main__")
        assert exit_info.value.code == 1
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and err.startswith("error:") and f"give {new}" in err


@pytest.mark.parametrize(
    ("checkpoint", "message"),
    [("missing.ckpt", "does not exist"), ("corrupt.ckpt", "cannot read checkpoint")],
)
def test_entry_point_exits_1_with_one_line(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    checkpoint: str,
    message: str,
) -> None:
    (tmp_path / "corrupt.ckpt").write_bytes(b"PK\x03\x04 truncated")
    monkeypatch.setattr(
        sys, "argv", ["generate.py", f"ckpt={tmp_path / checkpoint}", f"paths.root_dir={tmp_path}"]
    )
    GlobalHydra.instance().clear()
    with pytest.raises(SystemExit) as exit_info:
        runpy.run_path(str(REPO / "generate.py"), run_name="__main__")
    assert exit_info.value.code == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("error:") and message in err


def test_cli_subprocess_end_to_end(ckpt: Path, tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "generate.py", "ckpt=last", "seconds=0.05", "prime=none", "n=1", "progress=false",
         f"paths.root_dir={tmp_path}"],
        cwd=REPO, capture_output=True, text=True, timeout=120,
        env={**os.environ, "PYTHONWARNINGS": "ignore"},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    (wav,) = (tmp_path / "outputs/generate").glob("*/*/take_00.wav")
    assert sf.info(wav).frames == 400 and sf.info(wav).samplerate == SR
    assert (wav.parent / "take_00.png").is_file()
    assert "take_00" in result.stdout


def test_the_table_says_whether_a_take_replays_its_prime(
    make_cfg: Callable[..., DictConfig], tmp_path: Path, capsys
) -> None:
    """repeat / copy span (lofibeats.metrics.repetition) per take: a looping lookback model
    replays its prime (repeat ~1 over the whole take); the untrained model alone makes noise."""
    lookback = save_checkpoint(tmp_path / "lookback.ckpt", Seq2SeqModule(**LOOKBACK))
    prime = tmp_path / "prime.wav"
    sf.write(prime, sine(440, 0.3, 0.5, SR) * (1 + np.sin(np.arange(SR // 2) / 300)), SR)
    looped, _ = _generate(
        make_cfg, f"ckpt={lookback}", f"prime={prime}", "seconds=1.5", "sampling=loop"
    )
    assert "copy span" in capsys.readouterr().out
    alone, _ = _generate(make_cfg, f"ckpt={lookback}", f"prime={prime}", "seconds=1.5")
    for row in looped:
        assert row["repeat"] > 0.95 and row["copy_span"] >= 1.0, row
    for row in alone:
        assert row["repeat"] < 0.5 and row["beat"] is not None, row


def test_loop_auto_loops_a_lookback_model_and_sampling_loop_is_refused_without_one(
    make_cfg: Callable[..., DictConfig], ckpt: Path, tmp_path: Path, capsys
) -> None:
    lookback = save_checkpoint(tmp_path / "lookback.ckpt", Seq2SeqModule(**LOOKBACK))
    takes, out_dir = _generate(make_cfg, f"ckpt={lookback}", "prime=none", "sampling=loop")
    assert len(takes) == 2
    looped, _ = sf.read(out_dir / "take_00.wav")
    assert np.abs(looped).max() > 0
    assert "note: loop=auto" not in capsys.readouterr().err
    # loop=auto (temperature auto): the same takes as sampling=loop, and a note says so
    _, out_dir = _generate(make_cfg, f"ckpt={lookback}", "prime=none", "loop=auto")
    assert "note: loop=auto: this model has a lookback, so 0.95" in capsys.readouterr().err
    np.testing.assert_array_equal(sf.read(out_dir / "take_00.wav")[0], looped)
    # the default: the model as trained, with a tip
    _, out_dir = _generate(make_cfg, f"ckpt={lookback}", "prime=none")
    assert "tip: this model has a lookback: sampling=loop" in capsys.readouterr().err
    assert not np.array_equal(sf.read(out_dir / "take_00.wav")[0], looped)
    _generate(make_cfg, f"ckpt={ckpt}", "prime=none", "loop=auto")  # no lookback: no loop
    assert "loop=auto" not in capsys.readouterr().err
    with pytest.raises(ConfigError, match="loop=0.95: only a model with a lookback"):
        _generate(make_cfg, f"ckpt={ckpt}", "prime=none", "sampling=loop")

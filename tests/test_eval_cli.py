"""eval.py: the JSON it writes, both teacher-forced paths, and its one-line user errors."""

from __future__ import annotations

import json
import runpy
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from hydra.core.global_hydra import GlobalHydra
from omegaconf import DictConfig
from torch.utils.data import DataLoader

from lofibeats.commands.evaluate import MUSIC_KEYS, evaluate, teacher_forced
from lofibeats.errors import ConfigError
from lofibeats.models.seq2seq import Seq2SeqModule

from helpers import REPO, SR, write_tracks

FAST = ["progress=false", "n=2", "seconds=0.1", "prime_seconds=0.05", "data.val_windows=4"]


@pytest.fixture
def raw_dir(tmp_path: Path) -> Path:
    return write_tracks(tmp_path / "raw")


def test_eval_writes_json_with_every_field(
    make_cfg: Callable[..., DictConfig],
    ckpt: Path,
    raw_dir: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    cfg = make_cfg("eval", [*FAST, "ckpt=last", f"data.raw_dir={raw_dir}", "split=all"])
    result = evaluate(cfg)

    saved = json.loads((Path(cfg.out_dir) / "eval.json").read_text())
    assert saved == json.loads(json.dumps(result))
    assert saved["checkpoint"] == str(ckpt)
    assert (saved["family"], saved["sr"], saved["head"]) == ("seq2seq", SR, "mulaw")
    assert saved["data"] == {"raw_dir": str(raw_dir), "split": "all", "sources": 2}
    tf = saved["teacher_forced"]
    assert tf["method"] == "validation_step" and tf["windows"] == 4
    assert 6.0 < tf["bits_per_sample"] < 10.0  # random weights: about log2(256) = 8 bits
    assert tf["mse"] is None  # mu-law head
    gen = saved["generation"]
    assert gen["clips"] == 2 and gen["seconds"] == pytest.approx(0.1) and gen["rtf"] > 0
    # the inference knobs it decoded with (conf/inference, conf/sampling)
    assert (gen["temperature"], gen["top_p"], gen["decoding"]) == (0.9, None, "sample")
    assert (gen["seed"], gen["engine"], gen["options"]) == (0, "auto", {})
    for means in (gen["mean"], gen["real_mean"]):
        assert set(means) == {
            "rms",
            "dc_offset",
            "peak",
            "clip_rate",
            "spectral_flatness",
            "zero_crossing_rate",
        }
    assert sum(gen["verdicts"].values()) == 2 and len(gen["per_clip"]) == 2
    assert gen["real_mean"]["rms"] == pytest.approx(10 ** (cfg.data.target_dbfs / 20), rel=0.2)
    fd = saved["frechet_logmel"]
    assert all(
        fd[key] >= 0 for key in ("generated_vs_real", "real_vs_real_floor", "noise_vs_real_ceiling")
    )
    assert fd["noise_vs_real_ceiling"] > fd["real_vs_real_floor"]
    assert "NLL bits/sample" in capsys.readouterr().out


@pytest.mark.filterwarnings("ignore:.*LeafSpec.*")  # Lightning's own deprecation, not ours
def test_teacher_forced_runs_validation_step_and_reports_mse_for_regression() -> None:
    module = Seq2SeqModule(
        sr=SR, prev_len_max=32, next_len=16, hidden=8, layers=1, head="regression"
    )
    windows = torch.rand(6, 48) * 0.2 - 0.1
    loader = DataLoader(list(zip(windows[:, :32], windows[:, 32:], strict=True)), batch_size=4)
    result = teacher_forced(module.eval(), loader)
    assert result["method"] == "validation_step"
    assert {"loss", "mse", "bits_per_sample"} <= set(result["metrics"])
    assert result["metrics"]["mse"] == pytest.approx(result["metrics"]["loss"])  # loss = MSE


def test_eval_user_errors(make_cfg: Callable[..., DictConfig], ckpt: Path, raw_dir: Path) -> None:
    with pytest.raises(ConfigError, match="split='train'"):
        evaluate(
            make_cfg("eval", [*FAST, f"ckpt={ckpt}", f"data.raw_dir={raw_dir}", "split=train"])
        )


def test_eval_entry_point_exits_1_with_one_line(
    ckpt: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    missing = tmp_path / "no such folder"
    argv = ["eval.py", f"ckpt={ckpt}", f"paths.root_dir={tmp_path}", f"data.raw_dir='{missing}'"]
    monkeypatch.setattr(sys, "argv", argv)
    GlobalHydra.instance().clear()
    with pytest.raises(SystemExit) as exit_info:
        runpy.run_path(str(REPO / "eval.py"), run_name="__main__")
    assert exit_info.value.code == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("error:") and "no such folder" in err


def test_eval_reports_music_measures_and_nll_by_context(
    make_cfg: Callable[..., DictConfig],
    ckpt: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Beat, flatness and repetition of generated, real and white noise side by side; the NLL
    of the same windows given 64 ms, 1 s and 4 s of past where the audio is long enough, a note
    where it is not."""
    long_dir = write_tracks(tmp_path / "long", count=2, seconds=5.0)
    args = ["progress=false", "n=2", "seconds=1", "prime_seconds=0.05", "data.val_windows=4"]
    cfg = make_cfg(
        "eval", [*args, "ckpt=last", f"data.raw_dir={long_dir}", "split=all", "context_windows=2"]
    )
    result = evaluate(cfg)
    music = result["music"]
    assert set(music) == {"generated", "real", "white_noise"}
    assert all(set(music[k]) == {*MUSIC_KEYS, "max_abs_dc"} for k in music)
    assert music["white_noise"]["flatness"] > 0.3 > music["real"]["flatness"]  # tones vs noise
    assert all(0.0 <= music[k]["beat"] <= 1.0 for k in music)
    assert music["white_noise"]["repeat"] < 0.2 < music["real"]["repeat"]  # a tone repeats
    assert all(0.1 <= music[k]["loop"] <= 4.0 for k in music)
    table = capsys.readouterr().out
    assert all(row in table for row in ("beat (music_stats)", "repeat (1 = a replay)", "copy span"))
    by_context = result["nll_by_context"]
    assert by_context["windows"] == 2 and list(by_context["bits_per_sample"]) == [
        "0.064s",
        "1s",
        "4s",
    ]
    assert all(5.0 < bits < 10.0 for bits in by_context["bits_per_sample"].values())

    short = make_cfg(
        "eval",
        [*FAST, "ckpt=last", f"data.raw_dir={write_tracks(tmp_path / 'short')}", "split=all"],
        run="short",
    )
    result = evaluate(short)
    assert result["music"] is None  # 0.1-s clips: too short for a beat
    assert "long" in result["nll_by_context"]["note"]

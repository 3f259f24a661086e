"""prepare from configs and the command line: cache folders, ensure_prepared, one-line errors."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from lofibeats.data.prepare import ensure_prepared, prepare_from_config, resolve_cache_dir
from lofibeats.errors import ConfigError

from helpers import REPO, check_cache, prepare, write_tone


def run_cli(
    tmp_path: Path, *overrides: str, home: Path | None = None
) -> subprocess.CompletedProcess:
    env = {**os.environ, "LOFIBEATS_ROOT": str(tmp_path)}
    if home is not None:
        env.update(HOME=str(home), USERPROFILE=str(home))
    return subprocess.run(
        [sys.executable, "prepare.py", f"paths.data_dir={tmp_path / 'data'}", *overrides],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_cli_missing_folder_is_one_line_on_stderr_and_exit_code_1(tmp_path: Path):
    result = run_cli(tmp_path, f"data.raw_dir={tmp_path / 'nowhere'}")
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: audio folder") and str(tmp_path / "nowhere") in lines[0]
    assert "Traceback" not in result.stderr


def test_cli_expands_tilde_and_prepares_every_rate(tmp_path: Path):
    home = tmp_path / "home"
    write_tone(home / "My Music" / "a.wav")
    write_tone(home / "My Music" / "b.flac", freq=330)
    result = run_cli(
        tmp_path,
        "data.raw_dir=~/My Music",
        "data.sample_rates=[8000,16000]",
        "data.prepare_workers=1",
        "progress=false",
        home=home,
    )
    assert result.returncode == 0, result.stderr
    assert "prepared 2 files" in result.stdout
    (cache,) = (tmp_path / "data" / "cache").iterdir()
    assert cache.name.startswith("My Music-")
    for sr in (8000, 16000):
        assert len(check_cache(cache / f"sr{sr}").sources) == 2


def test_the_prepare_config_drives_prepare_from_config(tmp_path: Path, make_cfg):
    write_tone(tmp_path / "raw" / "a.wav")
    write_tone(tmp_path / "raw" / "b.wav", freq=550)
    cfg = make_cfg("prepare", [f"data.raw_dir={tmp_path / 'raw'}", "data.prepare_workers=1"])
    assert cfg.progress is True and list(cfg.data.sample_rates) == [8000, 16000, 22050]
    report = prepare_from_config(cfg.data, [8000], progress=False)
    assert report.kept == 2
    assert report.cache_dir.parent == (tmp_path / "data" / "cache").absolute()


def test_cache_dirs_are_per_folder_and_stable(tmp_path: Path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()

    def cache_of(raw, **builtin) -> Path:
        cfg = {
            "raw_dir": raw,
            "cache_dir": str(tmp_path / "cache"),
            "builtin": {
                "dir": str(tmp_path / "builtin"),
                "tracks": 2,
                "seconds": 1,
                "sr": 8000,
                "seed": 0,
                **builtin,
            },
        }
        return resolve_cache_dir(OmegaConf.create(cfg))

    a = cache_of(str(tmp_path / "a"))
    assert (
        a.parent == tmp_path / "cache" and a.name.startswith("a-") and len(a.name) == len("a-") + 8
    )
    assert cache_of(str(tmp_path / "a") + "/.") == a
    assert cache_of(str(tmp_path / "b")) != a
    builtin = cache_of(None)
    assert builtin.name.startswith("builtin-") and cache_of(None, seed=1) != builtin
    with pytest.raises(ConfigError, match="data.cache_dir"):
        resolve_cache_dir({"raw_dir": None, "cache_dir": None})


def test_ensure_prepared_renders_the_builtin_corpus_once_and_then_only_checks(
    tmp_path: Path, make_cfg, monkeypatch
):
    cfg = make_cfg(
        "prepare",
        [
            "data.builtin.tracks=2",
            "data.builtin.seconds=1",
            "data.builtin.sr=8000",
            "data.prepare_workers=1",
        ],
    )
    sr_dir = ensure_prepared(cfg.data, 8000, progress=False)
    assert sr_dir == resolve_cache_dir(cfg.data) / "sr8000"
    assert sr_dir.parent.name.startswith("builtin-")
    manifest = check_cache(sr_dir)
    assert len(manifest.sources) == 2 and manifest.total_seconds == pytest.approx(2.0)

    def no_decoding(job):
        raise AssertionError(f"decoded {job.rel} although nothing changed")

    monkeypatch.setattr("lofibeats.data.workers.process_source", no_decoding)
    assert ensure_prepared(cfg.data, 8000, progress=False) == sr_dir


@pytest.mark.parametrize(
    ("override", "key"),
    [
        ({"rates": ()}, "data.sample_rates"),
        ({"rates": (8000, 0)}, "data.sample_rates"),
        ({"workers": 0}, "data.prepare_workers"),
        ({"shard_mb": 0}, "data.shard_mb"),
        ({"val_fraction": 1.0}, "data.val_fraction"),
        ({"target_dbfs": 3.0}, "data.target_dbfs"),
        ({"silence_dbfs": "quiet"}, "data.silence_dbfs"),
    ],
)
def test_bad_settings_name_their_config_key(tmp_path: Path, override: dict, key: str):
    write_tone(tmp_path / "raw" / "a.wav")
    with pytest.raises(ConfigError, match=key):
        prepare(tmp_path / "raw", tmp_path / "cache", **override)

"""`python live.py`: serves the page, prints its address, stops on Ctrl-C; bad settings are one
line naming the key."""

from __future__ import annotations

import dataclasses
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from live_helpers import make_runs

from lofibeats.errors import CheckpointError, ConfigError
from lofibeats.live import command
from lofibeats.live.command import live, settings_from
from lofibeats.live.server import LiveState

from helpers import compose_config

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> tuple[Path, dict[str, Path]]:
    root = tmp_path_factory.mktemp("live-cli")
    return root, make_runs(root)


def test_live_py_serves_the_page_and_stops_on_ctrl_c(runs) -> None:
    root, ckpts = runs
    process = subprocess.Popen(
        [sys.executable, "live.py", "ckpt=last", "live.port=0", f"paths.root_dir={root}"],
        cwd=REPO,
        stderr=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        lines = []
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            line = process.stderr.readline()
            assert line, f"live.py ended: {''.join(lines)}"
            lines.append(line)
            match = re.search(r"lofibeats live: (http://localhost:\d+/)", line)
            if match:
                break
        assert match, "".join(lines)
        assert "on this machine only" in line and "token" not in match.group(1)
        assert any(re.search(r"loaded .*last\.ckpt \(\w+, 8000 Hz, .* engine\)", x) for x in lines)
        url = match.group(1).replace("localhost", "127.0.0.1")
        assert "lofibeats" in httpx.get(url, timeout=10).text
        status = httpx.get(url + "api/status", timeout=10).json()
        assert status == {"version": 1, "streams": 0, "max_streams": 4}
        process.send_signal(signal.SIGINT)
        _, rest = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 130, rest  # what every entry point does on Ctrl-C
    assert rest.strip().endswith("stopped")


def cfg(root: Path, *overrides: str):
    return compose_config("live", [*overrides], root, run="live")


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("live.start_seconds=2", "live.start_seconds=2: give less than live.ahead_seconds (1.5)"),
        ("carry=sideways", "carry='sideways': choose one of auto, window, state"),
        ("live.prime=maybe", "live.prime='maybe': choose one of val, none"),
        ("live.token=abc", "live.token: give at least 8 characters"),
        ("live.port=70000", "live.port=70000: give an integer >= 0 and <= 65535"),
        ("live.max_streams=0", "live.max_streams=0: give an integer >= 1"),
        ("live.ahead_seconds=0", "live.ahead_seconds=0"),
        ("temperature=-1", "temperature=-1"),
        ("loop=2", "loop=2: give a number >= 0 and <= 1"),
        ("weights=int8", "weights='int8': choose one of float32, float16"),
        ("beat_prior=-5", "beat_prior=-5: give a number >= 0"),
    ],
)
def test_bad_settings_name_the_key(tmp_path: Path, override: str, message: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)):
        settings_from(cfg(tmp_path, override))


def test_an_exposed_host_gets_a_token_and_localhost_none(tmp_path: Path) -> None:
    local = settings_from(cfg(tmp_path))
    assert local.local and local.token is None and local.host == "127.0.0.1"
    exposed = settings_from(cfg(tmp_path, "live.host=0.0.0.0"))
    assert not exposed.local and len(exposed.token) >= 16
    chosen = settings_from(cfg(tmp_path, "live.host=0.0.0.0", "live.token=correct-horse"))
    assert chosen.token == "correct-horse"
    knobs = settings_from(cfg(tmp_path, "temperature=0.7", "top_p=0.9", "creativity=0.5")).knobs
    assert knobs == {
        "temperature": 0.7,
        "top_p": 0.9,
        "loop": 0.0,
        "beat_prior": "auto",
        "creativity": 0.5,
    }
    knobs = settings_from(cfg(tmp_path, "loop=auto")).knobs
    assert (knobs["temperature"], knobs["loop"]) == ("auto", "auto")  # the player resolves them
    assert settings_from(cfg(tmp_path, "loop=0.4")).knobs["loop"] == 0.4
    assert settings_from(cfg(tmp_path, "beat_prior=30")).knobs["beat_prior"] == 30.0


def test_loop_for_a_starting_model_without_a_lookback_says_so(runs, tmp_path: Path) -> None:
    root, ckpts = runs
    settings = dataclasses.replace(
        settings_from(cfg(root, "loop=0.5")), default_ckpt=ckpts["seq2seq"]
    )
    with pytest.raises(ConfigError, match=r"^loop=0.5: .*_seq2seq has no lookback to loop"):
        LiveState(settings, tmp_path).preload()


def test_a_start_refused_at_preload_frees_its_port(runs, monkeypatch) -> None:
    root, ckpts = runs
    opened, real_bind = [], command.bind

    def bind(host: str, port: int):
        opened.append(real_bind(host, port))
        return opened[-1]

    monkeypatch.setattr(command, "bind", bind)
    with pytest.raises(ConfigError, match=r"^loop=0.5: .*has no lookback to loop"):
        live(cfg(root, "loop=0.5", "live.port=0", f"ckpt={ckpts['seq2seq']}"))
    assert opened and opened[0].fileno() == -1  # closed: the port is free again


def test_no_run_to_play_says_train_first(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="no checkpoint found under .*: train first"):
        live(cfg(tmp_path, "live.port=0"))

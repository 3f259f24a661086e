"""Entry-point behaviour: bad config values end in one line naming the key, exit code 1."""

from __future__ import annotations

import pytest
from hydra.utils import instantiate

from lofibeats.cli import exit_on_user_error, quote_paths


def test_a_bad_model_value_is_one_line_naming_the_key(make_cfg, capsys) -> None:
    cfg = make_cfg("train", ["model.hidden=-3"])

    @exit_on_user_error()
    def build() -> None:
        instantiate(cfg.model, _convert_="all")  # hydra wraps the model's ConfigError

    with pytest.raises(SystemExit) as info:
        build()
    assert info.value.code == 1
    err = capsys.readouterr().err
    assert err == "error: model.hidden=-3: give an integer >= 1\n"


def test_real_bugs_keep_their_traceback() -> None:
    @exit_on_user_error()
    def broken() -> None:
        raise ZeroDivisionError("a bug")

    with pytest.raises(ZeroDivisionError):
        broken()


def test_paths_with_tilde_spaces_and_non_ascii_are_quoted_for_hydra(monkeypatch) -> None:
    monkeypatch.setenv("HOME", "/home/me")
    assert quote_paths(["data.raw_dir=~/My Music/é", "model.hidden=8"]) == [
        "data.raw_dir='/home/me/My Music/é'",
        "model.hidden=8",
    ]

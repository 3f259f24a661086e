"""Shared fixtures: Hydra configs composed in-process, rooted in a temp folder, and a tiny
checkpoint where a training run leaves one. The plain functions they use are in helpers.py
(`compose_config` is still importable from here)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from omegaconf import DictConfig

from lofibeats.cli import register_resolvers

pytest.register_assert_rewrite("helpers")  # before it is imported: its asserts report like tests
from helpers import RUN_CKPT, compose_config, save_tiny_checkpoint  # noqa: E402

torch.set_num_threads(1)
register_resolvers()


@pytest.fixture
def make_cfg(tmp_path: Path) -> Callable[..., DictConfig]:
    """`make_cfg("train", ["debug=fast", ...], run="a")` -> a composed config whose run dir is outputs/<run>."""

    def make(
        config_name: str = "train", overrides: list[str] | None = None, run: str = "run"
    ) -> DictConfig:
        return compose_config(config_name, list(overrides or []), tmp_path, run)

    return make


@pytest.fixture
def one_thread():
    """One torch thread for the test, whatever an earlier test (a command's `threads=`) left."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def ckpt(tmp_path: Path) -> Path:
    """A tiny seq2seq checkpoint where a training run leaves its last (`ckpt=last` finds it)."""
    return save_tiny_checkpoint(tmp_path / RUN_CKPT)

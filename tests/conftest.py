"""Shared fixtures: Hydra configs composed in-process, rooted in a temp folder."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, open_dict

from lofibeats.cli import register_resolvers

REPO = Path(__file__).resolve().parents[1]
CONF = REPO / "conf"

torch.set_num_threads(1)
register_resolvers()


def compose_config(
    config_name: str, overrides: list[str], root: Path, run: str = "run"
) -> DictConfig:
    """Compose `conf/<config_name>.yaml` like the CLI would, with outputs and data under `root`."""
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(
            config_name=config_name,
            overrides=[f"paths.root_dir={root.as_posix()}", *overrides],
            return_hydra_config=True,
        )
    run_dir = root / "outputs" / run
    with open_dict(cfg):
        cfg.hydra.runtime.output_dir = str(run_dir)
        cfg.hydra.job.num = 0
        cfg.hydra.job.id = "0"
    HydraConfig.instance().set_config(cfg)
    return cfg


@pytest.fixture
def make_cfg(tmp_path: Path) -> Callable[..., DictConfig]:
    """`make_cfg("train", ["debug=fast", ...], run="a")` -> a composed config whose run dir is outputs/<run>."""

    def make(
        config_name: str = "train", overrides: list[str] | None = None, run: str = "run"
    ) -> DictConfig:
        return compose_config(config_name, list(overrides or []), tmp_path, run)

    return make

"""Prepare audio for training: `python prepare.py data.raw_dir=~/Music/lofi data.sample_rates=[8000,16000]`.

Writes int16 shards + manifest.json per rate (see conf/prepare.yaml and lofibeats.data.prepare).
"""

import hydra
from omegaconf import DictConfig
from rich.console import Console

from lofibeats.cli import exit_on_user_error, register_resolvers, run

register_resolvers()


@hydra.main(version_base="1.3", config_path="conf", config_name="prepare")
@exit_on_user_error("interrupted: the cache is as before or complete; run prepare again to finish")
def main(cfg: DictConfig) -> None:
    from lofibeats.data.prepare import prepare_from_config

    report = prepare_from_config(cfg.data, list(cfg.data.sample_rates), progress=cfg.progress)
    Console().print(report.summary())


if __name__ == "__main__":
    run(main)

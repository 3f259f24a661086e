"""Prepare audio for training: `python prepare.py data.raw_dir=~/Music/lofi data.sample_rates=[8000,16000]`.

Writes int16 shards + manifest.json per rate (see conf/prepare.yaml and lofibeats.data.prepare).
"""

import hydra
from omegaconf import DictConfig

from lofibeats.cli import exit_on_user_error, register_resolvers, run

register_resolvers()


@hydra.main(version_base="1.3", config_path="conf", config_name="prepare")
@exit_on_user_error("interrupted: the cache is as before or complete; run prepare again to finish")
def main(cfg: DictConfig) -> None:
    from lofibeats.commands.prepare import prepare

    prepare(cfg)


if __name__ == "__main__":
    run(main)

"""Listen to a model: `python live.py ckpt=last` serves an endless take with live knobs (conf/live.yaml)."""

import hydra
from omegaconf import DictConfig

from lofibeats.cli import exit_on_user_error, register_resolvers, run

register_resolvers()


@hydra.main(version_base="1.3", config_path="conf", config_name="live")
@exit_on_user_error("stopped")
def main(cfg: DictConfig) -> None:
    from lofibeats.live.command import live

    live(cfg)


if __name__ == "__main__":
    run(main)

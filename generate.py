"""Generate audio: `python generate.py ckpt=<path|last> seconds=30 prime=<wav|val|none>` (conf/generate.yaml)."""

import hydra
from omegaconf import DictConfig

from lofibeats.cli import exit_on_user_error, register_resolvers, run

register_resolvers()


@hydra.main(version_base="1.3", config_path="conf", config_name="generate")
@exit_on_user_error()
def main(cfg: DictConfig) -> None:
    from lofibeats.commands.generate import generate

    generate(cfg)


if __name__ == "__main__":
    run(main)

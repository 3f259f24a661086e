"""Objective metrics of a checkpoint: `python eval.py ckpt=<path|last>` (conf/eval.yaml) -> JSON + table."""

import hydra
from omegaconf import DictConfig

from lofibeats.cli import exit_on_user_error, register_resolvers, run

register_resolvers()


@hydra.main(version_base="1.3", config_path="conf", config_name="eval")
@exit_on_user_error()
def main(cfg: DictConfig) -> None:
    from lofibeats.commands.evaluate import evaluate

    evaluate(cfg)


if __name__ == "__main__":
    run(main)

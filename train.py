"""Train a model: `python train.py [model=seq2seq|vseq2seq|gan] [key=value ...]` (see conf/train.yaml)."""

import hydra
from omegaconf import DictConfig

from lofibeats.cli import exit_on_user_error, register_resolvers, run

register_resolvers()


@hydra.main(version_base="1.3", config_path="conf", config_name="train")
@exit_on_user_error("interrupted: checkpoints written so far are kept; resume with ckpt_path=last")
def main(cfg: DictConfig) -> float | None:
    from lofibeats.commands.train import train

    return train(cfg)


if __name__ == "__main__":
    run(main)

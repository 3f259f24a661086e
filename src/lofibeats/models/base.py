"""What every model family's LightningModule is: the training recipe over a plain network.

A family has three parts: a config (`configs.py`: `model.*` values checked once, stored as the
checkpoint's hyperparameters), a plain `nn.Module` network built from it (`self.net`: what
generation runs, see `lofibeats.models.decoding`) and this LightningModule, which holds only
what training needs: losses, schedules, optimisers and the Lightning hooks. Logging beyond
scalars (audio, spectrograms, latent statistics) is the callbacks' job.
"""

from __future__ import annotations

from typing import Any, ClassVar

import pytorch_lightning as pl
from torch import nn

from lofibeats.models.configs import RENAMED_KEYS, RETIRED_KEYS, ModelConfig

#: bumped when the layout of a checkpoint's state_dict or hyperparameters changes
#: (`migrate_checkpoint`)
CHECKPOINT_FORMAT = 3


class LofiModule(pl.LightningModule):
    """Base class of the seq2seq, vseq2seq and gan LightningModules.

    `__init__(**model_config)` parses the config with the family's `config_class`; the
    checkpoint stores `config.as_hparams()` (plain values only, so it rebuilds its model and
    loads with `torch.load(weights_only=True)`).
    """

    config_class: ClassVar[type[ModelConfig]] = ModelConfig
    #: the plain network generation runs (an `AutoregressiveNet` or a `OnePassNet`)
    net: nn.Module
    #: state_dict prefixes that lofibeats 0.1 kept at the top level and now live under `net.`
    v01_net_prefixes: ClassVar[tuple[str, ...]] = ()
    #: the checkpoint train.py offers to generate from: "best" (lowest val/loss) or "last"
    generates_from: ClassVar[str] = "best"

    def __init__(self, **model_config: Any) -> None:
        super().__init__()
        self.config = self.config_class.parse(**model_config)
        self.save_hyperparameters(self.config.as_hparams())

    @property
    def family(self) -> str:
        return self.config.family

    @property
    def sample_rate(self) -> int:
        return self.config.sr

    @property
    def context_len(self) -> int:
        """How many samples of `prev` the model looks at when continuing (longer is cropped)."""
        return self.config.prev_len_max

    @property
    def chunk_len(self) -> int:
        """How many samples one continuation call is meant to produce (the `next` length)."""
        return self.config.next_len

    @property
    def default_crossfade(self) -> int:
        """Overlap-add samples between chunks for long-form generation (0: chunks just join)."""
        return 0

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["lofibeats_format"] = CHECKPOINT_FORMAT

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Resuming from an older checkpoint: move its weights to this layout first."""
        migrate_checkpoint(type(self), checkpoint)


def migrate_checkpoint(cls: type[LofiModule], checkpoint: dict[str, Any]) -> None:
    """Bring a checkpoint of an older format to `CHECKPOINT_FORMAT`, in place: lofibeats 0.1
    (format 1) kept the network at the top of the state_dict (`embed.*`, `encoder.*`, ...) and
    decoding knobs in the hyperparameters; format 2 named some keys as `RENAMED_KEYS` lists."""
    found = checkpoint.get("lofibeats_format", 1)
    hparams = checkpoint.get("hyper_parameters", {})
    if found < 2:
        prefixes = cls.v01_net_prefixes
        checkpoint["state_dict"] = {
            (f"net.{key}" if key.startswith(prefixes) else key): value
            for key, value in checkpoint["state_dict"].items()
        }
        for key in RETIRED_KEYS:
            hparams.pop(key, None)
    if found < 3:
        renamed = RENAMED_KEYS.get(hparams.get("family"), {})
        moved = {new: hparams.pop(old) for old, new in renamed.items() if old in hparams}
        hparams.update(moved)
    checkpoint["lofibeats_format"] = CHECKPOINT_FORMAT

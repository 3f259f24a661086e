"""Model families by name: what `model.family` picks and what a checkpoint's `family` rebuilds.

A family is its LightningModule class, whose config class carries the name. Adding one is one
entry in `_CLASSES` and one `conf/model/<name>.yaml` with `family: <name>`.
"""

from __future__ import annotations

from typing import Any

from lofibeats.errors import ConfigError
from lofibeats.models.base import LofiModule
from lofibeats.models.gan import GanModule
from lofibeats.models.plan import PlanModule
from lofibeats.models.seq2seq import Seq2SeqModule
from lofibeats.models.vseq2seq import VSeq2SeqModule

_CLASSES: tuple[type[LofiModule], ...] = (
    Seq2SeqModule,
    VSeq2SeqModule,
    GanModule,
    PlanModule,
)
FAMILIES: dict[str, type[LofiModule]] = {cls.config_class.family: cls for cls in _CLASSES}


def family_class(family: str) -> type[LofiModule]:
    """The LightningModule class of `family`; an unknown name is a ConfigError."""
    if family not in FAMILIES:
        raise ConfigError(f"model.family={family!r}: choose one of {', '.join(FAMILIES)}")
    return FAMILIES[family]


def build_module(family: str, **model_config: Any) -> LofiModule:
    """The `_target_` of every conf/model/*.yaml: the family's module from its config."""
    return family_class(family)(**model_config)

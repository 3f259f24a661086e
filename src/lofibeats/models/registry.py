"""Model families by name: family -> "module:Class", imported only when asked for.

Adding a family is one line here (e.g. "vseq2seq": "lofibeats.models.vseq2seq:VSeq2SeqModule").
"""

from __future__ import annotations

import importlib

from lofibeats.errors import ConfigError
from lofibeats.models.base import LofiModule

FAMILIES: dict[str, str] = {
    "seq2seq": "lofibeats.models.seq2seq:Seq2SeqModule",
    "vseq2seq": "lofibeats.models.vseq2seq:VSeq2SeqModule",
    "gan": "lofibeats.models.gan:GanModule",
}


def family_class(family: str) -> type[LofiModule]:
    """The LightningModule class of `family`; an unknown name is a ConfigError."""
    if family not in FAMILIES:
        raise ConfigError(f"model.family={family!r}: choose one of {', '.join(FAMILIES)}")
    module_name, class_name = FAMILIES[family].split(":")
    return getattr(importlib.import_module(module_name), class_name)

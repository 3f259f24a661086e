"""Loading a trained model from a Lightning checkpoint, safely.

`torch.load(weights_only=True)` only unpickles tensors and plain containers, so a checkpoint
cannot run code on load; one that tries is refused with a CheckpointError, as is anything
missing, truncated, or not one of our checkpoints.
"""

from __future__ import annotations

import pickle
import zipfile
from pathlib import Path

import torch

from lofibeats.errors import CheckpointError, ConfigError
from lofibeats.models.base import LofiModule, migrate_checkpoint
from lofibeats.models.registry import FAMILIES, family_class

# how torch's weights-only unpickler words a refusal to import or call something (lowercased)
_UNSAFE_MARKERS = ("global", "reduce for", "can only build")


def read_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict:
    """The checkpoint dict at `path`, loaded with weights_only=True; CheckpointError otherwise."""
    path = Path(path).expanduser()
    if not path.exists():
        raise CheckpointError(
            f"no checkpoint at {path}: check the path (train.py writes checkpoints/last.ckpt)"
        )
    if path.is_dir():
        raise CheckpointError(
            f"{path} is a directory: pass a .ckpt file, e.g. {path / 'checkpoints' / 'last.ckpt'}"
        )
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        detail = str(exc).lower().partition("weightsunpickler error:")[2] or str(exc).lower()
        if any(marker in detail for marker in _UNSAFE_MARKERS):
            raise CheckpointError(
                f"refusing to load {path}: it contains code objects, not just weights"
            ) from None
        raise CheckpointError(
            f"cannot read checkpoint {path} (corrupt, truncated, or not plain weights): re-save or re-train it"
        ) from None
    except (RuntimeError, EOFError, OSError, ValueError, KeyError, zipfile.BadZipFile) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise CheckpointError(
            f"cannot read checkpoint {path} (corrupt or truncated: {reason}): re-save or re-train it"
        ) from None
    if (
        not isinstance(ckpt, dict)
        or not isinstance(ckpt.get("state_dict"), dict)
        or not isinstance(ckpt.get("hyper_parameters"), dict)
    ):
        raise CheckpointError(
            f"{path} is not a Lightning checkpoint of this project (no state_dict/hyper_parameters)"
        )
    return ckpt


def load_module(path: str | Path, map_location: str | torch.device = "cpu") -> LofiModule:
    """Rebuild the model saved in the Lightning checkpoint `path`, in eval mode on `map_location`."""
    return module_from_checkpoint(read_checkpoint(path, map_location), path, map_location)


def module_from_checkpoint(
    ckpt: dict, path: str | Path, map_location: str | torch.device = "cpu"
) -> LofiModule:
    """Rebuild the model of a checkpoint dict from `read_checkpoint(path)`, in eval mode.
    A checkpoint of an older format is migrated in memory first (`migrate_checkpoint`)."""
    family = ckpt["hyper_parameters"].get("family")
    if family not in FAMILIES:
        raise CheckpointError(
            f"{path}: unknown model family {family!r} (this code knows {', '.join(FAMILIES)})"
        )
    try:
        cls = family_class(family)
        migrate_checkpoint(cls, ckpt)
        module = cls(**ckpt["hyper_parameters"])
        module.load_state_dict(ckpt["state_dict"])
    except (ConfigError, TypeError, ValueError, RuntimeError, KeyError) as exc:
        reason = str(exc).splitlines()[0]
        raise CheckpointError(
            f"{path} does not match this code's {family} model ({reason}): re-train or use a matching version"
        ) from None
    return module.to(map_location).eval()

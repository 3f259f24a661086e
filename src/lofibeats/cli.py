"""What every entry point shares: one-line errors instead of traceback walls, quiet logs."""

from __future__ import annotations

import functools
import logging
import os
import sys
import uuid
import warnings
from collections.abc import Callable
from typing import TypeVar

from omegaconf import OmegaConf

from lofibeats.errors import LofiError

T = TypeVar("T")

# One id per process: the run dir suffix, so two runs started in the same second never collide.
RUN_ID = f"{os.getpid()}{uuid.uuid4().hex[:4]}"


def register_resolvers() -> None:
    """Resolvers the config tree uses; call before Hydra composes a config."""
    if not OmegaConf.has_resolver("run_id"):
        OmegaConf.register_new_resolver("run_id", lambda: RUN_ID)


def exit_on_user_error(fn: Callable[..., T]) -> Callable[..., T]:
    """Print a LofiError as one line on stderr and exit 1; let real bugs keep their traceback."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except LofiError as exc:
            print(f"error: {exc}", file=sys.stderr)
            raise SystemExit(1) from None
        except KeyboardInterrupt:
            print("interrupted: the last checkpoint is kept; resume with ckpt_path=last", file=sys.stderr)
            raise SystemExit(130) from None

    return wrapper


def quiet_third_party() -> None:
    """Silence warnings and log lines users cannot act on (they drown the ones they can)."""
    for pattern in (
        r".*does not have many workers.*",
        r".*Trying to infer the `batch_size`.*",
        r".*GPU available but not used.*",
        r".*exists and is not empty.*",
        r".*The number of training batches.*is smaller than the logging interval.*",
        r".*`isinstance\(treespec, LeafSpec\)` is deprecated.*",
        r".*TensorFloat32 tensor cores.*",
        r".*litlogger.*",
        r".*LeafSpec.*",
        r".*Your `IterableDataset` has `__len__` defined.*",
        r".*The dirpath has changed from.*",
    ):
        warnings.filterwarnings("ignore", message=pattern)
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    for name in ("pytorch_lightning", "lightning_fabric", "lightning.pytorch"):
        logging.getLogger(name).setLevel(logging.WARNING)

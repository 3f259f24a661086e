"""What every entry point shares: one-line errors instead of traceback walls, quiet logs."""

from __future__ import annotations

import functools
import logging
import os
import re
import sys
import uuid
import warnings
from collections.abc import Callable
from typing import TypeVar

from omegaconf import OmegaConf

from lofibeats.errors import ConfigError, LofiError

T = TypeVar("T")

# One id per process: the run dir suffix, so two runs started in the same second never collide.
RUN_ID = f"{os.getpid()}{uuid.uuid4().hex[:4]}"


# Keys that moved, old spelling -> new (DESIGN.md, "One owner per knob"): the decoding knobs are
# top-level inference settings, neither generation `options.*` nor model hyperparameters; the
# plan MLP's width took `model.hidden` (DESIGN.md, "Changes").
MOVED_KEYS = {
    "options.temperature": "temperature",
    "options.top_p": "top_p",
    "options.decoding": "decoding",
    "model.temperature": "temperature",
    "model.top_p": "top_p",
    "model.decoding": "decoding",
    "model.creativity": "creativity",
    "model.plan_hidden": "model.hidden",
}
_DECODING = "decoding is set at generation, not stored in the model"
#: what the message about a moved key adds, where it says why
MOVED_BECAUSE = {
    **{f"model.{knob}": _DECODING for knob in ("temperature", "top_p", "decoding", "creativity")},
    "model.plan_hidden": "the plan MLP's width; its sample renderer's is model.render_hidden",
}


def register_resolvers() -> None:
    """Resolvers the config tree uses; call before Hydra composes a config."""
    if not OmegaConf.has_resolver("run_id"):
        OmegaConf.register_new_resolver("run_id", lambda: RUN_ID)


def exit_on_user_error(
    on_interrupt: str = "interrupted",
) -> Callable[[Callable[..., T]], Callable[..., T]]:
    """Print a LofiError as one line on stderr and exit 1; Ctrl-C prints `on_interrupt`, exits 130.

    Real bugs keep their traceback.
    """

    def decorate(fn: Callable[..., T]) -> Callable[..., T]:
        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            try:
                return fn(*args, **kwargs)
            except Exception as exc:
                # hydra.utils.instantiate wraps what a constructor raises; unwrap ours
                cause = exc if isinstance(exc, LofiError) else exc.__cause__
                if not isinstance(cause, LofiError):
                    raise
                print(f"error: {cause}", file=sys.stderr)
                raise SystemExit(1) from None
            except KeyboardInterrupt:
                print(on_interrupt, file=sys.stderr)
                raise SystemExit(130) from None

        return wrapper

    return decorate


_PLAIN_OVERRIDE = re.compile(r"^(\+{0,2}[A-Za-z_][\w.@/-]*)=([^'\"\[{].*)$")


def quote_paths(argv: list[str]) -> list[str]:
    """`key=~/My Music/é` -> `key='/home/me/My Music/é'`.

    Hydra's override grammar rejects `~`, spaces and non-ASCII in unquoted values, and the shell
    leaves a `~` after `key=` alone; users should not have to know either.
    """
    out = []
    for arg in argv:
        m = _PLAIN_OVERRIDE.match(arg)
        if m and (m.group(2).startswith("~") or not m.group(2).isascii() or " " in m.group(2)):
            value = os.path.expanduser(m.group(2))
            # Hydra quoting: backslashes before a quote (or the closing one) double, quotes escape
            value = re.sub(r"(\\+)(?='|$)", r"\1\1", value).replace("'", "\\'")
            arg = f"{m.group(1)}='{value}'"
        out.append(arg)
    return out


def check_moved_keys(argv: list[str]) -> None:
    """A ConfigError naming the new key for an override that uses a key's old spelling."""
    for arg in argv:
        key, _, value = arg.lstrip("+~").partition("=")
        new = MOVED_KEYS.get(key)
        if new:
            why = f" ({MOVED_BECAUSE[key]})" if key in MOVED_BECAUSE else ""
            raise ConfigError(f"{key} is now {new}{why}: give {new}={value or '<value>'}")


def run(main: Callable[[], object]) -> None:
    """Run a `@hydra.main` function with path-friendly command-line overrides; an override of a
    moved key is one line naming the new key, exit 1."""
    try:
        check_moved_keys(sys.argv[1:])
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise SystemExit(1) from None
    sys.argv[1:] = quote_paths(sys.argv[1:])
    main()


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

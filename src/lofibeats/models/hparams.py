"""Turning config values into the plain hyperparameters a checkpoint stores.

Checkpoints load with `torch.load(weights_only=True)`, which only accepts tensors and plain
containers/primitives, so hparams must not hold OmegaConf `DictConfig`/`ListConfig` objects.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from lofibeats.errors import ConfigError

Plain = None | bool | int | float | str | list["Plain"] | dict[str, "Plain"]


def plain(value: Any, key: str = "model") -> Plain:
    """Recursively convert mappings/sequences (e.g. DictConfig, ListConfig, tuples) to dicts
    and lists of primitives; anything else that is not a primitive is a ConfigError."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, Mapping):
        return {str(k): plain(v, f"{key}.{k}") for k, v in value.items()}
    if isinstance(value, Sequence):
        return [plain(v, f"{key}[{i}]") for i, v in enumerate(value)]
    raise ConfigError(f"{key}={value!r}: give a number, string, list or mapping")


def merge_options(
    given: Mapping[str, Any] | None, defaults: Mapping[str, Any], key: str
) -> dict[str, Plain]:
    """`defaults` updated with `given`; a key not in `defaults` is a ConfigError naming it."""
    options = plain(given or {}, key)
    unknown = sorted(set(options) - set(defaults))
    if unknown:
        raise ConfigError(f"{key}.{unknown[0]}: unknown key; known keys: {', '.join(defaults)}")
    return {**defaults, **options}


def choice(value: Any, options: Sequence[str], key: str) -> str:
    if value not in options:
        raise ConfigError(f"{key}={value!r}: choose one of {', '.join(options)}")
    return str(value)


def number(value: Any, key: str, *, kind: type = float, low: float | None = None) -> Any:
    """`value` as an int or float, at least `low`; anything else is a ConfigError naming `key`."""
    try:
        if isinstance(value, bool) or (kind is int and float(value) != int(float(value))):
            raise ValueError
        result = kind(float(value)) if kind is int else kind(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{key}={value!r}: give a {kind.__name__}") from None
    if low is not None and result < low:
        raise ConfigError(f"{key}={value!r}: it must be at least {low}")
    return result

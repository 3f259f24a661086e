"""The one place config values are checked and turned into plain Python values.

Every failure is a :class:`ConfigError` whose message names the key and says what to give, so a
command prints one line instead of a traceback. Checkpoints load with `weights_only=True`, which
accepts only tensors and plain containers, so hyperparameters go through :func:`plain` first.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from lofibeats.errors import ConfigError

Plain = None | bool | int | float | str | list["Plain"] | dict[str, "Plain"]


def plain(value: Any, key: str = "model") -> Plain:
    """Recursively convert mappings/sequences (DictConfig, ListConfig, tuples) to dicts and
    lists of primitives; anything else that is not a primitive is a ConfigError."""
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
    """`value` if it is one of `options`; otherwise a ConfigError listing them."""
    if value not in options:
        raise ConfigError(f"{key}={value!r}: choose one of {', '.join(options)}")
    return str(value)


def number(
    value: Any,
    key: str,
    *,
    kind: type = float,
    low: float | None = None,
    high: float | None = None,
    low_open: bool = False,
    high_open: bool = False,
) -> Any:
    """`value` as an int or float within [low, high] (an end is excluded with `low_open` /
    `high_open`); a bool, a string or a fractional value for an int is a ConfigError."""
    try:
        if isinstance(value, (bool, str)) or (kind is int and float(value) != int(float(value))):
            raise ValueError
        result = kind(float(value)) if kind is int else kind(value)
    except (TypeError, ValueError, OverflowError):
        raise ConfigError(
            f"{key}={value!r}: give {_bounds(kind, low, high, low_open, high_open)}"
        ) from None
    if result != result or result in (float("inf"), float("-inf")):  # NaN or infinite
        raise ConfigError(f"{key}={value!r}: give {_bounds(kind, low, high, low_open, high_open)}")
    too_low = low is not None and (result <= low if low_open else result < low)
    too_high = high is not None and (result >= high if high_open else result > high)
    if too_low or too_high:
        raise ConfigError(f"{key}={value!r}: give {_bounds(kind, low, high, low_open, high_open)}")
    return result


def optional_number(value: Any, key: str, **bounds: Any) -> Any:
    """None stays None (the knob's fallback applies); anything else goes through :func:`number`."""
    return None if value is None else number(value, key, **bounds)


def numbers(values: Any, key: str, *, kind: type = float, **bounds: Any) -> list[Any]:
    """A list of numbers, each checked like :func:`number` and named `key[i]` in errors."""
    if isinstance(values, (str, bytes)) or not isinstance(values, Sequence):
        raise ConfigError(f"{key}={values!r}: give a list of {kind.__name__}s, e.g. [4, 4]")
    return [number(v, f"{key}[{i}]", kind=kind, **bounds) for i, v in enumerate(values)]


def _bounds(kind: type, low: Any, high: Any, low_open: bool, high_open: bool) -> str:
    what = "an integer" if kind is int else "a number"
    parts = []
    if low is not None:
        parts.append(f"{'>' if low_open else '>='} {low:g}")
    if high is not None:
        parts.append(f"{'<' if high_open else '<='} {high:g}")
    return f"{what} {' and '.join(parts)}".strip()

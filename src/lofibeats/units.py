"""Lengths in configs: an int is a number of samples, a string with a unit is a duration."""

from __future__ import annotations

import re

from lofibeats.errors import ConfigError

_DURATION = re.compile(r"^\s*([0-9]*\.?[0-9]+)\s*(ms|s)\s*$")


def to_samples(value: int | str, sr: int, key: str) -> int:
    """Convert `512`, `"0.5s"` or `"250ms"` to a positive number of samples at `sr`.

    `key` is the config key the value came from, so the error can name it.
    """
    if isinstance(value, bool):
        raise ConfigError(
            f"{key}={value!r}: give a number of samples (512) or a duration ('0.5s', '250ms')"
        )
    if isinstance(value, int):
        samples = value
    elif isinstance(value, str) and (m := _DURATION.match(value)):
        seconds = float(m.group(1)) / (1000.0 if m.group(2) == "ms" else 1.0)
        samples = round(seconds * sr)
    elif isinstance(value, str) and value.strip().isdigit():
        samples = int(value)
    else:
        raise ConfigError(
            f"{key}={value!r}: give a number of samples (512) or a duration ('0.5s', '250ms')"
        )
    if samples < 1:
        raise ConfigError(f"{key}={value!r} is {samples} samples at {sr} Hz: it must be at least 1")
    return samples

"""Prepare audio for training: `python prepare.py data.raw_dir=~/Music/lofi data.sample_rates=[8000,16000]`.

Writes int16 shards + manifest.json per rate (see conf/prepare.yaml and lofibeats.data.prepare).
"""

import os
import re
import sys

import hydra
from omegaconf import DictConfig
from rich.console import Console

from lofibeats.cli import exit_on_user_error, register_resolvers

register_resolvers()

_PLAIN_OVERRIDE = re.compile(r"^(\+{0,2}[A-Za-z_][\w.@/-]*)=([^'\"\[{].*)$")


def quote_paths(argv: list[str]) -> list[str]:
    """`key=~/My Music/é` -> `key='/home/me/My Music/é'`: Hydra's grammar rejects `~`, spaces and
    non-ASCII in unquoted values, and the shell leaves `~` after `key=` alone."""
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


@hydra.main(version_base="1.3", config_path="conf", config_name="prepare")
@exit_on_user_error
def main(cfg: DictConfig) -> None:
    from lofibeats.data.prepare import prepare_from_config

    try:
        report = prepare_from_config(cfg.data, list(cfg.data.sample_rates), progress=cfg.progress)
    except KeyboardInterrupt:
        print(
            "interrupted: the cache is as before or complete; run prepare again to finish",
            file=sys.stderr,
        )
        raise SystemExit(130) from None
    Console().print(report.summary())


if __name__ == "__main__":
    sys.argv[1:] = quote_paths(sys.argv[1:])
    main()

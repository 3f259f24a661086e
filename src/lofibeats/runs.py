"""Where runs put things, and finding them again (`ckpt=last`)."""

from __future__ import annotations

from pathlib import Path

from lofibeats.errors import CheckpointError


def find_latest_checkpoint(outputs_dir: Path) -> Path:
    """The newest `checkpoints/last.ckpt` (else any `*.ckpt`) under `outputs_dir`, by mtime."""
    outputs_dir = Path(outputs_dir).expanduser()
    for pattern in ("**/checkpoints/last.ckpt", "**/*.ckpt"):
        found = [p for p in outputs_dir.glob(pattern) if p.is_file()]
        if found:
            return max(found, key=lambda p: p.stat().st_mtime_ns)
    raise CheckpointError(
        f"no checkpoint found under {outputs_dir}: train first (`python train.py`) or pass ckpt=<path>"
    )


def resolve_checkpoint(value: str | Path, outputs_dir: Path) -> Path:
    """`last` -> the newest checkpoint under `outputs_dir`; anything else must be an existing file."""
    if str(value) == "last":
        return find_latest_checkpoint(outputs_dir)
    path = Path(value).expanduser()
    if not path.is_file():
        raise CheckpointError(
            f"checkpoint {path} does not exist: pass ckpt=<path to a .ckpt> or ckpt=last"
        )
    return path

"""What one training job leaves for the sweep summary: `<run dir>/status.json`.

Each job writes its own record (running -> ok | failed: <reason>) in its own run dir, so the
summary works whichever process or machine ran the job (basic, joblib or submitit launchers).
This module stays light (no torch): Hydra imports it through the sweep callback at startup.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from lofibeats.errors import LofiError

STATUS_NAME = "status.json"
RUNNING = "running"
OK = "ok"


@dataclass
class JobStatus:
    """The record of one run: how it ended, its final val metrics and where its checkpoint is."""

    status: str = RUNNING  # running | ok | failed: <one-line reason>
    overrides: list[str] = field(default_factory=list)  # the job's command-line overrides
    metric: str = "val/loss"  # the optimised metric (cfg.optimized_metric)
    value: float | None = None  # its final value (what the sweeper saw)
    metrics: dict[str, float] = field(default_factory=dict)  # every final val/* metric
    steps: int = 0
    wall_s: float = 0.0
    checkpoint: str = ""  # best (else last) checkpoint path, "" if none was written
    started: str = ""  # ISO 8601 start time: orders runs of several sweep invocations

    def write(self, run_dir: Path) -> None:
        """Write `run_dir/status.json` atomically (a reader never sees half a file)."""
        run_dir.mkdir(parents=True, exist_ok=True)
        target = run_dir / STATUS_NAME
        tmp = target.with_name(f".{STATUS_NAME}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(asdict(self), indent=2), encoding="utf-8")
        os.replace(tmp, target)

    @classmethod
    def read(cls, run_dir: Path) -> JobStatus | None:
        """The record in `run_dir`, or None if there is none or it is unreadable."""
        try:
            data: Any = json.loads((run_dir / STATUS_NAME).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        if not isinstance(data, dict):
            return None
        known = {f.name for f in fields(cls)}
        return cls(**{key: value for key, value in data.items() if key in known})

    @property
    def failed(self) -> bool:
        return self.status.startswith("failed")


def failure_reason(exc: BaseException) -> str:
    """One line saying why a job failed: a LofiError's own message, else the exception's type and
    first line (the traceback goes to the job's log)."""
    if isinstance(exc, KeyboardInterrupt):
        return "interrupted"
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    if isinstance(exc, LofiError):
        return text or type(exc).__name__
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__

"""`python prepare.py`: prepare `data.raw_dir` at every rate of `data.sample_rates`, print a summary.

The work is the library's (`lofibeats.data.prepare.prepare_from_config`); this is the command.
"""

from __future__ import annotations

from omegaconf import DictConfig
from rich.console import Console

from lofibeats.data.prepare import prepare_from_config
from lofibeats.data.report import PrepareReport


def prepare(cfg: DictConfig) -> PrepareReport:
    """Run `python prepare.py`; prints and returns the report (what was kept, skipped, why)."""
    report = prepare_from_config(cfg.data, list(cfg.data.sample_rates), progress=cfg.progress)
    Console().print(report.summary())
    return report

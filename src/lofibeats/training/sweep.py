"""The sweep summary: one row per run of a multirun, as `summary.csv` + `summary.md` in the sweep dir.

:class:`SweepSummary` is a Hydra callback (registered in `conf/hydra/default.yaml`). It reads the
`status.json` every job wrote in its own run dir, so it works whichever process or machine ran the
jobs (basic, joblib, submitit launchers). To write the table again, e.g. while a SLURM sweep is
still running: `python -m lofibeats.training.sweep <sweep dir>`.
"""

from __future__ import annotations

import csv
import math
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import yaml
from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from lofibeats.training.status import OK, RUNNING, STATUS_NAME, JobStatus

SUMMARY_CSV = "summary.csv"
SUMMARY_MD = "summary.md"
# metrics shown for every sweep (when some run has them), after the one each run optimised
SHOWN_METRICS = ("val/loss", "val/bits_per_sample")


@dataclass
class SweepRun:
    """One run dir of a sweep and its record."""

    path: Path
    status: JobStatus
    overrides: str = ""  # only the overrides that differ between runs

    @property
    def ok(self) -> bool:
        return self.status.status == OK


def _natural_key(path: Path) -> list[Any]:
    """Order run dirs 0, 1, 2, ..., 10 (not 0, 1, 10, 2)."""
    return [(0, int(part), "") if part.isdigit() else (1, 0, part) for part in path.parts]


def _started(status: JobStatus) -> datetime:
    try:
        return datetime.fromisoformat(status.started)
    except ValueError:
        return datetime.max.replace(tzinfo=timezone.utc)


def _job_order(runs: list[SweepRun], sweep_dir: Path) -> list[SweepRun]:
    """Job order: runs grouped by folder (one folder per invocation of a resumed Optuna search),
    groups by when they started, runs within a group by job number."""
    first: dict[Path, datetime] = {}
    for run in runs:
        group = run.path.parent
        first[group] = min(first.get(group, _started(run.status)), _started(run.status))
    return sorted(
        runs,
        key=lambda r: (first[r.path.parent], _natural_key(r.path.relative_to(sweep_dir))),
    )


def _overrides_file(run_dir: Path) -> list[str]:
    try:
        data = yaml.safe_load((run_dir / ".hydra" / "overrides.yaml").read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError):
        return []
    return [str(item) for item in data] if isinstance(data, list) else []


def find_runs(sweep_dir: Path, *, finished: bool = False) -> list[SweepRun]:
    """Every run dir under `sweep_dir` (one with a status.json or a .hydra/ folder), in job order.

    A run dir without a record is reported as such; with `finished` (the sweep has ended), a run
    still marked running died without saying so (killed, out of memory, node failure).
    """
    dirs = {p.parent for p in sweep_dir.rglob(STATUS_NAME)}
    dirs |= {p.parent for p in sweep_dir.rglob(".hydra") if p.is_dir()}
    runs = []
    for run_dir in dirs:
        status = JobStatus.read(run_dir)
        if status is None:
            status = JobStatus(status="failed: no status.json (the job never started training)")
            status.overrides = _overrides_file(run_dir)
        elif finished and status.status == RUNNING:
            status.status = "failed: ended without a final status (killed?)"
        runs.append(SweepRun(run_dir, status))
    runs = _job_order(runs, sweep_dir)
    _mark_varying_overrides(runs)
    return runs


def _mark_varying_overrides(runs: Sequence[SweepRun]) -> None:
    """Show each run's overrides minus those every run shares (all of them for a lone run)."""
    common = set.intersection(*(set(r.status.overrides) for r in runs)) if len(runs) > 1 else set()
    for run in runs:
        run.overrides = " ".join(o for o in run.status.overrides if o not in common)


def _metric_names(runs: Sequence[SweepRun]) -> list[str]:
    names = dict.fromkeys([r.status.metric for r in runs] + list(SHOWN_METRICS))
    return [name for name in names if any(name in r.status.metrics for r in runs)]


def _fmt(value: float | None) -> str:
    return "" if value is None else f"{value:.4f}"


def _shorter(path: str, base: Path) -> str:
    """`path` relative to `base` when it lies inside it."""
    if not path:
        return path
    try:
        return Path(path).relative_to(base.absolute()).as_posix()
    except ValueError:
        return path


def summary_rows(
    runs: Sequence[SweepRun], sweep_dir: Path, *, relative: bool
) -> list[dict[str, str]]:
    """The table as rows of strings; `relative` shortens checkpoint paths to the sweep dir."""
    metrics = _metric_names(runs)
    rows = []
    for run in runs:
        s = run.status
        checkpoint = _shorter(s.checkpoint, sweep_dir) if relative else s.checkpoint
        row = {
            "run": run.path.relative_to(sweep_dir).as_posix(),
            "overrides": run.overrides,
            "status": s.status,
        }
        row.update({name: _fmt(s.metrics.get(name)) for name in metrics})
        row.update({"steps": str(s.steps), "wall_s": f"{s.wall_s:.1f}", "checkpoint": checkpoint})
        rows.append(row)
    return rows


def best_run(runs: Sequence[SweepRun]) -> SweepRun | None:
    """The finished run with the lowest finite value of the metric it optimised."""
    scored = [
        r for r in runs if r.ok and r.status.value is not None and math.isfinite(r.status.value)
    ]
    return min(scored, key=lambda r: r.status.value, default=None)


def markdown_table(rows: Sequence[dict[str, str]]) -> str:
    if not rows:
        return ""
    header = list(rows[0])

    def line(cells: Sequence[str]) -> str:
        return "| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |"

    body = [line(header), line(["---"] * len(header))]
    body += [line([row[key] for key in header]) for row in rows]
    return "\n".join(body)


def write_summary(sweep_dir: Path, *, finished: bool = True) -> str:
    """Write `summary.csv` and `summary.md` in `sweep_dir`; return the Markdown ("" if no runs)."""
    sweep_dir = Path(sweep_dir)
    runs = find_runs(sweep_dir, finished=finished) if sweep_dir.is_dir() else []
    if not runs:
        return ""
    rows = summary_rows(runs, sweep_dir, relative=False)
    with (sweep_dir / SUMMARY_CSV).open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    failed = sum(not r.ok for r in runs)
    text = f"{len(runs)} runs, {len(runs) - failed} ok, {failed} not ok ({sweep_dir})\n\n"
    text += markdown_table(summary_rows(runs, sweep_dir, relative=True))
    best = best_run(runs)
    if best is not None:
        where = best.path.relative_to(sweep_dir).as_posix()
        text += (
            f"\n\nbest (lowest {best.status.metric}): run {where} "
            f"{best.overrides} = {best.status.value:.4f}"
        )
    (sweep_dir / SUMMARY_MD).write_text(text + "\n", encoding="utf-8")
    return text


class SweepSummary(Callback):
    """Hydra callback: make the sweep dir before the sweeper needs it (Optuna's SQLite storage
    lives there) and write + print the summary table when the multirun ends."""

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        Path(config.hydra.sweep.dir).mkdir(parents=True, exist_ok=True)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        text = write_summary(Path(config.hydra.sweep.dir))
        if text:
            print(f"\n{text}\n", flush=True)


def main(argv: Sequence[str]) -> int:
    if len(argv) != 1 or not Path(argv[0]).is_dir():
        print("usage: python -m lofibeats.training.sweep <sweep dir>", file=sys.stderr)
        return 2
    print(write_summary(Path(argv[0]), finished=False) or f"no runs under {argv[0]}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))

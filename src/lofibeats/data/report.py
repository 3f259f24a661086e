"""What a prepare run did, and its one-screen summary."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from lofibeats.data.manifest import SkippedEntry

MAX_LISTED = 15  # rows per list in the summary; the manifest has them all


@dataclass
class PrepareReport:
    raw_dir: Path
    cache_dir: Path
    sample_rates: tuple[int, ...]
    kept: int = 0  # source files with audio in the cache
    seconds: float = 0.0  # their total duration (at the first rate)
    decoded: int = 0  # files decoded by this run
    decoded_seconds: float = 0.0  # input audio this run decoded
    skipped: list[SkippedEntry] = field(default_factory=list)
    ignored: int = 0  # non-audio and hidden files
    warnings: list[str] = field(default_factory=list)
    wall_seconds: float = 0.0

    @property
    def hours(self) -> float:
        return self.seconds / 3600.0

    @property
    def realtime_factor(self) -> float:
        """Audio decoded per second of wall time (x real time); 0 when nothing was decoded."""
        return (
            self.decoded_seconds / self.wall_seconds
            if self.decoded and self.wall_seconds > 0
            else 0.0
        )

    def headline(self) -> str:
        rates = ", ".join(str(r) for r in self.sample_rates)
        line = (
            f"prepared {_files(self.kept)} ({_duration(self.seconds)}) at {rates} Hz in {self.cache_dir}; "
            f"skipped {len(self.skipped)}, ignored {self.ignored}; "
        )
        if self.decoded:
            return line + (
                f"read {_files(self.decoded)} ({_duration(self.decoded_seconds)}) in "
                f"{self.wall_seconds:.1f} s, {self.realtime_factor:.0f}x real time"
            )
        return line + f"all up to date ({self.wall_seconds:.2f} s)"

    def summary(self) -> RenderableType:
        """Counts, then the skipped files with their reasons, then warnings."""
        parts: list[RenderableType] = [Text(self.headline(), style="bold")]
        if self.skipped:
            table = Table(
                title=f"skipped {len(self.skipped)} (see manifest.json)", title_justify="left"
            )
            table.add_column("file", overflow="fold")
            table.add_column("reason", overflow="fold")
            for entry in self.skipped[:MAX_LISTED]:
                table.add_row(entry.path, entry.reason)
            if len(self.skipped) > MAX_LISTED:
                table.add_row("...", f"and {len(self.skipped) - MAX_LISTED} more")
            parts.append(table)
        for note in self.warnings[:MAX_LISTED]:
            parts.append(Text(f"warning: {note}", style="yellow"))
        if len(self.warnings) > MAX_LISTED:
            parts.append(
                Text(f"... and {len(self.warnings) - MAX_LISTED} more warnings", style="yellow")
            )
        return Group(*parts)


def _files(n: int) -> str:
    return f"{n} file" if n == 1 else f"{n} files"


def _duration(seconds: float) -> str:
    if seconds >= 3600:
        return f"{seconds / 3600:.2f} h"
    if seconds >= 60:
        return f"{seconds / 60:.1f} min"
    return f"{seconds:.1f} s"

"""What a prepare run did, its one-screen summary, and the list of every file it did not use.

Nothing is dropped silently: every file under `raw_dir` that is not in the cache is either
*skipped* (audio by its name, but unreadable, truncated, too short, silent, without an audio
track...) or *ignored* (hidden, not audio, an unknown extension), each with its reason. The
summary shows the first few; `cache_dir/unused-files.tsv` lists them all, and the summary says
where it is.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from lofibeats.data.manifest import SkippedEntry, write_text_atomic

MAX_LISTED = 15  # rows per list in the summary; unused-files.tsv has them all
UNUSED_NAME = "unused-files.tsv"


@dataclass
class PrepareReport:
    raw_dir: Path
    cache_dir: Path
    sample_rates: tuple[int, ...]
    kept: int = 0  # source files with audio in the cache
    seconds: float = 0.0  # their total duration (at the first rate)
    decoded: int = 0  # files decoded by this run
    decoded_seconds: float = 0.0  # input audio this run decoded
    skipped: list[SkippedEntry] = field(default_factory=list)  # audio files not used
    ignored: list[SkippedEntry] = field(default_factory=list)  # other files: never read
    warnings: list[str] = field(default_factory=list)
    wall_seconds: float = 0.0
    unused_list: Path | None = None  # where every unused file is listed with its reason

    @property
    def hours(self) -> float:
        return self.seconds / 3600.0

    @property
    def unused(self) -> list[SkippedEntry]:
        """Every file not used: the skipped audio files first, then the ignored ones."""
        return [*self.skipped, *self.ignored]

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
            f"{self._unused_counts()}; "
        )
        if self.decoded:
            return line + (
                f"read {_files(self.decoded)} ({_duration(self.decoded_seconds)}) in "
                f"{self.wall_seconds:.1f} s, {self.realtime_factor:.0f}x real time"
            )
        return line + f"all up to date ({self.wall_seconds:.2f} s)"

    def _unused_counts(self) -> str:
        n = len(self.skipped) + len(self.ignored)
        if not n:
            return "every file used"
        where = f" (all listed with reasons in {self.unused_list})" if self.unused_list else ""
        return (
            f"{_files(n)} not used: {len(self.skipped)} skipped, {len(self.ignored)} ignored{where}"
        )

    def summary(self) -> RenderableType:
        """Counts, then the first unused files with their reasons, then warnings."""
        parts: list[RenderableType] = [Text(self.headline(), style="bold")]
        unused = self.unused
        if unused:
            where = (
                f"all of them in {self.unused_list}" if self.unused_list else "see manifest.json"
            )
            table = Table(
                title=f"not used: {_files(len(unused))} ({where})",
                title_justify="left",
            )
            table.add_column("file", overflow="fold")
            table.add_column("reason", overflow="fold")
            for entry in unused[:MAX_LISTED]:
                table.add_row(entry.path, entry.reason)
            if len(unused) > MAX_LISTED:
                table.add_row("...", f"and {len(unused) - MAX_LISTED} more")
            parts.append(table)
        for note in self.warnings[:MAX_LISTED]:
            parts.append(Text(f"warning: {note}", style="yellow"))
        if len(self.warnings) > MAX_LISTED:
            parts.append(
                Text(f"... and {len(self.warnings) - MAX_LISTED} more warnings", style="yellow")
            )
        return Group(*parts)


def write_unused_list(report: PrepareReport) -> Path:
    """Write `cache_dir/unused-files.tsv` (atomically): a header, then one `path<TAB>reason` row
    per unused file, skipped audio first; a tab, newline or backslash in a name is escaped.
    Left alone when it already says the same."""
    path = report.cache_dir / UNUSED_NAME
    rows = ["path\treason", *(f"{_tsv(e.path)}\t{_tsv(e.reason)}" for e in report.unused)]
    text = "\n".join(rows) + "\n"
    try:
        same = path.read_text(encoding="utf-8") == text
    except (OSError, UnicodeDecodeError):
        same = False
    if not same:  # a rerun with nothing changed rewrites nothing
        write_text_atomic(path, text)
    return path


def read_unused_list(path: Path) -> list[tuple[str, str]]:
    """The (path, reason) rows of an `unused-files.tsv`."""
    lines = Path(path).read_text(encoding="utf-8").splitlines()
    return [tuple(_untsv(cell) for cell in line.split("\t", 1)) for line in lines[1:]]


def _tsv(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n").replace("\r", "\\r")


def _untsv(text: str) -> str:
    out, chars = [], iter(text)
    for ch in chars:
        if ch == "\\":
            nxt = next(chars, "")
            out.append({"t": "\t", "n": "\n", "r": "\r"}.get(nxt, nxt))
        else:
            out.append(ch)
    return "".join(out)


def _files(n: int) -> str:
    return f"{n} file" if n == 1 else f"{n} files"


def _duration(seconds: float) -> str:
    if seconds >= 3600:
        return f"{seconds / 3600:.2f} h"
    if seconds >= 60:
        return f"{seconds / 60:.1f} min"
    return f"{seconds:.1f} s"

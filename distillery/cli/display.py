"""How jobs look in a terminal: the live progress bar, the job table, one line per event.

Progress and chatter go to stderr; what a script reads (ids, tables, JSON) goes to stdout. Off a terminal
(a pipe, CI) the bar becomes one line per change of status, phase or epoch.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable
from datetime import datetime
from types import TracebackType
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, Progress, TaskID, TaskProgressColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from distillery.models import Event, Job


def stderr() -> Console:
    return Console(stderr=True, highlight=False, soft_wrap=True)


def stdout() -> Console:
    # Off a terminal rich would wrap at 80 columns; a table piped to a file keeps its rows whole instead.
    return Console(highlight=False, width=None if sys.stdout.isatty() else 200)


def eta(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    seconds = max(0, round(seconds))
    hours, rest = divmod(seconds, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}" if hours else f"{rest // 60}:{rest % 60:02d}"


def stage(job: Job) -> str:
    """`running · train epoch 3/10`: the status, and where the job is when it has started."""
    progress = job.progress
    parts = [job.status]
    if progress.phase and not job.finished:
        parts.append(progress.phase)
    if progress.epoch is not None and progress.epochs and not job.finished:
        parts.append(f"epoch {progress.epoch}/{progress.epochs}")
    return " · ".join(parts)


def percent(job: Job) -> str:
    fraction = job.progress.fraction
    return "-" if fraction is None else f"{100 * fraction:.0f}%"


class JobProgress:
    """`with JobProgress(console) as bar: bar.update(job)` for every poll of the job."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self.live = console.is_terminal
        self._progress = Progress(
            TextColumn("{task.fields[job_id]}", style="bold"),
            TextColumn("{task.description}"),
            BarColumn(),
            TaskProgressColumn(),
            TextColumn("ETA {task.fields[eta]}"),
            TimeElapsedColumn(),
            console=console,
            transient=False,
        )
        self._task: TaskID | None = None
        self._last: tuple[Any, ...] | None = None

    def __enter__(self) -> JobProgress:
        if self.live:
            self._progress.start()
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        if self.live:
            self._progress.stop()

    def update(self, job: Job) -> None:
        fraction = 1.0 if job.status == "succeeded" else (job.progress.fraction or 0.0)
        if self.live:
            left = "-" if job.finished else eta(job.progress.eta_seconds)
            if self._task is None:  # rich counts in floats; its stubs say int
                self._task = self._progress.add_task(stage(job), total=1.0, job_id=job.id, eta=left)
            self._progress.update(self._task, description=stage(job), completed=fraction, job_id=job.id, eta=left)
            return
        key = (job.status, job.progress.phase, job.progress.epoch)
        if key != self._last:
            self._last = key
            left = "" if job.finished or job.progress.eta_seconds is None else f", ETA {eta(job.progress.eta_seconds)}"
            self.console.print(f"{job.id} {stage(job)} ({100 * fraction:.0f}%{left})", markup=False)


def job_table(jobs: Iterable[Job]) -> Table:
    table = Table(box=None, pad_edge=False, header_style="bold")
    for name in ("ID", "STATUS", "PROGRESS", "CREATED", "FINISHED", "ERROR"):
        table.add_column(name, no_wrap=name in ("ID", "STATUS", "CREATED", "FINISHED"))
    for job in jobs:
        table.add_row(
            job.id,
            job.status,
            percent(job),
            when(job.created_at),
            when(job.finished_at),
            job.error.code if job.error else "",
        )
    return table


def when(moment: datetime | None) -> str:
    return "" if moment is None else moment.astimezone().strftime("%Y-%m-%d %H:%M:%S")


def job_lines(job: Job) -> list[str]:
    """`distillery status ID` without --json: what a person wants to know about the job, one fact a line."""
    lines = [f"{job.id}  {stage(job)}  {percent(job)}"]
    if job.progress.eta_seconds is not None and not job.finished:
        lines.append(f"  eta        {eta(job.progress.eta_seconds)}")
    for label, moment in (("created", job.created_at), ("started", job.started_at), ("finished", job.finished_at)):
        if moment is not None:
            lines.append(f"  {label:<10} {when(moment)}")
    if job.error:
        where = f" ({job.error.param})" if job.error.param else ""
        lines.append(f"  error      {job.error.code}: {job.error.message}{where}")
    for name, value in sorted(job.metrics.items()):
        if isinstance(value, int | float) and not isinstance(value, bool):
            lines.append(f"  {name:<24} {value:.4g}")
    for artifact in job.artifacts:
        lines.append(f"  artifact   {artifact.name} ({artifact.bytes:,} bytes)")
    return lines


def event_line(event: Event) -> str:
    return f"{when(event.created_at)} {event.level:<7} {event.type:<16} {event.message}"

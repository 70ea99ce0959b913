"""Translate the engine's stdout (one JSON event per line, distill/events.py) into rows to persist.

Pure bookkeeping, no I/O besides an optional plain-text log: the supervisor feeds lines in and takes the
buffered rows out when it flushes. What becomes what:
- progress   -> jobs.progress (latest only) + one event when a new epoch (or phase) begins, not per step;
- metrics    -> job_metrics rows + jobs.metrics (latest value of each name);
- checkpoint, message, error -> job_events (the error is also kept for the final status);
- result     -> kept for the final status (report + artifacts);
- anything else on stdout (a stray print) -> a `log` event, up to a cap, and the plain-text log file.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TextIO

from app.models import utcnow
from worker.repository import EventRow, MetricRow

log = logging.getLogger(__name__)

PROGRESS_KEYS = ("phase", "epoch", "epochs", "step", "steps", "fraction", "eta_seconds")
LEVELS = ("info", "warning", "error")
MAX_LOG_EVENTS = 500
MAX_MESSAGE_CHARS = 4000


def _finite(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


class RunLog:
    def __init__(
        self,
        *,
        metrics: dict[str, Any] | None = None,
        stdout_log: TextIO | None = None,
        observers: Sequence[Callable[[dict[str, Any]], None]] = (),
    ) -> None:
        self.progress: dict[str, Any] = {}
        self.metrics: dict[str, Any] = dict(metrics or {})
        self.error: dict[str, Any] | None = None
        self.result: dict[str, Any] | None = None
        self.events: list[EventRow] = []
        self.metric_rows: list[MetricRow] = []
        self.progress_dirty = False
        self.metrics_dirty = False
        self._stdout_log = stdout_log
        self._log_events = 0
        self._last_stage: tuple[Any, Any] | None = None
        # Also shown every event as it arrives (MLflow, the worker's Prometheus counters); never block.
        self._observers = tuple(observers)

    @property
    def pending(self) -> bool:
        return bool(self.events or self.metric_rows or self.progress_dirty or self.metrics_dirty)

    def take(self) -> tuple[dict[str, Any] | None, dict[str, Any] | None, list[EventRow], list[MetricRow]]:
        """(progress if changed, metrics if changed, events, metric rows) since the last take; clears them."""
        out = (
            dict(self.progress) if self.progress_dirty else None,
            dict(self.metrics) if self.metrics_dirty else None,
            self.events,
            self.metric_rows,
        )
        self.events, self.metric_rows = [], []
        self.progress_dirty = self.metrics_dirty = False
        return out

    def restore(self, events: list[EventRow], metric_rows: list[MetricRow]) -> None:
        """Put rows back after a failed flush (the database was unreachable) so the next one retries."""
        self.events = events + self.events
        self.metric_rows = metric_rows + self.metric_rows
        self.progress_dirty = self.metrics_dirty = True

    def backfill(self, metrics_jsonl: Path, *, known: set[tuple[str, int, int | None]]) -> int:
        """Queue the rows of the engine's metrics.jsonl (the run's whole history, earlier attempts included)
        whose (name, step, epoch) is not in `known`; returns how many."""
        added = 0
        for line in metrics_jsonl.read_text(encoding="utf-8", errors="replace").splitlines():
            try:
                row = json.loads(line)
                key = (str(row["name"]), int(row["step"]), None if row.get("epoch") is None else int(row["epoch"]))
                value = float(row["value"])
            except (ValueError, KeyError, TypeError):
                continue
            if key in known or not math.isfinite(value):
                continue
            known.add(key)
            self.metric_rows.append(MetricRow(key[0], key[1], key[2], value, utcnow()))
            added += 1
        return added

    def add(self, type: str, message: str, *, level: str = "info", data: dict[str, Any] | None = None) -> None:
        self.events.append(EventRow(type, message[:MAX_MESSAGE_CHARS], level, data or {}, utcnow()))

    def feed(self, line: str) -> None:
        if not line.strip():
            return
        try:
            event = json.loads(line)
        except ValueError:
            event = None
        if not isinstance(event, dict) or not isinstance(event.get("type"), str):
            self._plain(line)
            return
        for observe in self._observers:
            try:
                observe(event)
            except Exception:  # a side channel must never cost the job an event
                log.exception("an observer of the run log failed on a %s event", event["type"])
        handler = getattr(self, f"_on_{event['type']}", None)
        if handler is None:
            self.add("log", f"unrecognised event from the training process: {event['type']}", data=event)
        else:
            handler(event)

    def _plain(self, line: str) -> None:
        if self._stdout_log is not None:
            self._stdout_log.write(line + "\n")
            self._stdout_log.flush()
        self._log_events += 1
        if self._log_events <= MAX_LOG_EVENTS:
            self.add("log", line)
        elif self._log_events == MAX_LOG_EVENTS + 1:
            self.add("log", "further output of the training process is only in stdout.log", level="warning")

    def _on_progress(self, event: dict[str, Any]) -> None:
        self.progress = {k: event[k] for k in PROGRESS_KEYS if k in event}
        self.progress_dirty = True
        stage = (event.get("phase"), event.get("epoch"))
        if stage != self._last_stage:
            self._last_stage = stage
            phase = event.get("phase") or "train"
            if event.get("epoch") is not None:
                message = f"{phase}: epoch {event.get('epoch')}/{event.get('epochs', '?')}"
            else:
                message = str(phase)
            self.add("progress", message, data=dict(self.progress))

    def _on_metrics(self, event: dict[str, Any]) -> None:
        step, epoch = event.get("step"), event.get("epoch")
        values = event.get("values")
        if not isinstance(values, dict):
            return
        for name, value in values.items():
            if not _finite(value):
                continue  # NaN/inf cannot go into JSON; a diverged loss arrives as an error event instead
            self.metrics[str(name)] = value
            self.metric_rows.append(
                MetricRow(
                    str(name),
                    int(step) if isinstance(step, int | float) and _finite(step) else 0,
                    int(epoch) if isinstance(epoch, int | float) and _finite(epoch) else None,
                    float(value),
                    utcnow(),
                )
            )
            self.metrics_dirty = True

    def _on_checkpoint(self, event: dict[str, Any]) -> None:
        path = Path(str(event.get("path", "")))
        data = {"epoch": event.get("epoch"), "file": path.name}
        self.add("checkpoint", f"checkpoint written after epoch {event.get('epoch')}", data=data)

    def _on_message(self, event: dict[str, Any]) -> None:
        level = event.get("level") if event.get("level") in LEVELS else "info"
        data = {k: v for k, v in event.items() if k not in ("type", "level", "message")}
        self.add("message", str(event.get("message", "")), level=str(level), data=data)

    def _on_error(self, event: dict[str, Any]) -> None:
        if event.get("code") == "cancelled":  # the run stopped as asked: not an error to the user
            self.add("message", str(event.get("message") or "the run stopped"), data={"code": "cancelled"})
            return
        self.error = {
            "code": str(event.get("code") or "invalid_job"),
            "message": str(event.get("message") or "the job failed"),
            "param": event.get("param"),
        }
        self.add("error", self.error["message"], level="error", data=dict(self.error))

    def _on_result(self, event: dict[str, Any]) -> None:
        self.result = event

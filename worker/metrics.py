"""Prometheus metrics of one worker process, served on DISTILLERY_WORKER_METRICS_PORT.

The API's /metrics (app/ops/observability.py) reports the whole system from the database; these report
what only this process knows: whether it is busy, how its tasks ended, how much its jobs trained. Sum them
across workers in PromQL (`sum(distillery_worker_busy)`: busy workers); a job id is never a label.
They live in prometheus_client's default registry, so the process's own CPU and memory come with them.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from prometheus_client import Counter, Gauge, start_http_server

log = logging.getLogger(__name__)

OUTCOMES = ("succeeded", "failed", "cancelled", "queued", "lost", "skipped")

WORKER_BUSY = Gauge("distillery_worker_busy", "1 while this worker runs a job, 0 while it waits for one.")
JOBS_PROCESSED = Counter(
    "distillery_worker_jobs_processed",
    "Tasks this worker ran, by outcome: the job's status after the attempt (queued: given back to resume "
    "later; lost: its lease went to another worker; skipped: a duplicate message, nothing to do).",
    ["outcome"],
)
TRAINING_STEPS = Counter("distillery_worker_training_steps", "Optimizer steps the jobs of this worker trained.")
TRAINING_SAMPLES = Counter(
    "distillery_worker_training_samples",
    "Training examples the jobs of this worker went through (steps x batch size; a short last batch counts full).",
)
for _outcome in OUTCOMES:
    JOBS_PROCESSED.labels(_outcome)  # every series exists from the start, at 0


@contextmanager
def busy() -> Iterator[None]:
    WORKER_BUSY.set(1)
    try:
        yield
    finally:
        WORKER_BUSY.set(0)


def count_outcome(status: str) -> None:
    JOBS_PROCESSED.labels(status if status in OUTCOMES else "failed").inc()


class TrainingCounter:
    """Counts the steps (and samples) of one attempt from its progress events (worker/run_log.py observers).

    Progress `step` counts the whole job's steps so far; an attempt that resumed from a checkpoint starts
    past zero, and those steps were counted by the attempt that trained them.
    """

    def __init__(self, spec: dict[str, Any], *, resumed: bool) -> None:
        training = spec.get("training") if isinstance(spec.get("training"), dict) else {}
        size = (training or {}).get("batch_size", 64)  # the engine's default (distill/config.py)
        self.batch_size = size if isinstance(size, int) and size > 0 else 64
        self._last: int | None = None if resumed else 0

    def observe(self, event: dict[str, Any]) -> None:
        step = event.get("step")
        if event.get("type") != "progress" or not isinstance(step, int) or isinstance(step, bool):
            return
        if self._last is not None and step > self._last:
            TRAINING_STEPS.inc(step - self._last)
            TRAINING_SAMPLES.inc((step - self._last) * self.batch_size)
        if self._last is None or step > self._last:
            self._last = step


def serve(port: int, host: str = "0.0.0.0") -> Any:
    """Serve /metrics on `host:port` from a daemon thread; returns the server (tests shut it down)."""
    server, _thread = start_http_server(port, addr=host)
    log.info("worker metrics on http://%s:%s/metrics", host, port)
    return server

"""Prometheus metrics: request latency (a middleware) and job state read from the database at scrape time.

Job gauges come from Postgres, the source of truth, rather than counters kept in one API process: with N
API replicas and workers elsewhere, each scrape still reports the whole system.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import CollectorRegistry, Histogram
from prometheus_client.core import GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlalchemy import func, select
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.db import SessionFactory
from app.models import FINISHED_STATUSES, JOB_STATUSES, Job

log = logging.getLogger(__name__)

# Seconds: a toy job takes seconds, a real one hours; a job may wait in the queue about as long.
DURATION_BUCKETS = (1, 5, 15, 30, 60, 120, 300, 600, 1800, 3600, 7200, 14400, 43200, 86400)
RUNNING = ("running", "cancelling")
DEFAULT_BATCH_SIZE = 64  # the engine's (distill/config.py), for a spec that leaves it out


@dataclass
class JobStats:
    counts: dict[str, int] = field(default_factory=dict)
    durations: dict[str, list[float]] = field(default_factory=dict)  # finished jobs' run times, by status
    queue_waits: list[float] = field(default_factory=list)  # started_at - created_at of started jobs
    steps_per_second: float = 0.0  # summed over running jobs
    samples_per_second: float = 0.0


class JobsCollector(Collector):
    """The jobs' state, computed per scrape from the jobs table:

    - distillery_jobs{status}: jobs by status; distillery_queue_depth: the queued ones;
    - distillery_job_duration_seconds{status}: run time (finished_at - started_at) of finished jobs;
    - distillery_job_queue_wait_seconds: time in the queue (started_at - created_at) of started jobs;
    - distillery_training_steps_per_second, distillery_training_samples_per_second: the training
      throughput of the running jobs together, from their progress (the engine's ETA is steps left over
      its rate, so steps/s = steps left / eta_seconds; samples = steps x batch size).
    No job or tenant id is a label: the series stay few however many jobs there are.
    """

    def __init__(self, session_factory: SessionFactory) -> None:
        self.session_factory = session_factory

    def describe(self) -> Iterable[Metric]:
        return []  # no describe-time query: registering must not touch the database

    def collect(self) -> Iterator[Metric]:
        up = GaugeMetricFamily("distillery_database_up", "1 if the last scrape could read the jobs table.")
        try:
            stats = self._read()
        except Exception:
            log.exception("metrics scrape could not read the database")
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        jobs = GaugeMetricFamily("distillery_jobs", "Jobs by status (all tenants).", labels=["status"])
        for status in JOB_STATUSES:
            jobs.add_metric([status], stats.counts.get(status, 0))
        yield jobs
        yield GaugeMetricFamily(
            "distillery_queue_depth", "Jobs waiting for a worker (status queued).", value=stats.counts.get("queued", 0)
        )
        durations = HistogramMetricFamily(
            "distillery_job_duration_seconds",
            "Run time (finished_at - started_at) of finished jobs, by final status.",
            labels=["status"],
        )
        for status in FINISHED_STATUSES:
            buckets, total = _histogram(stats.durations.get(status, []))
            durations.add_metric([status], buckets, total)
        yield durations
        waits = HistogramMetricFamily(
            "distillery_job_queue_wait_seconds", "Time in the queue (started_at - created_at) of jobs that started."
        )
        waits.add_metric([], *_histogram(stats.queue_waits))
        yield waits
        yield GaugeMetricFamily(
            "distillery_training_steps_per_second",
            "Optimizer steps per second of the running jobs together.",
            value=stats.steps_per_second,
        )
        yield GaugeMetricFamily(
            "distillery_training_samples_per_second",
            "Training examples per second of the running jobs together (steps/s x batch size).",
            value=stats.samples_per_second,
        )
        yield up

    def _read(self) -> JobStats:
        stats = JobStats()
        with self.session_factory() as session:
            stats.counts = {
                status: count
                for status, count in session.execute(select(Job.status, func.count()).group_by(Job.status))
            }
            rows = session.execute(
                select(Job.status, Job.created_at, Job.started_at, Job.finished_at).where(Job.started_at.is_not(None))
            )
            for status, created, started, ended in rows:
                if started is None:
                    continue
                if created is not None:
                    stats.queue_waits.append(max((started - created).total_seconds(), 0.0))
                if status in FINISHED_STATUSES and ended is not None:
                    stats.durations.setdefault(status, []).append((ended - started).total_seconds())
            for spec, progress in session.execute(select(Job.spec, Job.progress).where(Job.status.in_(RUNNING))):
                rate = _steps_per_second(progress)
                stats.steps_per_second += rate
                stats.samples_per_second += rate * _batch_size(spec)
        return stats


def _steps_per_second(progress: Any) -> float:
    if not isinstance(progress, dict):
        return 0.0
    step, steps, eta = (_number(progress.get(key)) for key in ("step", "steps", "eta_seconds"))
    if step is None or steps is None or eta is None or eta <= 0 or steps <= step:
        return 0.0  # not started, finishing, or no estimate yet
    return (steps - step) / eta


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def _batch_size(spec: Any) -> int:
    training = spec.get("training") if isinstance(spec, dict) else None
    size = training.get("batch_size") if isinstance(training, dict) else None
    return size if isinstance(size, int) and not isinstance(size, bool) and size > 0 else DEFAULT_BATCH_SIZE


def _histogram(values: list[float]) -> tuple[list[tuple[str, float]], float]:
    buckets = [(str(float(bound)), float(sum(1 for v in values if v <= bound))) for bound in DURATION_BUCKETS]
    buckets.append(("+Inf", float(len(values))))
    return buckets, float(sum(values))


class HttpMetricsMiddleware:
    """distillery_http_request_duration_seconds{method, route, status}; route is the template
    (/v1/jobs/{job_id}), never the raw path, so ids do not explode the label set."""

    def __init__(self, app: ASGIApp, histogram: Histogram) -> None:
        self.app = app
        self.histogram = histogram

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            route = scope.get("route")
            template = getattr(route, "path", None) or "unmatched"
            self.histogram.labels(scope["method"], template, str(status)).observe(time.perf_counter() - start)


def make_registry(session_factory: SessionFactory) -> tuple[CollectorRegistry, Histogram]:
    """A registry per app (tests build many apps), holding the request histogram and the jobs collector."""
    registry = CollectorRegistry()
    histogram = Histogram(
        "distillery_http_request_duration_seconds",
        "HTTP request latency by method, route template and status.",
        ["method", "route", "status"],
        registry=registry,
    )
    registry.register(JobsCollector(session_factory))
    return registry, histogram

"""Prometheus metrics: request latency (a middleware) and job state read from the database at scrape time.

Job gauges come from Postgres, the source of truth, rather than counters kept in one API process: with N
API replicas and workers elsewhere, each scrape still reports the whole system.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Iterator

from prometheus_client import CollectorRegistry, Histogram
from prometheus_client.core import GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlalchemy import func, select
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.db import SessionFactory
from app.models import FINISHED_STATUSES, JOB_STATUSES, Job

log = logging.getLogger(__name__)

# Seconds: a toy job takes seconds, a real one hours.
DURATION_BUCKETS = (1, 5, 15, 30, 60, 120, 300, 600, 1800, 3600, 7200, 14400, 43200, 86400)


class JobsCollector(Collector):
    """distillery_jobs{status} and distillery_job_duration_seconds{status}, computed per scrape."""

    def __init__(self, session_factory: SessionFactory) -> None:
        self.session_factory = session_factory

    def describe(self) -> Iterable[Metric]:
        return []  # no describe-time query: registering must not touch the database

    def collect(self) -> Iterator[Metric]:
        jobs = GaugeMetricFamily("distillery_jobs", "Jobs by status (all tenants).", labels=["status"])
        durations = HistogramMetricFamily(
            "distillery_job_duration_seconds",
            "Run time (finished_at - started_at) of finished jobs, by final status.",
            labels=["status"],
        )
        up = GaugeMetricFamily("distillery_database_up", "1 if the last scrape could read the jobs table.")
        try:
            counts, finished = self._read()
        except Exception:
            log.exception("metrics scrape could not read the database")
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        for status in JOB_STATUSES:
            jobs.add_metric([status], counts.get(status, 0))
        for status in FINISHED_STATUSES:
            buckets, total = _histogram(finished.get(status, []))
            durations.add_metric([status], buckets, total)
        yield jobs
        yield durations
        yield up

    def _read(self) -> tuple[dict[str, int], dict[str, list[float]]]:
        with self.session_factory() as session:
            counts = {
                status: count
                for status, count in session.execute(select(Job.status, func.count()).group_by(Job.status))
            }
            rows = session.execute(
                select(Job.status, Job.started_at, Job.finished_at).where(
                    Job.status.in_(FINISHED_STATUSES), Job.started_at.is_not(None), Job.finished_at.is_not(None)
                )
            )
            finished: dict[str, list[float]] = {}
            for status, started, ended in rows:
                if started is not None and ended is not None:
                    finished.setdefault(status, []).append((ended - started).total_seconds())
        return counts, finished


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

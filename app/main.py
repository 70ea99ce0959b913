"""The application factory: `uvicorn --factory app.main:create_app`, or `distillery serve`."""

from __future__ import annotations

import gc
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio
import anyio.to_thread
from fastapi import FastAPI

from app.architectures.endpoints import router as architectures_router
from app.artifacts.endpoints import router as artifacts_router
from app.auth.key_cache import KeyCache
from app.auth.service import log_auth_mode
from app.db import Reads, SessionFactory, engine_for, make_sessionmaker
from app.error_handlers import register_error_handlers
from app.errors_doc import error_responses, openapi_with_bearer_auth
from app.files.endpoints import router as files_router
from app.jobs.endpoints import router as jobs_router
from app.jobs.event_stream import EventHub
from app.jobs.read_cache import ChangeListener, JobReadCache
from app.migrate import upgrade_to_head
from app.ops.endpoints import router as ops_router
from app.ops.observability import HttpMetricsMiddleware, make_registry
from app.queue import CeleryJobQueue, JobQueue
from app.request_guard import RequestGuard
from app.settings import Settings, get_settings
from app.ui.endpoints import router as ui_router
from app.webhooks.endpoints import router as webhooks_router

log = logging.getLogger(__name__)

DESCRIPTION = """Knowledge distillation as a service: upload a teacher and a dataset, submit a job, download the
student.

Every error is `{"error": {"code", "message", "param"}}`; `param` names the offending field."""


def create_app(
    settings: Settings | None = None,
    *,
    session_factory: SessionFactory | None = None,
    queue: JobQueue | None = None,
) -> FastAPI:
    """Build the app. Tests pass a session factory bound to a rolled-back transaction and a recording queue."""
    settings = settings or get_settings()
    if session_factory is None:
        session_factory = make_sessionmaker(engine_for(settings))
    resolved_factory: SessionFactory = session_factory

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        settings.ensure_dirs()
        log_auth_mode(settings)
        # Endpoints do their database work on these threads; Settings keeps them within the pool (app.db).
        anyio.to_thread.current_default_thread_limiter().total_tokens = settings.threadpool_size
        if settings.database_url.startswith("sqlite"):
            # Embedded mode: the first `make run` must work with no separate migrate step. Postgres
            # deployments run `distillery migrate` once per release instead of on every replica's start.
            upgrade_to_head(settings.database_url)
        if listener is not None:
            listener.start()
        # What is alive now (torch, SQLAlchemy, pydantic: ~320k objects) lives as long as the process: out of
        # the collector's reach, a full collection no longer walks it, which stopped every request in flight
        # for 130-240 ms in a burst of submissions (docs/BENCHMARKS.md, bursts).
        gc.collect()
        gc.freeze()
        yield
        if listener is not None:
            listener.stop()
        await app.state.event_hub.close()
        app.state.reads.dispose()

    app = FastAPI(
        title="Distillery",
        version="1.0.0",
        description=DESCRIPTION,
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.sessionmaker = resolved_factory
    app.state.reads = Reads(resolved_factory, settings)
    app.state.job_cache = JobReadCache(settings.job_read_cache_entries)
    listener = ChangeListener.for_sessions(app.state.job_cache, resolved_factory)
    app.state.queue = queue if queue is not None else CeleryJobQueue(settings, resolved_factory)
    app.state.probe_limiter = anyio.CapacityLimiter(settings.probe_concurrency)
    app.state.key_cache = KeyCache(settings.key_cache_seconds)
    app.state.event_hub = EventHub(
        resolved_factory, poll_seconds=settings.sse_poll_seconds, keepalive_seconds=settings.sse_keepalive_seconds
    )
    registry, http_histogram = make_registry(resolved_factory)
    app.state.metrics_registry = registry

    register_error_handlers(app)
    # Added first so it runs inside the metrics middleware: refused requests are counted too.
    app.add_middleware(RequestGuard, settings=settings, router=app.router)
    app.add_middleware(HttpMetricsMiddleware, histogram=http_histogram)
    # Every /v1 route needs a key (when auth is on): its 401 is documented once, here.
    for router in (files_router, jobs_router, artifacts_router, architectures_router, webhooks_router):
        app.include_router(router, responses=error_responses(401, validation=False))
    app.include_router(ops_router)
    app.include_router(ui_router)
    app.openapi = lambda: openapi_with_bearer_auth(app)  # type: ignore[method-assign]
    return app

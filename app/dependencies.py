"""Typed dependency aliases for endpoints (`session: SessionDep`, `tenant: TenantDep`, …).

The small ones are `async def` although they do no I/O: FastAPI runs a plain `def` dependency in a worker
thread, one thread hop per dependency per request, to read an attribute.
"""

from __future__ import annotations

from typing import Annotated

import anyio
from fastapi import Depends, Request
from sqlalchemy.orm import Session

from app.auth import service as auth_service
from app.auth.key_cache import KeyCache
from app.auth.limits import TenantLimits
from app.db import Reads, SessionFactory, get_session
from app.jobs.event_stream import EventHub
from app.jobs.read_cache import JobReadCache
from app.queue import JobQueue
from app.settings import Settings


async def get_app_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


async def get_tenant(request: Request) -> str:
    """The tenant every query filters by: the one of the request's API key (`Authorization: Bearer <key>`,
    401 without a valid one), or Settings.default_tenant when auth is off (the embedded default).

    A key verified in the last `key_cache_seconds` is not looked up again (app/auth/key_cache.py); else the
    key is looked up in a worker thread with a short session of its own, closed before the endpoint
    runs: the request's session must not be used from a thread of its own (see app.db on thread hops),
    and this one holds no connection while it waits for a thread. FastAPI runs it once per request.
    """
    settings: Settings = request.app.state.settings
    if not settings.auth_required:
        return settings.default_tenant
    factory: SessionFactory = request.app.state.sessionmaker
    authorization = request.headers.get("authorization")
    cache: KeyCache = request.app.state.key_cache
    cached = cache.tenant(authorization)
    if cached is not None:
        return cached

    def lookup() -> str:
        with factory() as session:
            found = auth_service.authenticate(session, authorization=authorization, settings=settings)
            if found.wrote:
                session.commit()  # last_used_at, at most once per key_touch_seconds per key
            return found.tenant

    tenant = await anyio.to_thread.run_sync(lookup)
    cache.remember(authorization or "", tenant)
    return tenant


async def get_tenant_limits(request: Request, tenant: Annotated[str, Depends(get_tenant)]) -> TenantLimits:
    """The limits of the request's tenant, for an endpoint that needs one before its service runs (the
    upload's streaming size check)."""
    settings: Settings = request.app.state.settings
    factory: SessionFactory = request.app.state.sessionmaker

    def lookup() -> TenantLimits:
        with factory() as session:
            return auth_service.tenant_limits(session, tenant=tenant, settings=settings)

    return await anyio.to_thread.run_sync(lookup)


async def get_queue(request: Request) -> JobQueue:
    queue: JobQueue = request.app.state.queue
    return queue


async def get_session_factory(request: Request) -> SessionFactory:
    """For an endpoint that must not hold a connection across slow work (a probe): it opens and closes a
    short session of its own around its reads, instead of the request's session."""
    factory: SessionFactory = request.app.state.sessionmaker
    return factory


async def get_reads(request: Request) -> Reads:
    """Autocommit connections for the hot one-statement reads (app.db.Reads), instead of a request session."""
    reads: Reads = request.app.state.reads
    return reads


async def get_job_cache(request: Request) -> JobReadCache:
    """The process's answers of GET /v1/jobs/{id}, forgotten when a job changes (app/jobs/read_cache.py)."""
    cache: JobReadCache = request.app.state.job_cache
    return cache


async def get_event_hub(request: Request) -> EventHub:
    """The process's shared poller of job events, for Server-Sent Event streams (app/jobs/event_stream.py)."""
    hub: EventHub = request.app.state.event_hub
    return hub


async def get_probe_limiter(request: Request) -> anyio.CapacityLimiter:
    """Probes of this process at once (Settings.probe_concurrency); each waits on the event loop, not a thread."""
    limiter: anyio.CapacityLimiter = request.app.state.probe_limiter
    return limiter


# scope="function": the session commits when the endpoint returns, *before* the response is sent, so a
# client that got 201 can read the row, and a failed commit is an error response rather than a lie.
# Endpoints that use it are wrapped in app.db.in_worker_thread (see there why).
SessionDep = Annotated[Session, Depends(get_session, scope="function")]
SettingsDep = Annotated[Settings, Depends(get_app_settings)]
TenantDep = Annotated[str, Depends(get_tenant)]
TenantLimitsDep = Annotated[TenantLimits, Depends(get_tenant_limits)]
QueueDep = Annotated[JobQueue, Depends(get_queue)]
SessionFactoryDep = Annotated[SessionFactory, Depends(get_session_factory)]
ProbeLimiterDep = Annotated[anyio.CapacityLimiter, Depends(get_probe_limiter)]
EventHubDep = Annotated[EventHub, Depends(get_event_hub)]
ReadsDep = Annotated[Reads, Depends(get_reads)]
JobCacheDep = Annotated[JobReadCache, Depends(get_job_cache)]

"""Typed dependency aliases for endpoints (`session: SessionDep`, `tenant: TenantDep`, …).

The small ones are `async def` although they do no I/O: FastAPI runs a plain `def` dependency in a worker
thread, one thread hop per dependency per request, to read an attribute.
"""

from __future__ import annotations

from typing import Annotated

import anyio
from fastapi import Depends, Request
from sqlalchemy.orm import Session

from app.db import SessionFactory, get_session
from app.queue import JobQueue
from app.settings import Settings


async def get_app_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


async def get_tenant(request: Request) -> str:
    """The tenant every query filters by. One tenant for now; an API-key lookup plugs in here
    (`Authorization: Bearer <key>` → the key's tenant, 401 without one) without touching any endpoint. A lookup
    that queries must not use the request's session from a thread of its own: see app.db on thread hops."""
    settings: Settings = request.app.state.settings
    return settings.default_tenant


async def get_queue(request: Request) -> JobQueue:
    queue: JobQueue = request.app.state.queue
    return queue


async def get_session_factory(request: Request) -> SessionFactory:
    """For an endpoint that must not hold a connection across slow work (a probe): it opens and closes a
    short session of its own around its reads, instead of the request's session."""
    factory: SessionFactory = request.app.state.sessionmaker
    return factory


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
QueueDep = Annotated[JobQueue, Depends(get_queue)]
SessionFactoryDep = Annotated[SessionFactory, Depends(get_session_factory)]
ProbeLimiterDep = Annotated[anyio.CapacityLimiter, Depends(get_probe_limiter)]

"""Typed dependency aliases for endpoints (`session: SessionDep`, `tenant: TenantDep`, …)."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy.orm import Session

from app.db import get_session
from app.queue import JobQueue
from app.settings import Settings


def get_app_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


def get_tenant(request: Request) -> str:
    """The tenant every query filters by. One tenant for now; an API-key lookup plugs in here
    (`Authorization: Bearer <key>` → the key's tenant, 401 without one) without touching any endpoint."""
    settings: Settings = request.app.state.settings
    return settings.default_tenant


def get_queue(request: Request) -> JobQueue:
    queue: JobQueue = request.app.state.queue
    return queue


# scope="function": the session commits when the endpoint returns, *before* the response is sent, so a
# client that got 201 can read the row, and a failed commit is an error response rather than a lie.
SessionDep = Annotated[Session, Depends(get_session, scope="function")]
SettingsDep = Annotated[Settings, Depends(get_app_settings)]
TenantDep = Annotated[str, Depends(get_tenant)]
QueueDep = Annotated[JobQueue, Depends(get_queue)]

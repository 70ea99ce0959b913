"""Engine, session factory and the request-scoped session dependency.

The request dependency owns the transaction (STYLE: services never commit): it commits when the endpoint
returns, rolls back when it raises, and only then runs the callbacks registered with `after_commit`, so
background work (the Celery message that starts a job) never sees a row that is not committed yet.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from functools import lru_cache
from typing import Any

from fastapi import Request
from sqlalchemy import Engine, create_engine, event
from sqlalchemy.orm import Session, sessionmaker

from app.settings import get_settings

log = logging.getLogger(__name__)

SessionFactory = sessionmaker[Session]
_AFTER_COMMIT = "distillery.after_commit"
_AFTER_ROLLBACK = "distillery.after_rollback"


def make_engine(database_url: str, **kwargs: Any) -> Engine:
    """An engine for Postgres (psycopg 3) or SQLite; SQLite gets the settings a multi-process setup needs."""
    if database_url.startswith("sqlite"):
        engine = create_engine(database_url, connect_args={"check_same_thread": False, "timeout": 30}, **kwargs)
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    return create_engine(database_url, pool_pre_ping=True, **kwargs)


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    # WAL lets the API read while the worker writes; foreign keys are off by default in SQLite.
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.close()


def make_sessionmaker(engine: Engine) -> SessionFactory:
    # expire_on_commit=False: endpoints serialise objects after the dependency has committed.
    return sessionmaker(bind=engine, expire_on_commit=False)


@lru_cache
def get_engine() -> Engine:
    """The process-wide engine built from `get_settings()` (the worker uses this too)."""
    return make_engine(get_settings().database_url)


@lru_cache
def get_sessionmaker() -> SessionFactory:
    return make_sessionmaker(get_engine())


def after_commit(session: Session, callback: Callable[[], None]) -> None:
    """Run `callback` once the request's transaction has committed; dropped if it rolls back."""
    session.info.setdefault(_AFTER_COMMIT, []).append(callback)


def after_rollback(session: Session, callback: Callable[[], None]) -> None:
    """Run `callback` if the request's transaction rolls back (e.g. delete a file written for a row that
    never got committed); dropped if it commits."""
    session.info.setdefault(_AFTER_ROLLBACK, []).append(callback)


def _run(callbacks: list[Callable[[], None]]) -> None:
    for callback in callbacks:
        try:
            callback()
        except Exception:
            # The transaction's outcome stands; whatever the callback was for (the enqueue, a cleanup) has
            # its own recovery path (the reconciler), so log it and carry on.
            log.exception("post-transaction callback failed")


def get_session(request: Request) -> Iterator[Session]:
    """One session per request: commit on success, roll back on error, then run after-commit callbacks."""
    factory: SessionFactory = request.app.state.sessionmaker
    session = factory()
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        session.info.pop(_AFTER_COMMIT, None)
        rollback_callbacks: list[Callable[[], None]] = session.info.pop(_AFTER_ROLLBACK, [])
        session.close()
        _run(rollback_callbacks)
        raise
    session.info.pop(_AFTER_ROLLBACK, None)
    callbacks: list[Callable[[], None]] = session.info.pop(_AFTER_COMMIT, [])
    session.close()
    _run(callbacks)

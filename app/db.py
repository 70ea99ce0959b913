"""Engine, session factory and the request-scoped session dependency; `Reads` for the hottest read.

The request dependency owns the transaction (STYLE: services never commit): it commits when the endpoint
returns, rolls back when it raises, and only then runs the callbacks registered with `after_commit`, so
background work (the Celery message that starts a job) never sees a row that is not committed yet.

Threads and connections (the API answered nothing under load when this was wrong): a request's session
holds a pooled connection from its first query until get_session commits. While it holds one, the
request must never wait for a thread of AnyIO's shared pool, whose threads may all be requests waiting
for a connection. Endpoints therefore do their database work in one `in_worker_thread` step, and the
commit runs in a thread of its own (or, for a submission, at the end of that step:
`end_request_transaction`, still the dependency's commit and callbacks, only without the second thread).
The pool has room for every worker thread (Settings.threadpool_size <= db_pool_size + db_max_overflow),
so a thread seldom waits for a connection at all.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator
from contextlib import contextmanager
from functools import lru_cache, wraps
from typing import Any, ParamSpec, TypeVar

import anyio
import anyio.to_thread
import psycopg
from fastapi import Request
from fastapi.concurrency import run_in_threadpool
from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session, sessionmaker

from app.settings import Settings, get_settings

log = logging.getLogger(__name__)
P = ParamSpec("P")
T = TypeVar("T")

SessionFactory = sessionmaker[Session]
_AFTER_COMMIT = "distillery.after_commit"
_AFTER_ROLLBACK = "distillery.after_rollback"
_ENDED = "distillery.ended"


def make_engine(database_url: str, **kwargs: Any) -> Engine:
    """An engine for Postgres (psycopg 3) or SQLite; SQLite gets the settings a multi-process setup needs.

    Pooled Postgres connections are pre-pinged: without it, clients polling through a Postgres restart got
    503s on connections that died with it (tried for speed, docs/BENCHMARKS.md, and reverted)."""
    if database_url.startswith("sqlite"):
        engine = create_engine(database_url, connect_args={"check_same_thread": False, "timeout": 30}, **kwargs)
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    return create_engine(database_url, pool_pre_ping=True, **kwargs)


def engine_for(settings: Settings) -> Engine:
    """The engine of `settings.database_url`, its pool sized by the settings (see Settings.db_pool_size)."""
    if settings.database_url.startswith("sqlite") and ":memory:" in settings.database_url:
        return make_engine(settings.database_url)  # one connection per thread, no pool to size
    return make_engine(
        settings.database_url,
        pool_size=settings.db_pool_size,
        max_overflow=settings.db_max_overflow,
        pool_timeout=settings.db_pool_timeout,
    )


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
    return engine_for(get_settings())


@lru_cache
def get_sessionmaker() -> SessionFactory:
    return make_sessionmaker(get_engine())


class Reads:
    """Connections for the hot one-statement reads (GET /v1/jobs/{id}, which clients poll): a read is one
    round trip, where a request session's is four (the pool's pre-ping, BEGIN, the SELECT, COMMIT).

    On Postgres they come from a small pool of their own, in autocommit (no BEGIN / COMMIT) and without a
    pre-ping: instead, a read that finds its pooled connection dead (Postgres restarted) is run once more
    on a fresh one, so pollers see no error for a connection that died while idle (tests/worker/
    test_service_faults.py); while Postgres is down the retry fails too, and the client gets the 503. The
    pool holds one connection per worker thread (reads run there), so each API process may open up to
    `threadpool_size` connections beyond its main pool. Only for reads of one statement, or of statements
    each consistent on its own: without a transaction, two statements may see two states.

    A test's factory is bound to one connection inside its rolled-back transaction: reads use it as it is.
    """

    def __init__(self, factory: SessionFactory, settings: Settings) -> None:
        bind = factory.kw["bind"]
        self._connection: Connection | None = bind if isinstance(bind, Connection) else None
        self._engine: Engine | None = None
        self._owns_pool = isinstance(bind, Engine) and bind.dialect.name == "postgresql"
        if self._owns_pool:
            self._engine = create_engine(
                bind.url,
                isolation_level="AUTOCOMMIT",
                pool_reset_on_return=None,  # autocommit: no transaction to roll back on return
                pool_size=settings.threadpool_size,
                max_overflow=0,
                pool_timeout=settings.db_pool_timeout,
            )
        elif isinstance(bind, Engine):  # SQLite: the engine's own pool (an in-memory database lives in it)
            self._engine = bind.execution_options(isolation_level="AUTOCOMMIT")

    def run(self, read: Callable[[Connection], T]) -> T:
        """`read(connection)`, run again on a fresh connection if the first one turned out to be dead."""
        if self._engine is None:
            assert self._connection is not None
            return read(self._connection)
        try:
            with self._engine.connect() as connection:
                return read(connection)
        except DBAPIError as exc:
            if not exc.connection_invalidated:
                raise
            # SQLAlchemy has invalidated every connection pooled before this one: the next is a new one.
            log.info("a pooled read connection was dead (%s); reading again", str(exc).splitlines()[0])
        with self._engine.connect() as connection:
            return read(connection)

    def dispose(self) -> None:
        if self._owns_pool and self._engine is not None:
            self._engine.dispose()


@contextmanager
def driver_connection(session: Session) -> Iterator[Any]:
    """The psycopg connection under the session's, in its transaction: for what SQLAlchemy cannot send, a
    pipeline of statements in one round trip (jobs.repository.write_new_job).

    Its errors come out as SQLAlchemy's, as everywhere else: the error handlers answer 503 for a database that
    went away, and a connection that broke is invalidated, so the pool does not hand it out again."""
    connection = session.connection()
    raw: Any = connection.connection.driver_connection
    try:
        yield raw
    except psycopg.Error as exc:
        broken = bool(raw.broken)
        if broken:
            connection.invalidate(exc)
        raise DBAPIError.instance(None, None, exc, psycopg.Error, connection_invalidated=broken) from exc


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


def _commit(session: Session) -> None:
    """Commit and close, then run the after-commit callbacks; if the commit fails, roll back instead."""
    try:
        session.commit()
    except BaseException:
        _roll_back(session)
        raise
    session.info.pop(_AFTER_ROLLBACK, None)
    callbacks: list[Callable[[], None]] = session.info.pop(_AFTER_COMMIT, [])
    session.close()
    _run(callbacks)


def _roll_back(session: Session) -> None:
    """Roll back and close, then run the after-rollback callbacks."""
    session.rollback()
    session.info.pop(_AFTER_COMMIT, None)
    callbacks: list[Callable[[], None]] = session.info.pop(_AFTER_ROLLBACK, [])
    session.close()
    _run(callbacks)


def end_request_transaction(session: Session) -> None:
    """Commit the request's transaction now, in the endpoint's `in_worker_thread` step, and run the after-commit
    callbacks there: what get_session would do after the endpoint returns, without a second thread for it.

    For an endpoint whose answer is built from what it wrote (a submission: its commit and its send were a
    second hop through a thread, 4 % of a burst's CPU, docs/BENCHMARKS.md). The session is closed after
    this; get_session's exit then has nothing left to do. If the commit fails it is rolled back, and the
    error propagates as it would from get_session."""
    session.info[_ENDED] = True
    _commit(session)


async def _end_in_thread(end: Callable[[Session], None], session: Session) -> None:
    # The session may hold a connection here, so the commit must not queue for a thread of AnyIO's shared
    # pool: every one of those could be a request waiting for a connection (the deadlock in_worker_thread
    # describes). A limiter of its own always has a token free, as FastAPI does for a sync dependency's
    # exit. Shielded: a client that hangs up must not leave the transaction open.
    with anyio.CancelScope(shield=True):
        await anyio.to_thread.run_sync(end, session, limiter=anyio.CapacityLimiter(1))


async def get_session(request: Request) -> AsyncIterator[Session]:
    """One session per request: commit on success, roll back on error, then run the post-transaction callbacks.

    An async dependency so that opening it takes no worker thread (a Session connects on its first query,
    in the endpoint's thread); the commit or rollback runs in a thread of its own, see `_end_in_thread`.
    """
    factory: SessionFactory = request.app.state.sessionmaker
    session = factory()
    try:
        yield session
    except BaseException:
        if not session.info.get(_ENDED):
            await _end_in_thread(_roll_back, session)
        raise
    if not session.info.get(_ENDED):
        await _end_in_thread(_commit, session)


def in_worker_thread(endpoint: Callable[P, T]) -> Callable[P, Coroutine[Any, Any, T]]:
    """Make a plain `def` endpoint that uses the session run as one step in a worker thread.

    FastAPI runs a `def` endpoint in a worker thread and then validates its return value in a *second* one,
    while the request's session still holds its connection (get_session commits after the response is
    built). Once every thread of the pool was a request waiting for a connection, the requests holding
    the connections waited for a thread forever: the pool timed out and nothing was answered. Wrapped
    here, the endpoint's body (its queries and the building of its response model, which may load
    attributes) runs in one thread, FastAPI sees a coroutine and validates on the event loop, and the
    connection goes back in get_session's exit, which needs no thread from the pool.

    So: one `in_worker_thread` step per request, and no database access outside it.
    """

    @wraps(endpoint)
    async def run(*args: P.args, **kwargs: P.kwargs) -> T:
        return await run_in_threadpool(endpoint, *args, **kwargs)

    return run

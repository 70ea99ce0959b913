"""Root fixtures: the real services (Postgres, Redis) or a skip/fail, per-test rolled-back sessions, the API client.

Services: a test that needs Postgres or Redis asks for the `postgres_url` / `redis_url` fixture (or calls
`require_service`). If the service is unreachable it is skipped with the service's name, unless
DISTILLERY_REQUIRE_SERVICES=1 (CI), where it fails instead: CI must never pass by skipping.

Isolation: API tests run inside one outer transaction per test that is rolled back at the end; the app's
own commits become savepoint releases ("join an external transaction", SQLAlchemy 2). Each test also gets
its own tenant id, so rows that other (committing) tests left in `distillery_test` are invisible to it.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

import pytest
from sqlalchemy import Connection, Engine, create_engine, text
from sqlalchemy.orm import Session, sessionmaker

if TYPE_CHECKING:  # the app (and torch behind it) is imported only by the tests that use it
    from fastapi import FastAPI
    from fastapi.testclient import TestClient

    from app.settings import Settings

POSTGRES_SERVER_URL = os.environ.get("DISTILLERY_TEST_POSTGRES", "postgresql+psycopg://postgres@127.0.0.1:5432")
TEST_DATABASE = "distillery_test"
REDIS_TEST_URL = os.environ.get("DISTILLERY_TEST_REDIS", "redis://127.0.0.1:6379/15")
_MIGRATION_LOCK = 4_242_001  # pg_advisory_lock key: concurrent pytest runs migrate the test db one at a time


def services_required() -> bool:
    return os.environ.get("DISTILLERY_REQUIRE_SERVICES", "").strip().lower() not in ("", "0", "false", "no")


def service_unavailable(service: str, reason: str) -> NoReturn:
    """Skip (locally) or fail (CI, DISTILLERY_REQUIRE_SERVICES=1) a test whose service is unreachable."""
    message = f"{service} is not reachable: {reason}"
    if services_required():
        pytest.fail(f"{message} (DISTILLERY_REQUIRE_SERVICES is set, so this fails instead of skipping)")
    pytest.skip(message)


def postgres_problem(url: str = f"{POSTGRES_SERVER_URL}/postgres") -> str | None:
    """None if Postgres answers `SELECT 1` at `url`, else why not."""
    engine = create_engine(url, connect_args={"connect_timeout": 3})
    try:
        with engine.connect() as connection:
            connection.execute(text("SELECT 1"))
        return None
    except Exception as exc:
        return f"{type(exc).__name__}: {exc}".splitlines()[0]
    finally:
        engine.dispose()


def redis_problem(url: str = REDIS_TEST_URL) -> str | None:
    """None if Redis answers PING at `url`, else why not."""
    import redis

    try:
        redis.Redis.from_url(url, socket_connect_timeout=2, socket_timeout=2).ping()
        return None
    except Exception as exc:
        return f"{type(exc).__name__}: {exc}"


def require_service(service: str) -> str:
    """Return the service's test URL, or skip/fail the calling test. `service` is 'postgres' or 'redis'."""
    if service == "postgres":
        problem = postgres_problem()
        url = f"{POSTGRES_SERVER_URL}/{TEST_DATABASE}"
    elif service == "redis":
        problem = redis_problem()
        url = REDIS_TEST_URL
    else:
        raise ValueError(f"unknown service {service!r}")
    if problem is not None:
        service_unavailable(service.capitalize(), problem)
    return url


def create_database(name: str) -> None:
    """CREATE DATABASE `name` if it does not exist (needs the server's maintenance db)."""
    engine = create_engine(f"{POSTGRES_SERVER_URL}/postgres", isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as connection:
            exists = connection.execute(text("SELECT 1 FROM pg_database WHERE datname = :n"), {"n": name}).scalar()
            if not exists:
                connection.execute(text(f'CREATE DATABASE "{name}"'))
    finally:
        engine.dispose()


def drop_database(name: str) -> None:
    engine = create_engine(f"{POSTGRES_SERVER_URL}/postgres", isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    finally:
        engine.dispose()


@pytest.fixture(scope="session")
def postgres_url() -> str:
    """URL of the `distillery_test` database, created if missing and migrated to head (Alembic, not create_all)."""
    from app.migrate import upgrade_to_head

    url = require_service("postgres")
    create_database(TEST_DATABASE)
    engine = create_engine(url)
    try:
        with engine.connect() as connection:
            connection.execute(text("SELECT pg_advisory_lock(:k)"), {"k": _MIGRATION_LOCK})
            try:
                upgrade_to_head(url)
            finally:
                connection.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": _MIGRATION_LOCK})
    finally:
        engine.dispose()
    return url


@pytest.fixture(scope="session")
def redis_url() -> str:
    """redis://127.0.0.1:6379/15: a db number of its own, so tests never touch a developer's data."""
    return require_service("redis")


@pytest.fixture(scope="session")
def pg_engine(postgres_url: str) -> Iterator[Engine]:
    from app.db import make_engine

    engine = make_engine(postgres_url)
    yield engine
    engine.dispose()


@pytest.fixture
def db_connection(pg_engine: Engine) -> Iterator[Connection]:
    """One connection inside an outer transaction that is rolled back after the test."""
    connection = pg_engine.connect()
    outer = connection.begin()
    yield connection
    if outer.is_active:
        outer.rollback()
    connection.close()


@pytest.fixture
def session_factory(db_connection: Connection) -> sessionmaker[Session]:
    """Sessions joined to the test's outer transaction: their commit() only releases a savepoint."""
    return sessionmaker(bind=db_connection, join_transaction_mode="create_savepoint", expire_on_commit=False)


@pytest.fixture
def db_session(session_factory: sessionmaker[Session]) -> Iterator[Session]:
    session = session_factory()
    yield session
    session.close()


@pytest.fixture
def tenant() -> str:
    return f"test_{uuid.uuid4().hex[:12]}"


@pytest.fixture
def storage(tmp_path: Path) -> dict[str, Path]:
    dirs = {"upload_dir": tmp_path / "files", "artifact_dir": tmp_path / "artifacts", "broker_dir": tmp_path / "broker"}
    for path in dirs.values():
        path.mkdir()
    return dirs


@dataclass
class RecordingQueue:
    """Test double for the Celery enqueue (API tests only): records job ids instead of sending messages."""

    sent: list[str] = field(default_factory=list)

    def send_run_job(self, job_id: str) -> None:
        self.sent.append(job_id)


@pytest.fixture
def api_settings(postgres_url: str, storage: dict[str, Path], tenant: str) -> Settings:
    from app.settings import Settings

    return Settings(
        database_url=postgres_url,
        broker_url="memory://",
        default_tenant=tenant,
        max_upload_bytes=1024 * 1024,
        broker_timeout_seconds=1.0,
        upload_dir=storage["upload_dir"],
        artifact_dir=storage["artifact_dir"],
        broker_dir=storage["broker_dir"],
        key_cache_seconds=0.5,  # short, so that the revocation test need not wait long
    )


@pytest.fixture
def queue() -> RecordingQueue:
    return RecordingQueue()


@pytest.fixture
def api(api_settings: Settings, session_factory: sessionmaker[Session], queue: RecordingQueue) -> FastAPI:
    """The FastAPI app wired to the test's rolled-back transaction and the recording queue."""
    from app.main import create_app

    return create_app(api_settings, session_factory=session_factory, queue=queue)


@pytest.fixture
def client(api: FastAPI) -> Iterator[TestClient]:
    from fastapi.testclient import TestClient

    with TestClient(api) as test_client:
        yield test_client

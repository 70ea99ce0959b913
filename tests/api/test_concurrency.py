"""Threads and connections under load: every request is answered, however few threads and connections.

FastAPI ran a plain `def` endpoint in one worker thread and validated its return value in a second, while
the request's session held its connection. Once every thread was a request waiting for a connection, the
requests holding the connections waited for a thread forever (bench/api_throughput.py, 64 clients: the
pool timed out, nothing was answered). See app.db.in_worker_thread.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys

import anyio.to_thread
import httpx
import pytest
from pydantic import ValidationError
from sqlalchemy import delete

from app.auth.service import create_key
from app.db import make_engine, make_sessionmaker
from app.jobs import repository as jobs_repository
from app.main import create_app
from app.models import Job, Tenant
from app.settings import Settings
from tests.conftest import RecordingQueue

THREADS = 4
CONNECTIONS = 2  # fewer than the threads: the sizing Settings enforces is not what prevents the deadlock
REQUESTS = 64


def test_many_concurrent_reads_with_fewer_connections_than_threads(
    postgres_url: str, api_settings: Settings, tenant: str
) -> None:
    # A pool of its own (the rolled-back test transaction is one connection, which threads cannot share).
    engine = make_engine(postgres_url, pool_size=CONNECTIONS, max_overflow=0, pool_timeout=5)
    factory = make_sessionmaker(engine)
    with factory.begin() as session:
        job_id = jobs_repository.add(
            session, Job(tenant_id=tenant, status="queued", spec={}, progress={}, metrics={})
        ).id
        key = create_key(session, tenant=tenant).key  # every request also looks its key up, in a thread
    app = create_app(api_settings, session_factory=factory, queue=RecordingQueue())

    async def read_concurrently() -> list[httpx.Response]:
        anyio.to_thread.current_default_thread_limiter().total_tokens = THREADS
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://test", headers={"Authorization": f"Bearer {key}"}
        ) as client:
            reads = [client.get(f"/v1/jobs/{job_id}") for _ in range(REQUESTS)]
            return await asyncio.wait_for(asyncio.gather(*reads), timeout=60)

    try:
        responses = asyncio.run(read_concurrently())
    finally:
        with factory.begin() as session:
            session.execute(delete(Job).where(Job.tenant_id == tenant))
            session.execute(delete(Tenant).where(Tenant.id == tenant))  # and its keys (ON DELETE CASCADE)
        engine.dispose()
    assert [r.status_code for r in responses] == [200] * REQUESTS
    assert {r.json()["id"] for r in responses} == {job_id}


def test_settings_refuse_more_threads_than_connections() -> None:
    with pytest.raises(ValidationError, match="threadpool_size"):
        Settings(threadpool_size=20, db_pool_size=5, db_max_overflow=5)
    assert Settings(threadpool_size=10, db_pool_size=5, db_max_overflow=5).threadpool_size == 10


def test_models_configure_without_sqlalchemy_warnings() -> None:
    # A fresh interpreter: mappers configure once per process, and earlier tests have configured them here.
    code = "import app.models; from sqlalchemy.orm import configure_mappers; configure_mappers()"
    result = subprocess.run(
        [sys.executable, "-W", "error::sqlalchemy.exc.SAWarning", "-c", code], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr

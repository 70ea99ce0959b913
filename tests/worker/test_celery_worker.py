"""A real Celery worker process on the real Redis and Postgres (the engine is the fast fake one).

What only a real worker shows: messages routed to the train queue reach the task; a duplicate message is a
no-op; the reconciler thread started on worker_ready dispatches a job nobody sent; a warm shutdown (SIGTERM)
in the middle of a job gives the job back instead of waiting for it to finish.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from celery import Celery
from sqlalchemy.orm import Session, sessionmaker

from app.models import utcnow
from tests.e2e.processes import Service, service_env, start_worker
from tests.worker.conftest import FAKE_ENGINE, add_job, events_of, fake_spec, get_job

WORKER_REDIS_DB = 14  # tests/conftest.py's REDIS_TEST_URL is db 15; the e2e tests use 13


@pytest.fixture
def broker_url(redis_url: str) -> str:
    import redis

    url = redis_url.rsplit("/", 1)[0] + f"/{WORKER_REDIS_DB}"
    redis.Redis.from_url(url).flushdb()
    return url


@pytest.fixture
def worker(settings: Any, broker_url: str, tmp_path: Path) -> Iterator[Service]:
    env = service_env(
        database_url=settings.database_url,
        broker_url=broker_url,
        artifact_dir=str(settings.artifact_dir),
        upload_dir=str(settings.upload_dir),
        broker_dir=str(settings.broker_dir),
        device="cpu",
        heartbeat_seconds="1",
        reconcile_interval_seconds="0.5",
        cancel_poll_seconds="0.2",
        engine_command=json.dumps(FAKE_ENGINE),
    )
    service = start_worker(env, tmp_path / "logs")
    yield service
    code = service.stop()
    print(service.output())
    assert code == 0, "the worker did not shut down cleanly"


def client(broker_url: str) -> Celery:
    app = Celery("test-client", broker=broker_url, set_as_current=False)
    app.conf.task_ignore_result = True
    return app


def wait_for_status(sessions: sessionmaker[Session], job_id: str, status: str, timeout: float = 30.0) -> Any:
    deadline = time.monotonic() + timeout
    while (job := get_job(sessions, job_id)).status != status:
        assert time.monotonic() < deadline, f"job {job_id} still {job.status}, not {status}"
        time.sleep(0.1)
    return job


def test_duplicate_messages_run_the_job_once(
    sessions: sessionmaker[Session], broker_url: str, worker: Service, dummy_teacher: str
) -> None:
    job_id = add_job(sessions, fake_spec("succeed", dummy_teacher), dispatched_at=utcnow())
    sender = client(broker_url)
    for _ in range(3):
        sender.send_task("distillery.run_job", args=[job_id], queue="train")
    job = wait_for_status(sessions, job_id, "succeeded")
    time.sleep(1.0)  # let the duplicates arrive and be ignored
    assert job.attempt == 1 == get_job(sessions, job_id).attempt
    assert [e.type for e in events_of(sessions, job_id)].count("started") == 1
    assert worker.output().count("is not claimable") == 2


def test_the_reconciler_dispatches_a_job_nobody_sent(
    sessions: sessionmaker[Session], worker: Service, dummy_teacher: str
) -> None:
    # As if the broker had been down when the API accepted the job: dispatched_at stays NULL.
    job_id = add_job(sessions, fake_spec("succeed", dummy_teacher), created_at=utcnow() - timedelta(minutes=1))
    wait_for_status(sessions, job_id, "succeeded")
    assert get_job(sessions, job_id).dispatched_at is not None


def test_warm_shutdown_gives_a_running_job_back(
    sessions: sessionmaker[Session], broker_url: str, worker: Service, dummy_teacher: str
) -> None:
    job_id = add_job(sessions, fake_spec("forever", dummy_teacher), dispatched_at=utcnow())
    client(broker_url).send_task("distillery.run_job", args=[job_id], queue="train")
    wait_for_status(sessions, job_id, "running")
    stopped = time.monotonic()
    assert worker.stop(timeout=20) == 0
    assert time.monotonic() - stopped < 10
    job = get_job(sessions, job_id)
    assert (job.status, job.attempt, job.dispatched_at) == ("queued", 0, None)
    assert [e.type for e in events_of(sessions, job_id)][-1] == "requeued"

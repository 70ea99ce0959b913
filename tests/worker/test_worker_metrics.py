"""A worker's own Prometheus metrics (worker/metrics.py) on DISTILLERY_WORKER_METRICS_PORT.

A real Celery worker process (the engine is the fast fake one) serves them from the moment it is ready; the
test scrapes it while it is idle, while a job runs, and after jobs ended one way or another.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from celery import Celery
from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import update
from sqlalchemy.orm import Session, sessionmaker

from app.models import Job, utcnow
from tests.conftest import POSTGRES_SERVER_URL, create_database, require_service
from tests.e2e.processes import Service, free_port, service_env, start_worker
from tests.worker.conftest import FAKE_ENGINE, add_job, fake_spec, get_job
from worker.metrics import TrainingCounter

METRICS_REDIS_DB = 11  # 15: tests/conftest.py, 14: test_celery_worker, 13: e2e, 12: cli and the dashboard
METRICS_DATABASE = "distillery_worker_metrics_test"


@pytest.fixture(scope="module")
def worker_db_url() -> str:
    """A database of this module's own (the worker fixtures empty theirs before each test, and a worker
    process outlives a test's fixture setup)."""
    from app.migrate import upgrade_to_head

    require_service("postgres")
    create_database(METRICS_DATABASE)
    url = f"{POSTGRES_SERVER_URL}/{METRICS_DATABASE}"
    upgrade_to_head(url)
    return url


@pytest.fixture
def broker_url(redis_url: str) -> str:
    import redis

    url = redis_url.rsplit("/", 1)[0] + f"/{METRICS_REDIS_DB}"
    redis.Redis.from_url(url).flushdb()
    return url


@pytest.fixture
def worker(settings: Any, broker_url: str, tmp_path: Path) -> Iterator[tuple[Service, str]]:
    port = free_port()
    env = service_env(
        database_url=settings.database_url,
        broker_url=broker_url,
        artifact_dir=str(settings.artifact_dir),
        upload_dir=str(settings.upload_dir),
        broker_dir=str(settings.broker_dir),
        device="cpu",
        heartbeat_seconds="1",
        cancel_poll_seconds="0.2",
        engine_command=json.dumps(FAKE_ENGINE),
        worker_metrics_port=str(port),
        worker_metrics_host="127.0.0.1",
    )
    service = start_worker(env, tmp_path / "logs")
    yield service, f"http://127.0.0.1:{port}/metrics"
    code = service.stop()
    print(service.output())
    assert code == 0, "the worker did not shut down cleanly"


def scrape(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """{(sample name, sorted labels): value}."""
    deadline = time.monotonic() + 20
    while True:
        try:
            text = httpx.get(url, timeout=2).raise_for_status().text
            break
        except httpx.HTTPError:
            assert time.monotonic() < deadline, f"nothing serves {url}"
            time.sleep(0.2)
    return {
        (s.name, tuple(sorted(s.labels.items()))): float(s.value)
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def processed(samples: dict[Any, float], outcome: str) -> float:
    return samples[("distillery_worker_jobs_processed_total", (("outcome", outcome),))]


def wait_for_status(sessions: sessionmaker[Session], job_id: str, status: str, timeout: float = 60.0) -> Any:
    deadline = time.monotonic() + timeout
    while (job := get_job(sessions, job_id)).status != status:
        assert time.monotonic() < deadline, f"job {job_id} still {job.status}, not {status}"
        time.sleep(0.1)
    return job


def send(broker_url: str, job_id: str) -> None:
    app = Celery("test-client", broker=broker_url, set_as_current=False)
    app.conf.task_ignore_result = True
    app.send_task("distillery.run_job", args=[job_id], queue="train")


def test_a_worker_serves_busy_idle_outcomes_and_training_counts(
    sessions: sessionmaker[Session], broker_url: str, worker: tuple[Service, str], dummy_teacher: str
) -> None:
    _, url = worker
    idle = scrape(url)
    assert idle[("distillery_worker_busy", ())] == 0
    for outcome in ("succeeded", "failed", "cancelled", "queued", "lost", "skipped"):
        assert processed(idle, outcome) == 0  # every outcome's series exists from the start
    assert idle[("distillery_worker_training_samples_total", ())] == 0
    assert ("process_cpu_seconds_total", ()) in idle  # the process's own metrics come with them

    # A job that trains until it is cancelled: the worker is busy meanwhile, and its steps are counted.
    forever = add_job(sessions, fake_spec("forever", dummy_teacher), dispatched_at=utcnow())
    send(broker_url, forever)
    wait_for_status(sessions, forever, "running")
    deadline = time.monotonic() + 30
    while (busy := scrape(url))[("distillery_worker_training_steps_total", ())] == 0:
        assert time.monotonic() < deadline, "no training steps counted"
        time.sleep(0.2)
    assert busy[("distillery_worker_busy", ())] == 1
    with sessions.begin() as session:
        session.execute(update(Job).where(Job.id == forever).values(cancel_requested=True, status="cancelling"))
    wait_for_status(sessions, forever, "cancelled")

    # A job that succeeds: three steps of the default batch size (64), as the fake engine reports them.
    before = scrape(url)
    done = add_job(sessions, fake_spec("succeed", dummy_teacher), dispatched_at=utcnow())
    send(broker_url, done)
    wait_for_status(sessions, done, "succeeded")
    deadline = time.monotonic() + 10
    while processed(after := scrape(url), "succeeded") == 0:  # the task returns just after the final write
        assert time.monotonic() < deadline
        time.sleep(0.1)
    assert processed(after, "succeeded") == 1 and processed(after, "cancelled") == 1
    assert after[("distillery_worker_busy", ())] == 0
    steps = (
        after[("distillery_worker_training_steps_total", ())] - before[("distillery_worker_training_steps_total", ())]
    )
    samples = (
        after[("distillery_worker_training_samples_total", ())]
        - before[("distillery_worker_training_samples_total", ())]
    )
    assert (steps, samples) == (3, 3 * 64)
    for (name, labels), _ in after.items():
        assert not any(key in ("job_id", "id", "tenant") for key, _ in labels), name
        assert not any(done in v or forever in v for _, v in labels), name


def test_a_resumed_attempt_counts_only_the_steps_it_trains() -> None:
    def counted() -> tuple[float, float]:
        steps = REGISTRY.get_sample_value("distillery_worker_training_steps_total")
        samples = REGISTRY.get_sample_value("distillery_worker_training_samples_total")
        assert steps is not None and samples is not None
        return steps, samples

    counter = TrainingCounter({"training": {"batch_size": 10}}, resumed=True)
    steps, samples = counted()
    counter.observe({"type": "progress", "step": 500, "steps": 800})  # where the checkpoint left off
    counter.observe({"type": "metrics", "step": 600, "values": {}})  # not progress: ignored
    counter.observe({"type": "progress", "step": 520, "steps": 800})
    counter.observe({"type": "progress", "step": 520, "steps": 800})  # no new step
    assert counted() == (steps + 20, samples + 200)

"""How a submission writes: the race on an Idempotency-Key settled by the insert itself (ON CONFLICT DO
NOTHING, no savepoint), and the job slot checked after the insert, under the tenant's lock, so that a 429
takes its job back with it."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine, delete, func, select, text, update
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session, sessionmaker

from app.auth import service as auth_service
from app.errors import Conflict, TooManyRequests
from app.jobs import service
from app.jobs.schemas import JobCreate
from app.jobs.validation import validate_job
from app.models import Job, JobEvent, Tenant
from app.settings import Settings
from tests.api.conftest import assert_error
from tests.conftest import RecordingQueue

BUILTIN = {"mode": "self", "student": {"architecture": {"name": "mlp", "kwargs": {"hidden": [8]}}}}


def builtin_spec(epochs: int = 1) -> JobCreate:
    return JobCreate.model_validate({**BUILTIN, "dataset": {"train": "builtin:digits"}, "training": {"epochs": epochs}})


@pytest.mark.parametrize("same_body", [True, False])
def test_the_loser_of_a_race_on_an_idempotency_key_gets_the_winners_job(
    pg_engine: Engine, api_settings: Settings, tenant: str, same_body: bool
) -> None:
    """Two submissions with one key, the second's lookup made before the first committed: its insert waits
    for the first transaction, writes nothing, and it answers the first job (200), or 409 for another body."""
    factory = sessionmaker(bind=pg_engine, expire_on_commit=False)
    with factory.begin() as session:
        auth_service.set_limits(session, tenant=tenant, values={"max_concurrent_jobs": 10})
    submit: dict[str, Any] = {"tenant": tenant, "settings": api_settings, "queue": RecordingQueue()}
    outcome: dict[str, Any] = {}
    try:
        with factory() as first, factory() as second:
            job, created = service.create_job(first, spec=builtin_spec(), idempotency_key="race", **submit)
            assert created  # written, not committed: the key is taken, but no lookup can see it yet

            def lose() -> None:
                try:
                    spec = builtin_spec(epochs=1 if same_body else 2)
                    outcome["result"] = service.create_job(second, spec=spec, idempotency_key="race", **submit)
                except Conflict as exc:
                    outcome["error"] = exc

            loser = threading.Thread(target=lose)
            loser.start()
            time.sleep(0.5)
            assert loser.is_alive(), outcome  # its insert waits on the first transaction's key
            first.commit()
            loser.join(timeout=60)
            if same_body:
                replayed, created_again = outcome["result"]
                assert (replayed.id, created_again) == (job.id, False)
            else:
                assert outcome["error"].code == "idempotency_conflict"
            # Nothing to undo: the transaction is usable without a savepoint having been rolled back.
            assert second.scalar(select(func.count()).select_from(Job).where(Job.tenant_id == tenant)) == 1
            second.commit()
        with factory() as session:
            events = select(func.count()).select_from(JobEvent).join(Job).where(Job.tenant_id == tenant)
            assert session.scalar(events) == 1
    finally:
        with factory.begin() as session:
            session.execute(delete(Job).where(Job.tenant_id == tenant))
            session.execute(delete(Tenant).where(Tenant.id == tenant))


def test_a_429_takes_back_the_job_it_wrote(
    client: TestClient, db_session: Session, session_factory: sessionmaker[Session], tenant: str
) -> None:
    with session_factory() as session:
        limits: dict[str, int | None] = {"max_concurrent_jobs": 1, "job_time_budget_seconds": 90}
        auth_service.set_limits(session, tenant=tenant, values=limits)
        session.commit()
    body = builtin_spec().model_dump(mode="json", by_alias=True)
    first = client.post("/v1/jobs", json=body, headers={"Idempotency-Key": "one"})
    assert first.status_code == 201, first.text
    assert first.json()["time_budget_seconds"] == 90  # the tenant's, read by the insert itself
    refused = assert_error(client.post("/v1/jobs", json=body), 429, None, "too_many_jobs")
    assert refused["message"].startswith("1 jobs are queued or running")  # not counting its own
    # At the limit, a retry of the accepted submission is still its replay, not a 429.
    replay = client.post("/v1/jobs", json=body, headers={"Idempotency-Key": "one"})
    assert (replay.status_code, replay.json()["id"]) == (200, first.json()["id"])
    assert db_session.scalars(select(Job.id).where(Job.tenant_id == tenant)).all() == [first.json()["id"]]
    events = select(JobEvent.type).join(Job).where(Job.tenant_id == tenant)
    assert db_session.scalars(events).all() == ["queued"]


def test_concurrent_submissions_never_pass_the_tenants_limit(
    pg_engine: Engine, api_settings: Settings, tenant: str
) -> None:
    """Twelve submissions at once, each in its own committed transaction, for 3 free slots: exactly 3 are
    accepted. The write, the tenant's lock and the count go to Postgres in one round trip; the count must still
    see every job committed before the lock was granted (a statement of its own, after the lock), or two
    submissions would take one slot."""
    factory = sessionmaker(bind=pg_engine, expire_on_commit=False)
    with factory.begin() as session:
        auth_service.set_limits(session, tenant=tenant, values={"max_concurrent_jobs": 3})
        validate_job(session, tenant=tenant, settings=api_settings, spec=builtin_spec())  # its pass remembered
    start = threading.Barrier(12)
    outcomes: list[str] = []

    def submit(n: int) -> None:
        with factory() as session:
            start.wait()
            try:
                outcome = service.submit_job(
                    session,
                    tenant=tenant,
                    settings=api_settings,
                    queue=RecordingQueue(),
                    spec=builtin_spec(),
                    idempotency_key=f"k{n}",
                )
                assert isinstance(outcome, tuple), outcome  # written at once: the check's pass is known
                time.sleep(0.05)  # hold the lock a while: the others queue on it
                session.commit()
                outcomes.append("created")
            except TooManyRequests:
                session.rollback()
                outcomes.append("429")

    try:
        threads = [threading.Thread(target=submit, args=(n,)) for n in range(12)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=60)
        assert sorted(outcomes) == ["429"] * 9 + ["created"] * 3, outcomes
        with factory() as session:
            assert session.scalar(select(func.count()).select_from(Job).where(Job.tenant_id == tenant)) == 3
            events = select(func.count()).select_from(JobEvent).join(Job).where(Job.tenant_id == tenant)
            assert session.scalar(events) == 3  # each job with its `queued` event, none for the refused
    finally:
        with factory.begin() as session:
            session.execute(delete(Job).where(Job.tenant_id == tenant))
            session.execute(delete(Tenant).where(Tenant.id == tenant))


def test_a_retry_whose_file_was_deleted_since_still_answers_its_job(
    client: TestClient, db_session: Session, job_body: dict[str, Any]
) -> None:
    """The job's INSERT finds a used Idempotency-Key on the fast path, with no lookup before it; a request
    that would be refused (here: its dataset was deleted after the job finished) looks the key up first."""
    first = client.post("/v1/jobs", json=job_body, headers={"Idempotency-Key": "retry"})
    assert first.status_code == 201, first.text
    job_id = first.json()["id"]
    db_session.execute(update(Job).where(Job.id == job_id).values(status="succeeded"))
    db_session.commit()
    assert client.delete(f"/v1/files/{job_body['dataset']['train']}").status_code == 204
    retry = client.post("/v1/jobs", json=job_body, headers={"Idempotency-Key": "retry"})
    assert (retry.status_code, retry.json()["id"]) == (200, job_id), retry.text
    assert retry.headers["Idempotent-Replayed"] == "true"
    # Without the key it is a new submission, and refused for the missing file.
    assert_error(client.post("/v1/jobs", json=job_body), 422, "dataset.train", "file_not_found")


def test_a_connection_lost_before_the_write_is_a_database_error_and_is_not_reused(
    pg_engine: Engine, api_settings: Settings, tenant: str
) -> None:
    """The write goes through psycopg's pipeline, under SQLAlchemy: a connection that died comes out as
    SQLAlchemy's error, marked invalidated (so the error handlers answer 503, and the pool drops it)."""
    factory = sessionmaker(bind=pg_engine, expire_on_commit=False)
    with factory.begin() as session:
        validate_job(session, tenant=tenant, settings=api_settings, spec=builtin_spec())
    with factory() as session:
        backend = session.scalar(text("SELECT pg_backend_pid()"))
        with pg_engine.connect() as other:
            other.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": backend})
        with pytest.raises(DBAPIError) as caught:
            service.submit_job(
                session, tenant=tenant, settings=api_settings, queue=RecordingQueue(), spec=builtin_spec()
            )
        assert caught.value.connection_invalidated, caught.value
        session.rollback()
    with factory() as session:  # the pool hands out a live connection again
        assert session.scalar(select(func.count()).select_from(Job).where(Job.tenant_id == tenant)) == 0

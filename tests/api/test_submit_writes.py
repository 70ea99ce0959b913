"""How a submission writes: the race on an Idempotency-Key settled by the insert itself (ON CONFLICT DO
NOTHING, no savepoint), and the job slot checked after the insert, under the tenant's lock, so that a 429
takes its job back with it."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine, delete, func, select
from sqlalchemy.orm import Session, sessionmaker

from app.auth import service as auth_service
from app.errors import Conflict
from app.jobs import service
from app.jobs.schemas import JobCreate
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

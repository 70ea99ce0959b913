"""GET /v1/jobs/{id}'s lean read (app.db.Reads, jobs.repository.read): the answer it builds from the row is the
one the ORM object and JobRead gave, times stay UTC whatever the session's time zone, a dead pooled connection
is replaced, and an unreachable database is still a 503."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Connection, create_engine, text
from sqlalchemy.orm import Session, sessionmaker

from app.db import Reads, make_engine, make_sessionmaker
from app.jobs import repository, service
from app.jobs.schemas import JobRead
from app.models import Artifact, Job, utcnow
from app.settings import Settings
from tests.api.conftest import assert_error


def make_finished_job(session: Session, tenant: str) -> Job:
    """A job with every field JobRead shows set, progress keys it ignores, and artifacts out of name order."""
    started = utcnow() - timedelta(minutes=3)
    job = repository.add(
        session,
        Job(
            tenant_id=tenant,
            status="failed",
            spec={"mode": "offline", "training": {"lr": 0.001, "epochs": 2}},
            progress={"phase": "train", "epoch": 2, "epochs": 2, "fraction": 1, "eta_seconds": 0, "extra": "x"},
            metrics={"val/top1": 0.875, "report": {"steps": [1, 2]}},
            error={"code": "engine_error", "message": "it broke", "param": None, "detail": "dropped"},
            attempt=2,
            started_at=started,
            finished_at=started + timedelta(seconds=90.5),
            time_budget_seconds=3600,
            mlflow_run_id="run123",
        ),
    )
    for name, size in (("student.safetensors", 1234), ("report.json", 56)):
        artifact = Artifact(job_id=job.id, tenant_id=tenant, name=name, bytes=size, sha256="ab" * 32)
        artifact.format, artifact.storage_path = name.rsplit(".", 1)[1], f"jobs/{job.id}/{name}"
        session.add(artifact)
    session.commit()
    return job


def test_the_answer_is_what_jobread_made_of_the_orm_row(
    client: TestClient, session_factory: sessionmaker[Session], tenant: str
) -> None:
    with session_factory() as session:
        job = make_finished_job(session, tenant)
        orm_job = service.get_job(session, tenant=tenant, job_id=job.id)  # the read GET made before
        expected = JobRead.model_validate(orm_job).model_dump(mode="json")
        etag = service.etag_of(orm_job.id, orm_job.updated_at)

    response = client.get(f"/v1/jobs/{job.id}")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/json"
    assert response.headers["etag"] == etag
    body = response.json()
    assert body == expected
    assert [a["name"] for a in body["artifacts"]] == ["report.json", "student.safetensors"]
    assert body["progress"]["fraction"] == 1.0 and "extra" not in body["progress"]
    assert body["error"] == {"code": "engine_error", "message": "it broke", "param": None}

    unchanged = client.get(f"/v1/jobs/{job.id}", headers={"If-None-Match": etag})
    assert unchanged.status_code == 304 and unchanged.headers["etag"] == etag


def test_times_are_utc_whatever_the_session_time_zone(
    client: TestClient, session_factory: sessionmaker[Session], db_connection: Connection, tenant: str
) -> None:
    with session_factory() as session:
        job = make_finished_job(session, tenant)
        etag = service.etag_of(job.id, job.updated_at)
    db_connection.exec_driver_sql("SET LOCAL TIME ZONE 'Asia/Kolkata'")  # psycopg then reads times as +05:30

    row = repository.read(db_connection, tenant=tenant, job_id=job.id)
    assert row is not None
    assert all(row[name].utcoffset() == timedelta(0) for name in ("created_at", "updated_at", "finished_at"))
    assert client.get(f"/v1/jobs/{job.id}").headers["etag"] == etag  # the ETag is a string of updated_at
    assert client.get(f"/v1/jobs/{job.id}").json()["updated_at"].endswith("Z")
    assert client.get(f"/v1/jobs/{job.id}", headers={"If-None-Match": etag}).status_code == 304


def test_the_driver_read_and_the_sqlalchemy_read_agree(
    session_factory: sessionmaker[Session], db_connection: Connection, tenant: str
) -> None:
    """On Postgres the rows come from psycopg's cursor; SQLAlchemy's own result of the statement is the reference."""
    with session_factory() as session:
        job = make_finished_job(session, tenant)
    db_connection.exec_driver_sql("SET LOCAL TIME ZONE 'America/Los_Angeles'")
    params = {"tenant": tenant, "job_id": job.id}
    driver = [list(row) for row in repository._rows(db_connection, repository._READ, params)]
    reference = [list(row) for row in db_connection.execute(repository._READ, params).all()]
    assert driver == reference and len(driver) >= 1
    assert [[str(v) for v in row] for row in driver] == [[str(v) for v in row] for row in reference]


@pytest.fixture
def reads(postgres_url: str) -> Any:
    engine = make_engine(postgres_url)
    reads = Reads(make_sessionmaker(engine), Settings(database_url=postgres_url, threadpool_size=1))
    yield reads
    reads.dispose()
    engine.dispose()


def test_a_dead_pooled_read_connection_is_replaced(reads: Reads, postgres_url: str) -> None:
    """The read pool has no pre-ping: a read on a connection that died while pooled runs again on a new one."""
    pid = reads.run(lambda connection: connection.exec_driver_sql("SELECT pg_backend_pid()").scalar())
    admin = create_engine(postgres_url)
    with admin.connect() as connection:
        assert connection.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid}).scalar() is True
    admin.dispose()

    assert reads.run(lambda connection: repository.read(connection, tenant="nobody", job_id="job_x")) is None
    new_pid = reads.run(lambda connection: connection.exec_driver_sql("SELECT pg_backend_pid()").scalar())
    assert new_pid != pid


def test_a_read_is_autocommit(reads: Reads) -> None:
    """No BEGIN / COMMIT around a read: each statement is a transaction of its own."""

    def two_transaction_ids(connection: Connection) -> list[Any]:
        return [connection.exec_driver_sql("SELECT pg_current_xact_id()::text").scalar() for _ in range(2)]

    first, second = reads.run(two_transaction_ids)
    assert first != second


def test_an_unreachable_database_is_a_503_for_the_job_read(tmp_path: Any) -> None:
    from app.main import create_app

    settings = Settings(
        database_url="postgresql+psycopg://postgres@127.0.0.1:9/nowhere?connect_timeout=2",
        broker_url="memory://",
        auth="off",
        upload_dir=tmp_path / "files",
        artifact_dir=tmp_path / "artifacts",
        broker_dir=tmp_path / "broker",
    )
    with TestClient(create_app(settings)) as client:
        response = client.get("/v1/jobs/job_x")
    assert_error(response, 503, None, "service_unavailable")
    assert response.headers["retry-after"] == "5"

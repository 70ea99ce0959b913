"""Operations endpoints, the error envelope for framework errors, OpenAPI, and the Celery enqueue."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from app.db import make_engine, make_sessionmaker
from app.main import create_app
from app.models import Job, utcnow
from app.queue import CeleryJobQueue
from app.settings import Settings
from tests.api.conftest import assert_error
from tests.api.test_jobs import make_job
from tests.conftest import RecordingQueue


def test_healthz(client: TestClient) -> None:
    assert client.get("/healthz").json() == {"status": "ok"}


def test_readyz_up_and_down(
    client: TestClient, api_settings: Settings, session_factory: sessionmaker[Session], queue: RecordingQueue
) -> None:
    ready = client.get("/readyz")
    assert ready.status_code == 200 and ready.json()["checks"] == {"database": "ok", "broker": "ok"}
    broken = api_settings.model_copy(update={"broker_url": "redis://127.0.0.1:1/0"})
    with TestClient(create_app(broken, session_factory=session_factory, queue=queue)) as down_client:
        error = assert_error(down_client.get("/readyz"), 503, "broker", "not_ready")
    assert "broker is down" in error["message"] and "database" not in error["message"]
    dead_db = make_engine("postgresql+psycopg://postgres@127.0.0.1:1/nothing", connect_args={"connect_timeout": 1})
    with TestClient(create_app(api_settings, session_factory=make_sessionmaker(dead_db), queue=queue)) as down_client:
        error = assert_error(down_client.get("/readyz"), 503, "database", "not_ready")
    dead_db.dispose()


def test_metrics_exposes_jobs_and_latency(client: TestClient, db_session: Session, tenant: str) -> None:
    started = utcnow() - timedelta(seconds=42)
    make_job(db_session, tenant, status="succeeded", started_at=started, finished_at=started + timedelta(seconds=40))
    client.get("/v1/jobs/job_nope")
    text = client.get("/metrics").text
    assert 'distillery_jobs{status="succeeded"}' in text
    assert 'distillery_job_duration_seconds_bucket{le="60.0",status="succeeded"}' in text
    assert "distillery_database_up 1.0" in text
    assert (
        'distillery_http_request_duration_seconds_count{method="GET",route="/v1/jobs/{job_id}",status="404"} 1.0'
        in text
    )


def test_openapi_documents_models_and_the_envelope(client: TestClient) -> None:
    spec = client.get("/openapi.json").json()
    schemas = spec["components"]["schemas"]
    for name in (
        "JobCreate",
        "JobRead",
        "JobList",
        "FileRead",
        "FileList",
        "ArtifactRead",
        "EventList",
        "MetricList",
        "ErrorEnvelope",
    ):
        assert name in schemas, name
    assert "HTTPValidationError" not in schemas
    post = spec["paths"]["/v1/jobs"]["post"]
    assert post["requestBody"]["content"]["application/json"]["schema"]["$ref"].endswith("/JobCreate")
    assert post["responses"]["422"]["content"]["application/json"]["schema"]["$ref"].endswith("/ErrorEnvelope")
    assert "multipart/form-data" in spec["paths"]["/v1/files"]["post"]["requestBody"]["content"]
    assert client.get("/docs").status_code == 200


def test_framework_errors_use_the_envelope(api: FastAPI, client: TestClient) -> None:
    assert_error(client.get("/v1/nothing"), 404, None, "not_found")
    assert_error(client.put("/v1/jobs"), 405, None, "method_not_allowed")
    bad_json = client.post("/v1/jobs", content=b"{", headers={"content-type": "application/json"})
    assert_error(bad_json, 422, None, "invalid_json")

    def boom() -> None:
        raise RuntimeError("secret detail")

    api.add_api_route("/boom", boom)
    with TestClient(api, raise_server_exceptions=False) as quiet:
        error = assert_error(quiet.get("/boom"), 500, None, "internal_error")
    assert "secret" not in error["message"]


def test_celery_queue_sends_and_a_failed_send_clears_dispatched(
    db_session: Session, session_factory: sessionmaker[Session], tenant: str, tmp_path: Path
) -> None:
    """The real Celery client. A submission writes dispatched_at with the row: an in-memory broker accepts the
    message and it stays; a dead broker sets it back to NULL, for the reconciler's next round."""
    job = make_job(db_session, tenant, dispatched_at=utcnow())
    settings = Settings(broker_url="memory://", broker_dir=tmp_path)
    CeleryJobQueue(settings, session_factory).send_run_job(job.id)
    db_session.expire_all()
    assert db_session.scalars(select(Job.dispatched_at).where(Job.id == job.id)).one() is not None

    lost = make_job(db_session, tenant, dispatched_at=utcnow())
    down = Settings(broker_url="redis://127.0.0.1:1/0", broker_timeout_seconds=0.5)
    CeleryJobQueue(down, session_factory).send_run_job(lost.id)  # logs, does not raise
    db_session.expire_all()
    assert db_session.scalars(select(Job.dispatched_at).where(Job.id == lost.id)).one() is None


def test_a_submission_is_marked_dispatched_unless_its_send_failed(
    api_settings: Settings, session_factory: sessionmaker[Session], db_session: Session, api_key: str
) -> None:
    """Through the API with the real Celery client: 201 either way; the job's dispatched_at stays when the
    broker took the message and is NULL when it was down, for the reconciler's next round."""
    body = {
        "student": {"architecture": {"name": "mlp", "kwargs": {"hidden": [8]}}},
        "dataset": {"train": "builtin:digits"},
        "mode": "self",
        "training": {"epochs": 1},
    }
    headers = {"Authorization": f"Bearer {api_key}"}
    dispatched = {}
    for broker, settings in {
        "up": api_settings,
        "down": api_settings.model_copy(update={"broker_url": "redis://127.0.0.1:1/0", "broker_timeout_seconds": 0.5}),
    }.items():
        with TestClient(create_app(settings, session_factory=session_factory), headers=headers) as client:
            response = client.post("/v1/jobs", json=body)
        assert response.status_code == 201, response.text
        db_session.expire_all()
        dispatched[broker] = db_session.scalars(select(Job.dispatched_at).where(Job.id == response.json()["id"])).one()
    assert dispatched["up"] is not None and dispatched["down"] is None

"""POST/GET /v1/jobs and cancel: validation naming the field, idempotency, enqueue after commit, tenancy."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import event, select
from sqlalchemy.orm import Session, sessionmaker

from app.jobs import repository as jobs_repository
from app.models import File, Job, utcnow
from distill.config import DEFAULT_LAMBDA
from tests.api.conftest import assert_error, npz_bytes, upload_ok
from tests.conftest import RecordingQueue


def make_job(session: Session, tenant: str, status: str = "queued", **fields: Any) -> Job:
    job = jobs_repository.add(session, Job(tenant_id=tenant, status=status, spec={}, progress={}, metrics={}, **fields))
    session.commit()
    return job


def test_create_stores_normalised_spec_and_enqueues_after_commit(
    client: TestClient,
    job_body: dict[str, Any],
    queue: RecordingQueue,
    session_factory: sessionmaker[Session],
    db_session: Session,
) -> None:
    order: list[str] = []
    event.listen(session_factory, "after_commit", lambda session: order.append("commit"))
    queue_send = queue.send_run_job

    def send(job_id: str) -> None:
        order.append("send")
        queue_send(job_id)

    queue.send_run_job = send  # type: ignore[method-assign]

    response = client.post("/v1/jobs", json=job_body)
    assert response.status_code == 201, response.text
    job = response.json()
    assert job["id"].startswith("job_") and job["status"] == "queued"
    assert response.headers["location"] == f"/v1/jobs/{job['id']}"
    assert job["spec"]["teacher"]["file_id"] == job_body["teacher"]["file_id"]
    assert job["spec"]["knowledge"]["lambda"] == DEFAULT_LAMBDA  # defaults are filled in, aliases kept
    assert job["spec"]["training"]["lr"] == 0.001
    assert job["artifacts"] == [] and job["error"] is None and job["started_at"] is None
    assert queue.sent == [job["id"]]
    # The message is sent only once the request's transaction committed (savepoints commit too, hence >= 1).
    assert order[-2:] == ["commit", "send"] and order.count("send") == 1
    row = db_session.scalars(select(Job).where(Job.id == job["id"])).one()
    assert row.spec == job["spec"] and row.status == "queued"
    assert client.get(f"/v1/jobs/{job['id']}").json() == job


def test_builtin_dataset_is_accepted(client: TestClient, job_body: dict[str, Any]) -> None:
    job_body["dataset"] = {"train": "builtin:digits", "validation": job_body["dataset"]["train"]}
    assert client.post("/v1/jobs", json=job_body).status_code == 201


def test_idempotency_key(client: TestClient, job_body: dict[str, Any], queue: RecordingQueue) -> None:
    headers = {"Idempotency-Key": "abc-123"}
    first = client.post("/v1/jobs", json=job_body, headers=headers)
    assert first.status_code == 201
    again = client.post("/v1/jobs", json=job_body, headers=headers)
    assert again.status_code == 200 and again.headers["idempotent-replayed"] == "true"
    assert again.json()["id"] == first.json()["id"]
    assert queue.sent == [first.json()["id"]]  # enqueued once
    changed = copy.deepcopy(job_body)
    changed["training"]["epochs"] = 2
    assert_error(client.post("/v1/jobs", json=changed, headers=headers), 409, "Idempotency-Key", "idempotency_conflict")
    other_key = client.post("/v1/jobs", json=job_body, headers={"Idempotency-Key": "other"})
    assert other_key.status_code == 201 and other_key.json()["id"] != first.json()["id"]


def _set(body: dict[str, Any], dotted: str, value: Any) -> None:
    *path, last = dotted.split(".")
    for key in path:
        body = body.setdefault(key, {})
    body[last] = value


@pytest.mark.parametrize(
    ("field", "value", "param"),
    [
        ("knowledge.temperature", 0, "knowledge.temperature"),
        ("knowledge.temperature", "hot", "knowledge.temperature"),
        ("knowledge.lambda", -0.1, "knowledge.lambda"),
        ("training.epochs", 0, "training.epochs"),
        ("student.architecture.name", "transformer_xxl", "student.architecture"),
        ("student.architecture.kwargs", {"hidden": [8], "widht": 3}, "student.architecture"),
        ("student.architecture.kwargs", {"hidden": "wide"}, "student.architecture"),
        ("teacher.file_id", "file_000000000000000000000000", "teacher.file_id"),
        ("dataset.train", "/etc/passwd", "dataset.train"),
        ("dataset.train", "builtin:imagenet", "dataset.train"),
        ("teacher.path", "/srv/teacher.pt", "teacher.path"),
        ("mode", "ensemble", "mode"),
    ],
)
def test_invalid_spec_is_422_naming_the_field(
    client: TestClient, job_body: dict[str, Any], queue: RecordingQueue, field: str, value: Any, param: str
) -> None:
    _set(job_body, field, value)
    assert_error(client.post("/v1/jobs", json=job_body), 422, param)
    assert queue.sent == []
    assert client.get("/v1/jobs").json()["data"] == []


def test_missing_required_field(client: TestClient, job_body: dict[str, Any]) -> None:
    del job_body["student"]
    error = assert_error(client.post("/v1/jobs", json=job_body), 422, "student")
    assert "required" in error["message"]


def test_file_with_wrong_purpose(client: TestClient, job_body: dict[str, Any]) -> None:
    teacher, dataset = job_body["teacher"]["file_id"], job_body["dataset"]["train"]
    job_body["teacher"]["file_id"], job_body["dataset"]["train"] = dataset, teacher
    assert_error(client.post("/v1/jobs", json=job_body), 422, "teacher.file_id", "wrong_file_purpose")
    job_body["teacher"]["file_id"] = teacher
    assert_error(client.post("/v1/jobs", json=job_body), 422, "dataset.train", "wrong_file_purpose")


def test_unlabeled_dataset_with_lambda(client: TestClient, job_body: dict[str, Any]) -> None:
    job_body["dataset"]["train"] = upload_ok(client, "dataset", npz_bytes(20, labeled=False))["id"]
    job_body["knowledge"]["lambda"] = 0.5
    error = assert_error(client.post("/v1/jobs", json=job_body), 422, "knowledge.lambda", "unlabeled_dataset")
    assert "lambda to 0" in error["message"]
    job_body["knowledge"]["lambda"] = 0
    assert client.post("/v1/jobs", json=job_body).status_code == 201


def test_teacher_output_size_must_match_the_dataset(client: TestClient, job_body: dict[str, Any]) -> None:
    """The engine's check_job runs at submission: a 10-way teacher cannot teach labels of 20 classes."""
    import io

    import numpy as np

    buffer = io.BytesIO()
    np.savez(buffer, x=np.zeros((20, 1, 8, 8), np.float32), y=np.arange(20))
    job_body["dataset"]["train"] = upload_ok(client, "dataset", buffer.getvalue())["id"]
    error = assert_error(client.post("/v1/jobs", json=job_body), 422, "teacher.file_id", "shape_mismatch")
    assert "20 classes" in error["message"]


def test_other_tenants_file_cannot_be_used(client: TestClient, job_body: dict[str, Any], db_session: Session) -> None:
    file = db_session.scalars(select(File).where(File.id == job_body["teacher"]["file_id"])).one()
    file.tenant_id = "someone_else"
    db_session.commit()
    assert_error(client.post("/v1/jobs", json=job_body), 422, "teacher.file_id", "file_not_found")


def test_list_jobs_pagination_and_status_filter(
    client: TestClient, job_body: dict[str, Any], db_session: Session, tenant: str
) -> None:
    ids = [client.post("/v1/jobs", json=job_body).json()["id"] for _ in range(3)]
    make_job(db_session, "someone_else")
    page = client.get("/v1/jobs", params={"limit": 2}).json()
    assert [j["id"] for j in page["data"]] == [ids[2], ids[1]] and page["has_more"] is True
    page = client.get("/v1/jobs", params={"limit": 2, "after": ids[1]}).json()
    assert [j["id"] for j in page["data"]] == [ids[0]] and page["has_more"] is False
    client.post(f"/v1/jobs/{ids[0]}/cancel")
    cancelled = client.get("/v1/jobs", params={"status": "cancelled"}).json()
    assert [j["id"] for j in cancelled["data"]] == [ids[0]]
    assert_error(client.get("/v1/jobs", params={"status": "done"}), 422, "status")
    assert_error(client.get("/v1/jobs", params={"limit": 1000}), 422, "limit")


def test_unknown_and_other_tenants_job_are_404(client: TestClient, db_session: Session) -> None:
    error = assert_error(client.get("/v1/jobs/job_nope"), 404, None, "not_found")
    assert "job_nope" in error["message"]
    other = make_job(db_session, "someone_else")
    assert_error(client.get(f"/v1/jobs/{other.id}"), 404, None, "not_found")
    assert_error(client.post(f"/v1/jobs/{other.id}/cancel"), 404, None, "not_found")
    assert_error(client.get(f"/v1/jobs/{other.id}/events"), 404, None, "not_found")


def test_cancel_queued_job(client: TestClient, job_body: dict[str, Any]) -> None:
    job_id = client.post("/v1/jobs", json=job_body).json()["id"]
    response = client.post(f"/v1/jobs/{job_id}/cancel")
    assert response.status_code == 200
    job = response.json()
    assert job["status"] == "cancelled" and job["cancel_requested"] is True and job["finished_at"] is not None
    error = assert_error(client.post(f"/v1/jobs/{job_id}/cancel"), 409, None, "job_not_cancellable")
    assert "cancelled" in error["message"]


def test_cancel_running_job_asks_the_worker(client: TestClient, db_session: Session, tenant: str) -> None:
    job = make_job(db_session, tenant, status="running", started_at=utcnow())
    body = client.post(f"/v1/jobs/{job.id}/cancel").json()
    assert body["status"] == "cancelling" and body["cancel_requested"] is True and body["finished_at"] is None
    assert client.post(f"/v1/jobs/{job.id}/cancel").json()["status"] == "cancelling"  # idempotent
    types = [e["type"] for e in client.get(f"/v1/jobs/{job.id}/events").json()["data"]]
    assert types == ["cancel_requested"]


def test_cancel_finished_job_is_409(client: TestClient, db_session: Session, tenant: str) -> None:
    job = make_job(db_session, tenant, status="succeeded", started_at=utcnow(), finished_at=utcnow())
    error = assert_error(client.post(f"/v1/jobs/{job.id}/cancel"), 409, None, "job_not_cancellable")
    assert "succeeded" in error["message"]


def test_events_cursor(client: TestClient, db_session: Session, tenant: str) -> None:
    job = make_job(db_session, tenant)
    for i in range(5):
        jobs_repository.add_event(db_session, job_id=job.id, type="message", message=f"m{i}", data={"i": i})
    db_session.commit()
    page = client.get(f"/v1/jobs/{job.id}/events", params={"limit": 3}).json()
    assert [e["message"] for e in page["data"]] == ["m0", "m1", "m2"] and page["has_more"] is True
    assert set(page["data"][0]) == {"id", "created_at", "level", "type", "message", "data"}
    rest = client.get(f"/v1/jobs/{job.id}/events", params={"after": page["data"][-1]["id"]}).json()
    assert [e["data"]["i"] for e in rest["data"]] == [3, 4] and rest["has_more"] is False
    assert_error(client.get(f"/v1/jobs/{job.id}/events", params={"after": "x"}), 422, "after")


def test_metrics_series(client: TestClient, db_session: Session, tenant: str) -> None:
    job = make_job(db_session, tenant)
    for step in range(3):
        jobs_repository.add_metric(db_session, job_id=job.id, name="train/loss", step=step, value=1.0 / (step + 1))
    jobs_repository.add_metric(db_session, job_id=job.id, name="val/top1", step=2, epoch=0, value=0.9)
    db_session.commit()
    everything = client.get(f"/v1/jobs/{job.id}/metrics").json()["data"]
    assert [(m["name"], m["step"]) for m in everything] == [
        ("train/loss", 0),
        ("train/loss", 1),
        ("train/loss", 2),
        ("val/top1", 2),
    ]
    only = client.get(f"/v1/jobs/{job.id}/metrics", params={"name": "val/top1"}).json()["data"]
    assert [(m["value"], m["epoch"]) for m in only] == [(0.9, 0)]

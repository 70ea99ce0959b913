"""Every endpoint, called with another tenant's key and this tenant's ids: 404 each, and nothing changes."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session, sessionmaker

from app.jobs import repository as jobs_repository
from tests.api.conftest import assert_error, create_api_key, npz_bytes, upload_ok
from tests.api.test_artifacts import CONTENT, add_artifact
from tests.api.test_jobs import make_job


@pytest.fixture
def intruder(api: Any, session_factory: sessionmaker[Session], tenant: str) -> Iterator[TestClient]:
    key = create_api_key(session_factory, f"{tenant}_other")
    with TestClient(api, headers={"Authorization": f"Bearer {key}"}) as other:
        yield other


def test_another_tenant_gets_404_everywhere_and_changes_nothing(
    client: TestClient,
    intruder: TestClient,
    job_body: dict[str, Any],
    db_session: Session,
    tenant: str,
    storage: dict[str, Path],
) -> None:
    teacher, dataset = job_body["teacher"]["file_id"], job_body["dataset"]["train"]
    queued = client.post("/v1/jobs", json=job_body).json()["id"]
    running = make_job(db_session, tenant, status="running").id
    done = make_job(db_session, tenant, status="succeeded")
    add_artifact(db_session, done, storage["artifact_dir"], "student.safetensors", CONTENT, "safetensors")
    jobs_repository.add_event(db_session, job_id=done.id, type="note", message="x")
    db_session.commit()
    before = {job_id: client.get(f"/v1/jobs/{job_id}").json() for job_id in (queued, running, done.id)}
    files_before = client.get("/v1/files").json()

    layers = {"architecture": "mlp", "kwargs": '{"hidden": [16]}', "input_shape": "1,8,8"}
    attempts = [
        ("GET", f"/v1/files/{teacher}", {}),
        ("GET", f"/v1/files/{teacher}/layers", {"params": layers}),
        ("DELETE", f"/v1/files/{teacher}", {}),
        ("DELETE", f"/v1/files/{dataset}", {}),
        *[
            (m, f"/v1/jobs/{j}{p}", {})
            for j in (queued, running, done.id)
            for m, p in [("GET", ""), ("POST", "/cancel")]
        ],
        *[
            ("GET", f"/v1/jobs/{j}{p}", {})
            for j in (queued, done.id)
            for p in ("/events", "/events?stream=true", "/metrics", "/artifacts")
        ],
        ("GET", f"/v1/jobs/{done.id}/artifacts/student.safetensors", {}),
        ("GET", f"/v1/jobs/{done.id}/artifacts/student.safetensors", {"headers": {"Range": "bytes=0-9"}}),
    ]
    for method, path, extra in attempts:
        response = intruder.request(method, path, **extra)
        assert response.status_code == 404, (method, path, response.text)
        assert_error(response, 404, None, "not_found")
    # Lists are empty for the intruder, and naming our files in a job is refused as if they did not exist.
    assert intruder.get("/v1/files").json()["data"] == []
    assert intruder.get("/v1/jobs").json()["data"] == []
    assert_error(intruder.post("/v1/jobs", json=job_body), 422, "teacher.file_id", "file_not_found")
    # The intruder's own upload lands in its own folder, beside ours.
    upload_ok(intruder, "dataset", npz_bytes(5))
    assert {p.name for p in storage["upload_dir"].iterdir() if p.is_dir()} == {tenant, f"{tenant}_other"}

    # Nothing changed for the owner.
    assert client.get("/v1/files").json() == files_before
    for job_id, job in before.items():
        now = client.get(f"/v1/jobs/{job_id}").json()
        assert (now["status"], now["cancel_requested"], now["updated_at"]) == (
            job["status"],
            job["cancel_requested"],
            job["updated_at"],
        )
    assert client.get(f"/v1/jobs/{done.id}/artifacts/student.safetensors").content == CONTENT
    assert client.get(f"/v1/files/{teacher}/layers", params=layers).status_code == 200

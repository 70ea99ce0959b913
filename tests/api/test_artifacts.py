"""GET /v1/jobs/{id}/artifacts[/{name}]: listing, streaming download, Range, ETag, tenancy."""

from __future__ import annotations

import hashlib
from pathlib import Path

from fastapi.testclient import TestClient
from sqlalchemy.orm import Session

from app.artifacts import repository as artifacts_repository
from app.models import Artifact, Job
from tests.api.conftest import assert_error
from tests.api.test_jobs import make_job

CONTENT = bytes(range(256)) * 40  # 10,240 bytes


def add_artifact(session: Session, job: Job, artifact_dir: Path, name: str, content: bytes, fmt: str) -> Artifact:
    relative = f"{job.id}/{name}"
    (artifact_dir / job.id).mkdir(exist_ok=True)
    (artifact_dir / relative).write_bytes(content)
    artifact = Artifact(
        job_id=job.id,
        tenant_id=job.tenant_id,
        name=name,
        bytes=len(content),
        sha256=hashlib.sha256(content).hexdigest(),
        format=fmt,
        storage_path=relative,
    )
    artifacts_repository.add(session, artifact)
    session.commit()
    return artifact


def test_list_and_job_read_include_artifacts(
    client: TestClient, db_session: Session, tenant: str, storage: dict[str, Path]
) -> None:
    job = make_job(db_session, tenant, status="succeeded")
    add_artifact(db_session, job, storage["artifact_dir"], "student.safetensors", CONTENT, "safetensors")
    add_artifact(db_session, job, storage["artifact_dir"], "report.json", b"{}", "json")
    listing = client.get(f"/v1/jobs/{job.id}/artifacts").json()
    assert listing == [
        {"name": "report.json", "bytes": 2, "sha256": hashlib.sha256(b"{}").hexdigest(), "format": "json"},
        {
            "name": "student.safetensors",
            "bytes": len(CONTENT),
            "sha256": hashlib.sha256(CONTENT).hexdigest(),
            "format": "safetensors",
        },
    ]
    assert client.get(f"/v1/jobs/{job.id}").json()["artifacts"] == listing


def test_download_full_range_and_etag(
    client: TestClient, db_session: Session, tenant: str, storage: dict[str, Path]
) -> None:
    job = make_job(db_session, tenant, status="succeeded")
    artifact = add_artifact(db_session, job, storage["artifact_dir"], "student.safetensors", CONTENT, "safetensors")
    url = f"/v1/jobs/{job.id}/artifacts/student.safetensors"

    full = client.get(url)
    assert full.status_code == 200 and full.content == CONTENT
    assert full.headers["etag"] == f'"{artifact.sha256}"'
    assert full.headers["accept-ranges"] == "bytes"
    assert "filename*=UTF-8''student.safetensors" in full.headers["content-disposition"]
    assert full.headers["content-disposition"].startswith("attachment")

    part = client.get(url, headers={"Range": "bytes=100-199"})
    assert part.status_code == 206
    assert part.content == CONTENT[100:200]
    assert part.headers["content-range"] == f"bytes 100-199/{len(CONTENT)}"

    tail = client.get(url, headers={"Range": "bytes=-10"})
    assert tail.status_code == 206 and tail.content == CONTENT[-10:]

    stale = client.get(url, headers={"Range": "bytes=0-9", "If-Range": '"not-the-hash"'})
    assert stale.status_code == 200 and stale.content == CONTENT  # the file changed: send it whole

    assert client.get(url, headers={"Range": f"bytes={len(CONTENT) + 5}-"}).status_code == 416
    cached = client.get(url, headers={"If-None-Match": f'"{artifact.sha256}"'})
    assert cached.status_code == 304 and cached.content == b""


def test_unknown_missing_and_foreign_artifacts_are_404(
    client: TestClient, db_session: Session, tenant: str, storage: dict[str, Path]
) -> None:
    job = make_job(db_session, tenant, status="succeeded")
    assert_error(client.get(f"/v1/jobs/{job.id}/artifacts/student.onnx"), 404, None, "not_found")
    assert_error(client.get("/v1/jobs/job_nope/artifacts"), 404, None, "not_found")
    gone = add_artifact(db_session, job, storage["artifact_dir"], "student.pt", b"x", "torchscript")
    (storage["artifact_dir"] / gone.storage_path).unlink()
    assert_error(client.get(f"/v1/jobs/{job.id}/artifacts/student.pt"), 404, None, "artifact_missing")
    other = make_job(db_session, "someone_else", status="succeeded")
    add_artifact(db_session, other, storage["artifact_dir"], "student.safetensors", CONTENT, "safetensors")
    assert_error(client.get(f"/v1/jobs/{other.id}/artifacts/student.safetensors"), 404, None, "not_found")
    assert_error(client.get(f"/v1/jobs/{other.id}/artifacts"), 404, None, "not_found")

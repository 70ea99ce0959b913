"""Submission checks that passed are not run again; refusals always are (app/checks/verdicts.py).

The check of a job with an uploaded model is a sandboxed interpreter of seconds (app/probe.py). `checks`
counts the real check as it runs (a spy that calls through, so every answer is still the engine's own).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import delete, select
from sqlalchemy.orm import Session, sessionmaker

from app.auth.service import create_key
from app.checks import verdicts
from app.db import make_engine, make_sessionmaker
from app.jobs import validation
from app.main import create_app
from app.models import CheckVerdict, File, Job, JobEvent, Tenant
from app.settings import Settings
from tests.api.conftest import assert_error, upload_ok
from tests.conftest import RecordingQueue


@pytest.fixture
def checks(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The verdict keys of the checks that ran, in order."""
    ran: list[str] = []
    real = validation.check_planned_job

    def spy(plan: validation.PlannedCheck, **kwargs: Any) -> None:
        ran.append(plan.verdict)
        real(plan, **kwargs)

    monkeypatch.setattr(validation, "check_planned_job", spy)
    return ran


def _stored(db_session: Session, tenant: str) -> list[str]:
    db_session.expire_all()
    return list(db_session.scalars(select(CheckVerdict.key).where(CheckVerdict.tenant_id == tenant)))


def test_a_passed_probe_is_not_run_again(
    client: TestClient, job_body: dict[str, Any], checks: list[str], db_session: Session, tenant: str
) -> None:
    first = client.post("/v1/jobs", json=job_body)
    assert first.status_code == 201, first.text
    assert len(checks) == 1 and _stored(db_session, tenant) == checks

    # Another seed and other training options: the same models, data and knowledge, so the same verdict.
    again = {**job_body, "training": {"epochs": 3, "batch_size": 8, "seed": 7}, "metadata": {"run": "2"}}
    second = client.post("/v1/jobs", json=again)
    assert second.status_code == 201, second.text
    assert len(checks) == 1
    assert second.json()["spec"]["training"]["seed"] == 7  # the job is still this submission's own

    # What another API process (or this one after a restart) sees: only the stored pass.
    verdicts._passed.clear()
    assert client.post("/v1/jobs", json=again).status_code == 201
    assert len(checks) == 1


def test_another_student_or_teacher_is_checked_again(
    client: TestClient, job_body: dict[str, Any], checks: list[str], torchscript_bytes: bytes
) -> None:
    assert client.post("/v1/jobs", json=job_body).status_code == 201
    wider = {**job_body, "student": {"architecture": {"name": "mlp", "kwargs": {"hidden": [16]}}}}
    assert client.post("/v1/jobs", json=wider).status_code == 201
    # The same bytes uploaded again are the same teacher.
    same = upload_ok(client, "teacher", torchscript_bytes, "again.pt")["id"]
    assert client.post("/v1/jobs", json={**job_body, "teacher": {"file_id": same}}).status_code == 201
    assert len(checks) == 2
    assert len(set(checks)) == 2


def test_a_refusal_is_never_remembered(
    client: TestClient, job_body: dict[str, Any], checks: list[str], db_session: Session, tenant: str
) -> None:
    # A student sized for 4x4 inputs, on 8x8 data: only running it (in the probe) tells.
    student = {"architecture": {"name": "mlp", "kwargs": {"hidden": [8], "input_shape": [1, 4, 4]}}}
    for _ in range(2):
        assert_error(client.post("/v1/jobs", json={**job_body, "student": student}), 422, "student.architecture")
    assert len(checks) == 2 and _stored(db_session, tenant) == []


def test_a_verdict_is_per_tenant_and_limits_not_per_training_options() -> None:
    """Another tenant's identical upload and spec is checked anew (a fast answer would tell it that someone
    uploaded the same bytes), and so is a probe under other limits; training options change nothing."""
    job = {"job": {"mode": "self", "student": {"architecture": {"name": "mlp"}}}, "tenant": "a", "probe": None}
    assert verdicts.verdict_key(**job) != verdicts.verdict_key(**{**job, "tenant": "b"})
    assert verdicts.verdict_key(**job) != verdicts.verdict_key(**{**job, "probe": {"memory_bytes": 1}})
    trained = {**job["job"], "training": {"seed": 3, "epochs": 9}, "metadata": {"team": "x"}}
    assert verdicts.verdict_key(**job) == verdicts.verdict_key(**{**job, "job": trained})


# --- identical checks at the same time: one runs, the others share its pass ------------------------------


@pytest.fixture
def committed(postgres_url: str, tenant: str) -> Iterator[sessionmaker[Session]]:
    """Sessions on a pool of their own that commit (concurrent requests cannot share the test's one
    connection); the tenant's rows are deleted afterwards."""
    engine = make_engine(postgres_url)
    factory = make_sessionmaker(engine)
    yield factory
    with factory.begin() as session:
        jobs = select(Job.id).where(Job.tenant_id == tenant)
        session.execute(delete(JobEvent).where(JobEvent.job_id.in_(jobs)))
        for model in (Job, File, CheckVerdict):
            session.execute(delete(model).where(model.tenant_id == tenant))
        session.execute(delete(Tenant).where(Tenant.id == tenant))  # and its keys (ON DELETE CASCADE)
    engine.dispose()


def test_identical_checks_at_once_run_once(
    api_settings: Settings,
    committed: sessionmaker[Session],
    tenant: str,
    torchscript_bytes: bytes,
    checks: list[str],
) -> None:
    with committed.begin() as session:
        key = create_key(session, tenant=tenant).key
    app = create_app(api_settings, session_factory=committed, queue=RecordingQueue())

    async def submit_together(count: int) -> list[httpx.Response]:
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://test", headers={"Authorization": f"Bearer {key}"}
        ) as client:
            upload = await client.post(
                "/v1/files", data={"purpose": "teacher"}, files={"file": ("t.pt", torchscript_bytes)}
            )
            assert upload.status_code == 201, upload.text
            body = {
                "teacher": {"file_id": upload.json()["id"]},
                "student": {"architecture": {"name": "mlp", "kwargs": {"hidden": [8]}}},
                "dataset": {"train": "builtin:digits"},
                "training": {"epochs": 1},
            }
            return await asyncio.wait_for(
                asyncio.gather(*(client.post("/v1/jobs", json=body) for _ in range(count))), timeout=120
            )

    async def run() -> list[httpx.Response]:
        async with app.router.lifespan_context(app):
            return await submit_together(4)

    responses = asyncio.run(run())
    assert [r.status_code for r in responses] == [201] * 4, [r.text for r in responses]
    assert len(checks) == 1

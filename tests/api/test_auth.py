"""API keys (DESIGN §3): 401s, revocation, what stays open, how keys are stored, the CLI; per-tenant limits."""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import delete, select
from sqlalchemy.orm import Session, sessionmaker

from app.auth import service as auth_service
from app.models import ApiKey, Job, Tenant
from app.settings import Settings
from tests.api.conftest import assert_error, npz_bytes, upload

BAD_HEADERS = [
    None,
    "Bearer",
    "Basic dXNlcjpwYXNz",
    "Bearer not-a-key",
    "Bearer dk_live_0000000000000000000000000000000000000000000000000000",  # well formed, unknown
    "Bearer dk_live_\x00",
]


@pytest.mark.parametrize("authorization", BAD_HEADERS)
@pytest.mark.parametrize("path", ["/v1/files", "/v1/jobs", "/v1/architectures", "/v1/jobs/job_x/events"])
def test_missing_or_bad_key_is_401(anonymous_client: TestClient, path: str, authorization: str | None) -> None:
    headers = {} if authorization is None else {"Authorization": authorization}
    try:
        response = anonymous_client.get(path, headers=headers)
    except Exception:  # httpx refuses a NUL in a header before sending: nothing to check then
        assert authorization is not None and "\x00" in authorization
        return
    assert_error(response, 401, None, "unauthorized")
    assert response.headers["www-authenticate"] == "Bearer"


def test_a_wrong_secret_with_a_real_prefix_is_401(anonymous_client: TestClient, api_key: str) -> None:
    forged = api_key[:-4] + ("AAAA" if not api_key.endswith("AAAA") else "BBBB")
    response = anonymous_client.get("/v1/files", headers={"Authorization": f"Bearer {forged}"})
    assert_error(response, 401, None, "unauthorized")


def test_revoked_key_is_401_once_the_process_cache_forgets_it(
    client: TestClient, api_key: str, db_session: Session, api_settings: Any
) -> None:
    assert client.get("/v1/files").status_code == 200
    auth_service.revoke_key(db_session, prefix=api_key[:16])
    db_session.commit()
    assert client.get("/v1/files").status_code == 200  # verified a moment ago: trusted for key_cache_seconds
    time.sleep(api_settings.key_cache_seconds + 0.1)
    response = client.get("/v1/files")
    assert_error(response, 401, None, "unauthorized")
    assert "revoked" in response.json()["error"]["message"]


@pytest.mark.parametrize("path", ["/healthz", "/readyz", "/metrics", "/docs", "/openapi.json"])
def test_operations_stay_open(anonymous_client: TestClient, path: str) -> None:
    assert anonymous_client.get(path).status_code in (200, 503)  # readyz: 503 while the broker is down


def test_keys_are_stored_hashed_and_last_used_is_written_once_a_minute(
    client: TestClient, api_key: str, db_session: Session
) -> None:
    row = db_session.scalars(select(ApiKey).where(ApiKey.prefix == api_key[:16])).one()
    assert row.key_hash == hashlib.sha256(api_key.encode()).hexdigest()
    assert api_key not in {row.id, row.prefix, row.key_hash} and row.last_used_at is None
    client.get("/v1/files")
    db_session.refresh(row)
    first = row.last_used_at
    assert first is not None
    client.get("/v1/files")
    db_session.refresh(row)
    assert row.last_used_at == first  # within key_touch_seconds: no second write


def test_auth_is_required_by_default_except_in_the_embedded_default(caplog: pytest.LogCaptureFixture) -> None:
    assert Settings(database_url="postgresql+psycopg://x@h/d").auth_required
    assert not Settings(database_url="sqlite:///./var/distillery.db").auth_required
    assert Settings(database_url="sqlite:///./x.db", auth="required").auth_required
    assert not Settings(database_url="postgresql+psycopg://x@h/d", auth="off").auth_required
    with caplog.at_level(logging.INFO, logger="app.auth.service"):
        auth_service.log_auth_mode(Settings(database_url="sqlite:///./x.db"))
    assert "one local tenant 'local'" in caplog.text


@pytest.fixture
def committed_settings(postgres_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[Settings]:
    """The CLI commits to the real test database: point it there, and remove its tenant afterwards."""
    from app.settings import get_settings

    monkeypatch.setenv("DISTILLERY_DATABASE_URL", postgres_url)
    get_settings.cache_clear()
    yield get_settings()
    get_settings.cache_clear()


def test_cli_create_list_revoke(
    committed_settings: Settings, tenant: str, pg_engine: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    from app.cli import main

    try:
        assert main(["keys", "create", "--tenant", tenant, "--json"]) == 0
        created = json.loads(capsys.readouterr().out)
        assert set(created) == {"key", "prefix", "tenant"} and created["tenant"] == tenant
        assert created["key"].startswith(created["prefix"]) and created["prefix"].startswith("dk_live_")
        assert main(["keys", "list", "--tenant", tenant]) == 0
        listing = capsys.readouterr().out
        assert created["prefix"] in listing and created["key"] not in listing
        assert main(["keys", "revoke", created["prefix"]]) == 0
        assert main(["keys", "list", "--tenant", tenant, "--json"]) == 0
        (row,) = json.loads(capsys.readouterr().out.splitlines()[-1])
        assert row["revoked_at"] is not None
        assert main(["tenants", "set", tenant, "--max-concurrent-jobs", "2"]) == 0
        assert json.loads(capsys.readouterr().out)["max_concurrent_jobs"] == 2
        assert main(["keys", "create", "--tenant", "Not/A/Name"]) == 2
    finally:
        with sessionmaker(bind=pg_engine).begin() as session:
            session.execute(delete(Tenant).where(Tenant.id == tenant))


def _set_limits(session_factory: sessionmaker[Session], tenant: str, **values: int | None) -> None:
    with session_factory() as session:
        auth_service.set_limits(session, tenant=tenant, values=values)
        session.commit()


def test_concurrent_jobs_limit_is_429_with_retry_after(
    client: TestClient, job_body: dict[str, Any], session_factory: sessionmaker[Session], tenant: str
) -> None:
    _set_limits(session_factory, tenant, max_concurrent_jobs=1, job_time_budget_seconds=600)
    first = client.post("/v1/jobs", json=job_body)
    assert first.status_code == 201, first.text
    assert first.json()["time_budget_seconds"] == 600  # the tenant's budget, recorded for the worker
    refused = client.post("/v1/jobs", json=job_body)
    assert_error(refused, 429, None, "too_many_jobs")
    assert int(refused.headers["retry-after"]) > 0
    assert client.post(f"/v1/jobs/{first.json()['id']}/cancel").status_code == 200
    assert client.post("/v1/jobs", json=job_body).status_code == 201


def test_storage_quota_is_413_and_keeps_nothing(
    client: TestClient, session_factory: sessionmaker[Session], tenant: str, db_session: Session
) -> None:
    content = npz_bytes()
    _set_limits(session_factory, tenant, max_storage_bytes=len(content) + 100)
    assert upload(client, "dataset", content).status_code == 201
    assert_error(upload(client, "dataset", content), 413, "file", "storage_quota_exceeded")
    assert len(client.get("/v1/files").json()["data"]) == 1


def test_upload_size_limit_is_per_tenant(
    client: TestClient, session_factory: sessionmaker[Session], tenant: str
) -> None:
    content = npz_bytes()
    _set_limits(session_factory, tenant, max_upload_bytes=len(content) // 2)
    assert_error(upload(client, "dataset", content), 413, "file", "file_too_large")
    _set_limits(session_factory, tenant, max_upload_bytes=None)  # back to the setting
    assert upload(client, "dataset", content).status_code == 201


def test_default_time_budget_is_the_setting(client: TestClient, job_body: dict[str, Any], db_session: Session) -> None:
    job = client.post("/v1/jobs", json=job_body).json()
    row = db_session.get(Job, job["id"])
    assert row is not None and row.time_budget_seconds == Settings().job_time_budget_seconds

"""Watching a job: ETag / If-None-Match on GET /v1/jobs/{id}, and its events as Server-Sent Events.

The hub test runs on committed rows in Postgres (a poller thread reads them like the API does); the rest on
the test's rolled-back transaction through the real app.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import create_engine, delete, update
from sqlalchemy.orm import Session, sessionmaker

from app.db import make_sessionmaker
from app.jobs import repository as jobs_repository
from app.jobs.event_stream import EventHub
from app.models import Job, utcnow
from tests.api.test_jobs import make_job

pytestmark = pytest.mark.postgres


def sse_messages(text: str) -> list[dict[str, str]]:
    """The stream's messages, each {field: value} (comments and the retry hint dropped)."""
    out = []
    for block in text.split("\n\n"):
        fields = dict(line.split(": ", 1) for line in block.splitlines() if line and not line.startswith(":"))
        if fields and set(fields) != {"retry"}:
            out.append(fields)
    return out


def add_events(session: Session, job_id: str, count: int, start: int = 0) -> list[int]:
    ids = [
        jobs_repository.add_event(session, job_id=job_id, type="message", message=f"m{i}", data={"i": i}).id
        for i in range(start, start + count)
    ]
    session.commit()
    return ids


# --- ETag ------------------------------------------------------------------------------------------------


def test_a_job_has_an_etag_and_if_none_match_answers_304_until_it_changes(
    client: TestClient, db_session: Session, tenant: str
) -> None:
    job = make_job(db_session, tenant, status="running", started_at=utcnow())
    first = client.get(f"/v1/jobs/{job.id}")
    etag = first.headers["etag"]
    assert first.status_code == 200 and etag.startswith('"') and etag.endswith('"')
    assert client.get(f"/v1/jobs/{job.id}").headers["etag"] == etag  # stable while nothing changes

    unchanged = client.get(f"/v1/jobs/{job.id}", headers={"If-None-Match": etag})
    assert unchanged.status_code == 304 and unchanged.content == b"" and unchanged.headers["etag"] == etag
    assert client.get(f"/v1/jobs/{job.id}", headers={"If-None-Match": f'"other", W/{etag}'}).status_code == 304

    db_session.execute(
        update(Job).where(Job.id == job.id).values(progress={"fraction": 0.5}, updated_at=utcnow())
    )  # what the worker's sync does
    db_session.commit()
    changed = client.get(f"/v1/jobs/{job.id}", headers={"If-None-Match": etag})
    assert changed.status_code == 200 and changed.json()["progress"]["fraction"] == 0.5
    assert changed.headers["etag"] != etag


def test_if_none_match_on_another_tenants_job_is_still_404(
    client: TestClient, db_session: Session, tenant: str
) -> None:
    other = make_job(db_session, "someone_else")
    response = client.get(f"/v1/jobs/{other.id}", headers={"If-None-Match": "*"})
    assert response.status_code == 404 and response.json()["error"]["code"] == "not_found"


# --- Server-Sent Events ----------------------------------------------------------------------------------


def test_the_stream_of_a_finished_job_sends_every_event_then_ends(
    client: TestClient, db_session: Session, tenant: str
) -> None:
    job = make_job(db_session, tenant, status="succeeded", started_at=utcnow(), finished_at=utcnow())
    ids = add_events(db_session, job.id, 3)
    with client.stream("GET", f"/v1/jobs/{job.id}/events?stream=true") as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        text = response.read().decode()
    messages = sse_messages(text)
    assert [int(m["id"]) for m in messages[:-1]] == ids
    assert [json.loads(m["data"])["message"] for m in messages[:-1]] == ["m0", "m1", "m2"]
    assert messages[-1] == {"event": "end", "data": '{"status": "succeeded"}'}


def test_accept_header_and_last_event_id_resume_after_the_last_event_seen(
    client: TestClient, db_session: Session, tenant: str
) -> None:
    job = make_job(db_session, tenant, status="failed", started_at=utcnow(), finished_at=utcnow())
    ids = add_events(db_session, job.id, 4)
    headers = {"Accept": "text/event-stream", "Last-Event-ID": str(ids[1])}
    with client.stream("GET", f"/v1/jobs/{job.id}/events", headers=headers) as response:
        messages = sse_messages(response.read().decode())
    assert [int(m["id"]) for m in messages if "id" in m] == ids[2:]
    assert messages[-1]["event"] == "end" and json.loads(messages[-1]["data"]) == {"status": "failed"}


def test_stream_errors_are_in_the_envelope(client: TestClient, db_session: Session, tenant: str) -> None:
    other = make_job(db_session, "someone_else", status="succeeded")
    assert client.get(f"/v1/jobs/{other.id}/events?stream=true").status_code == 404
    mine = make_job(db_session, tenant, status="succeeded")
    bad = client.get(f"/v1/jobs/{mine.id}/events?stream=true", headers={"Last-Event-ID": "abc"})
    assert bad.status_code == 422 and bad.json()["error"]["param"] == "Last-Event-ID"
    # Without stream=true the endpoint still answers a JSON page.
    assert client.get(f"/v1/jobs/{mine.id}/events").json() == {"data": [], "has_more": False}


# --- one poll for many watchers ----------------------------------------------------------------------------


@pytest.fixture
def committed(postgres_url: str) -> Iterator[sessionmaker[Session]]:
    """Sessions on committed rows (the hub reads from its own threads); this test's jobs are removed after."""
    engine = create_engine(postgres_url)
    sessions = make_sessionmaker(engine)
    yield sessions
    with sessions() as session:
        session.execute(delete(Job).where(Job.tenant_id == "stream_hub_test"))
        session.commit()
    engine.dispose()


def test_many_watchers_of_many_jobs_cost_one_read_per_tick(committed: sessionmaker[Session]) -> None:
    with committed() as session:
        jobs = [make_job(session, "stream_hub_test", status="running").id for _ in range(3)]
        before = {job_id: add_events(session, job_id, 2) for job_id in jobs}

    async def scenario() -> tuple[list[list[dict[str, Any]]], int, int]:
        hub = EventHub(committed, poll_seconds=0.05, keepalive_seconds=30)

        async def watch(job_id: str, after: int) -> list[dict[str, Any]]:
            text = "".join([chunk async for chunk in hub.stream(job_id, after=after)])
            return sse_messages(text)

        # 10 watchers on each job, half from the start and half resuming after the first event.
        tasks = [
            asyncio.create_task(watch(job_id, 0 if i % 2 else before[job_id][0])) for job_id in jobs for i in range(10)
        ]
        await asyncio.sleep(0.6)
        polls_while_idle = hub.polls
        with committed() as session:
            for job_id in jobs:
                add_events(session, job_id, 2, start=2)
                session.execute(update(Job).where(Job.id == job_id).values(status="succeeded"))
            session.commit()
        results = await asyncio.wait_for(asyncio.gather(*tasks), timeout=20)
        await hub.close()
        return results, polls_while_idle, hub.polls

    results, polls_while_idle, polls = asyncio.run(scenario())
    # 30 watchers polled for 0.6 s at 0.05 s a tick: about 12 reads in all, not 30 × 12.
    assert 3 <= polls_while_idle <= 20, polls_while_idle
    assert polls <= polls_while_idle + 20
    for n, messages in enumerate(results):
        job_id = jobs[n // 10]
        got = [json.loads(m["data"])["data"]["i"] for m in messages if "id" in m]
        assert got == ([0, 1, 2, 3] if n % 2 else [1, 2, 3]), (n, messages)
        assert messages[-1]["event"] == "end", job_id

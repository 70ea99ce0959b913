"""Webhook delivery end to end: a real job's status changes reach a real HTTP receiver (http.server on
127.0.0.1, allow-listed), signed so that `standardwebhooks.Webhook(secret).verify` accepts them; failures are
retried with growing delays until the cutoff, then the endpoint is failing; a replay delivers; both secrets
verify during a rotation's grace period. Retry timings are shortened through the settings."""

from __future__ import annotations

import ipaddress
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import timedelta
from itertools import pairwise
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select, text, update
from sqlalchemy.orm import Session, sessionmaker
from standardwebhooks import Webhook
from standardwebhooks.webhooks import WebhookVerificationError

from app.main import create_app
from app.migrate import upgrade_to_head
from app.models import WebhookDelivery, WebhookEndpoint, utcnow
from app.webhooks import repository as webhooks_repo
from app.webhooks import service
from app.webhooks.schemas import WebhookCreate
from app.webhooks.sender import make_client
from tests.conftest import POSTGRES_SERVER_URL, RecordingQueue, create_database, require_service
from tests.webhook_receiver import Received, running_receiver
from tests.worker.conftest import FAKE_ENGINE, TENANT, add_job, fake_spec
from worker import repository as repo
from worker.runner import run_job
from worker.webhooks import WebhookDispatcher, deliver_due

WEBHOOK_DATABASE = "distillery_webhook_test"
ALL_EVENTS = ["job.running", "job.succeeded", "job.failed", "job.cancelled"]
FIRST_DELAY, FACTOR, CUTOFF = 0.3, 2.0, 3.0  # attempts at 0, 0.3, 0.9, 2.1 s; the next (4.5 s) is past the cutoff


@pytest.fixture(scope="session")
def worker_db_url() -> str:
    """A database of these tests' own (overriding the worker tests' one), migrated with Alembic."""
    require_service("postgres")
    create_database(WEBHOOK_DATABASE)
    url = f"{POSTGRES_SERVER_URL}/{WEBHOOK_DATABASE}"
    upgrade_to_head(url)
    return url


@pytest.fixture(autouse=True)
def _no_webhooks_left(sessions: sessionmaker[Session]) -> None:
    """The worker fixtures empty the job tables; these tests start without endpoints too."""
    with sessions.begin() as session:
        session.execute(text("TRUNCATE webhook_deliveries, webhook_endpoints"))


@pytest.fixture
def wh_settings(settings: Any) -> Any:
    return settings.model_copy(
        update={
            "webhook_allowed_networks": [ipaddress.ip_network("127.0.0.1/32")],  # the receiver
            "webhook_poll_seconds": 0.02,
            "webhook_retry_first_delay_seconds": FIRST_DELAY,
            "webhook_retry_factor": FACTOR,
            "webhook_retry_cutoff_seconds": CUTOFF,
            "webhook_timeout_seconds": 5.0,
        }
    )


@pytest.fixture
def api(wh_settings: Any, sessions: sessionmaker[Session]) -> Iterator[TestClient]:
    """The HTTP API on the same database, as the tenant of the worker tests' jobs."""
    settings = wh_settings.model_copy(update={"auth": "off", "default_tenant": TENANT})
    with TestClient(create_app(settings, session_factory=sessions, queue=RecordingQueue())) as client:
        yield client


@contextmanager
def dispatching(settings: Any, sessions: sessionmaker[Session]) -> Iterator[WebhookDispatcher]:
    """The worker's dispatcher thread, as the Celery worker starts it."""
    dispatcher = WebhookDispatcher(settings=settings, sessions=sessions)
    dispatcher.start()
    try:
        yield dispatcher
    finally:
        dispatcher.stop()
        dispatcher.join(timeout=10)
        assert not dispatcher.is_alive()


def register(api: TestClient, url: str, events: list[str]) -> dict[str, Any]:
    response = api.post("/v1/webhooks", json={"url": url, "events": events})
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


def claim(sessions: sessionmaker[Session], job_id: str, worker: str = "w1", *, now: Any = None) -> Any:
    with sessions() as session:
        return repo.claim_job(
            session, job_id=job_id, worker_id=worker, now=now or utcnow(), lease_seconds=60, max_attempts=3
        )


def deliveries(sessions: sessionmaker[Session], **where: Any) -> list[WebhookDelivery]:
    with sessions() as session:
        query = select(WebhookDelivery).filter_by(**where).order_by(WebhookDelivery.id)
        return list(session.scalars(query))


def wait_until(predicate: Callable[[], bool], timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def verified(secret: str, request: Received) -> dict[str, Any]:
    payload: dict[str, Any] = Webhook(secret).verify(request.body, request.headers)
    return payload


def test_a_real_job_sends_running_and_succeeded_signed(
    api: TestClient, sessions: sessionmaker[Session], wh_settings: Any, dummy_teacher: str
) -> None:
    with running_receiver() as receiver:
        endpoint = register(api, receiver.url("/hook"), ALL_EVENTS)
        register(api, receiver.url("/failures"), ["job.failed"])  # told nothing: the job succeeds
        job_id = add_job(sessions, fake_spec("succeed", dummy_teacher))
        result = run_job(job_id, settings=wh_settings, sessions=sessions, worker_id="w1", engine_command=FAKE_ENGINE)
        assert result == "succeeded"

        with dispatching(wh_settings, sessions):
            received = receiver.wait_for(2)
            wait_until(lambda: all(d.status == "succeeded" for d in deliveries(sessions)))
        assert [r.path for r in receiver.received] == ["/hook", "/hook"]

    payloads = {p["type"]: p for p in (verified(endpoint["secret"], r) for r in received)}
    assert set(payloads) == {"job.running", "job.succeeded"}  # the order of deliveries is not guaranteed
    for type, status in [("job.running", "running"), ("job.succeeded", "succeeded")]:
        assert payloads[type]["data"] == {"object": "job", "id": job_id, "status": status}
        assert payloads[type]["timestamp"].endswith("Z")
    assert len({r.headers["webhook-id"] for r in received}) == 2
    assert all(r.headers["content-type"] == "application/json" for r in received)

    listed = api.get(f"/v1/webhooks/{endpoint['id']}/deliveries").json()["data"]
    assert sorted((d["event_type"], d["status"], d["attempts"], d["response_status_code"]) for d in listed) == [
        ("job.running", "succeeded", 1, 200),
        ("job.succeeded", "succeeded", 1, 200),
    ]
    assert {d["message_id"] for d in listed} == {r.headers["webhook-id"] for r in received}
    assert len(deliveries(sessions)) == 2  # none for the endpoint that wants failures only


def test_a_failing_receiver_is_retried_with_growing_delays_then_marked_failing_and_replayed(
    api: TestClient, sessions: sessionmaker[Session], wh_settings: Any
) -> None:
    with running_receiver(default_status=500) as receiver:
        endpoint = register(api, receiver.url(), ["job.running"])
        job_id = add_job(sessions, fake_spec("succeed"))
        started = time.monotonic()
        assert claim(sessions, job_id) is not None  # queued -> running: the event

        with dispatching(wh_settings, sessions):
            wait_until(lambda: deliveries(sessions)[0].status == "failed")
            received = list(receiver.received)
            assert time.monotonic() - started < CUTOFF + 2

            # Four attempts: after the 4th failure the next delay (2.4 s) would end past the 3 s cutoff.
            assert len(received) == 4
            gaps = [b.at - a.at for a, b in pairwise(received)]
            for gap, expected in zip(gaps, [FIRST_DELAY * FACTOR**n for n in range(3)], strict=True):
                assert expected * 0.95 <= gap < expected + 1.0, gaps
            assert len({r.headers["webhook-id"] for r in received}) == 1 and len({r.body for r in received}) == 1
            for request in received:  # each attempt is signed anew, at its own time
                assert verified(endpoint["secret"], request)["data"]["id"] == job_id

            (listed,) = api.get(f"/v1/webhooks/{endpoint['id']}/deliveries").json()["data"]
            assert (listed["status"], listed["attempts"], listed["response_status_code"]) == ("failed", 4, 500)
            assert listed["error"] == "HTTP 500" and listed["next_attempt_at"] is None
            shown = api.get(f"/v1/webhooks/{endpoint['id']}").json()
            assert shown["status"] == "failing" and shown["failing_since"] is not None

            # The receiver is fixed; the failed delivery is replayed through the API.
            receiver.default_status = 204
            retried = api.post(f"/v1/webhooks/{endpoint['id']}/deliveries/{listed['id']}/retry")
            assert retried.status_code == 202 and retried.json()["status"] == "pending"
            wait_until(lambda: deliveries(sessions)[0].status == "succeeded")

    replay = receiver.received[4]
    assert len(receiver.received) == 5
    assert (replay.headers["webhook-id"], replay.body) == (received[0].headers["webhook-id"], received[0].body)
    verified(endpoint["secret"], replay)
    (listed,) = api.get(f"/v1/webhooks/{endpoint['id']}/deliveries").json()["data"]
    assert (listed["status"], listed["attempts"], listed["response_status_code"], listed["error"]) == (
        "succeeded",
        5,
        204,
        None,
    )
    shown = api.get(f"/v1/webhooks/{endpoint['id']}").json()
    assert shown["status"] == "active" and shown["failing_since"] is None


def test_old_and_new_secrets_both_verify_during_the_rotation_grace_period(
    api: TestClient, sessions: sessionmaker[Session], wh_settings: Any
) -> None:
    with running_receiver() as receiver:
        endpoint = register(api, receiver.url(), ["job.running"])
        old = endpoint["secret"]
        new = api.post(f"/v1/webhooks/{endpoint['id']}/rotate-secret").json()["secret"]
        assert claim(sessions, add_job(sessions, fake_spec("succeed"))) is not None
        with dispatching(wh_settings, sessions):
            (during,) = receiver.wait_for(1)
            assert len(during.headers["webhook-signature"].split(" ")) == 2
            assert verified(old, during) == verified(new, during)

            # Once the grace period is over, only the new secret signs.
            with sessions.begin() as session:
                past = utcnow() - timedelta(seconds=1)
                session.execute(update(WebhookEndpoint).values(previous_secret_expires_at=past))
            assert claim(sessions, add_job(sessions, fake_spec("succeed"))) is not None
            after = receiver.wait_for(2)[1]
    assert len(after.headers["webhook-signature"].split(" ")) == 1
    verified(new, after)
    with pytest.raises(WebhookVerificationError):
        verified(old, after)


def test_an_event_exactly_for_each_committed_status_change(
    api: TestClient, sessions: sessionmaker[Session], wh_settings: Any
) -> None:
    """Takeovers and requeues are not new starts; a finish whose lease was lost rolls back, event included."""
    register(api, "http://127.0.0.1:9/hook", ALL_EVENTS)  # never sent: no dispatcher runs here
    job_id = add_job(sessions, fake_spec("succeed"))
    first = claim(sessions, job_id, "w1")
    taken_over = claim(sessions, job_id, "w2", now=utcnow() + timedelta(seconds=61))  # w1's lease expired
    assert first is not None and taken_over is not None
    with sessions() as session:
        assert not repo.finish_job(session, first, now=utcnow(), status="succeeded")  # w1 lost the job
    with sessions() as session:
        assert repo.requeue_job(session, taken_over, now=utcnow(), events=[])
    again = claim(sessions, job_id, "w3")
    assert again is not None
    with sessions() as session:
        assert repo.finish_job(session, again, now=utcnow(), status="failed")
    assert [d.event_type for d in deliveries(sessions, job_id=job_id)] == ["job.running", "job.failed"]

    gone = utcnow() - timedelta(seconds=5)
    crashing = add_job(sessions, fake_spec("succeed"), status="running", attempt=3, lease_expires_at=gone)
    stopping = add_job(
        sessions, fake_spec("succeed"), status="cancelling", attempt=3, lease_expires_at=gone, cancel_requested=True
    )
    for exhausted in (crashing, stopping):
        with sessions() as session:
            assert repo.fail_if_exhausted(session, job_id=exhausted, now=utcnow(), max_attempts=3)
    assert [d.event_type for d in deliveries(sessions, job_id=crashing)] == ["job.failed"]
    assert [d.event_type for d in deliveries(sessions, job_id=stopping)] == ["job.cancelled"]


def test_concurrent_dispatchers_claim_disjoint_batches(
    api: TestClient, sessions: sessionmaker[Session], wh_settings: Any
) -> None:
    register(api, "http://127.0.0.1:9/hook", ["job.running"])
    for _ in range(4):
        assert claim(sessions, add_job(sessions, fake_spec("succeed"))) is not None
    now = utcnow()
    lease = now + timedelta(minutes=1)
    with sessions() as first, sessions() as second:
        mine = webhooks_repo.claim_due(first, now=now, lease_until=lease, limit=2)  # rows locked until commit
        theirs = webhooks_repo.claim_due(second, now=now, lease_until=lease, limit=4)  # skips them, no wait
        assert len(mine) == 2 and len(theirs) == 2
        assert not {c.id for c in mine} & {c.id for c in theirs}
        first.commit()
        second.commit()
    with sessions() as session:
        assert webhooks_repo.claim_due(session, now=now, lease_until=lease, limit=4) == []  # all leased
    assert all(d.attempts == 1 and d.next_attempt_at == lease for d in deliveries(sessions))


def test_the_embedded_sqlite_database_delivers_too(sqlite_sessions: sessionmaker[Session], wh_settings: Any) -> None:
    with running_receiver() as receiver:
        with sqlite_sessions.begin() as session:
            body = WebhookCreate.model_validate({"url": receiver.url(), "events": ["job.running"]})
            secret = service.create_webhook(session, tenant=TENANT, settings=wh_settings, body=body).secret
        job_id = add_job(sqlite_sessions, fake_spec("succeed"))
        assert claim(sqlite_sessions, job_id) is not None
        with make_client(allowed=wh_settings.webhook_allowed_networks, timeout=5) as client:
            outcomes = deliver_due(settings=wh_settings, sessions=sqlite_sessions, client=client)
        assert [o.status for o in outcomes] == ["succeeded"]
        (request,) = receiver.received
    assert verified(secret, request)["data"] == {"object": "job", "id": job_id, "status": "running"}

"""Webhooks over HTTP: registration (secret shown once), rotation, tenants, bad input, the address guard,
and the outbox row that exists exactly when its job's status change was committed."""

from __future__ import annotations

import base64
import ipaddress
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker
from standardwebhooks import Webhook

from app.jobs import service as jobs_service
from app.main import create_app
from app.models import WebhookDelivery, WebhookEndpoint, utcnow
from app.settings import Settings
from app.webhooks import sender, ssrf
from app.webhooks.outbox import record_job_event
from tests.api.conftest import assert_error, create_api_key
from tests.api.test_jobs import make_job
from tests.webhook_receiver import running_receiver

PUBLIC_URL = "https://93.184.215.14/hooks/distillery"  # a public address literal: nothing is sent in these tests
ALL_EVENTS = ["job.running", "job.succeeded", "job.failed", "job.cancelled"]
LOOPBACK_ONLY = [ipaddress.ip_network("127.0.0.1/32")]


def register(client: TestClient, url: str = PUBLIC_URL, events: list[str] | None = None, **extra: Any) -> Any:
    return client.post("/v1/webhooks", json={"url": url, "events": events or ALL_EVENTS, **extra})


def register_ok(client: TestClient, url: str = PUBLIC_URL, events: list[str] | None = None) -> dict[str, Any]:
    response = register(client, url, events, description="ops channel")
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


def deliveries_of(session: Session, job_id: str) -> list[WebhookDelivery]:
    query = select(WebhookDelivery).where(WebhookDelivery.job_id == job_id).order_by(WebhookDelivery.id)
    return list(session.scalars(query))


@pytest.fixture
def intruder(api: Any, session_factory: sessionmaker[Session], tenant: str) -> Iterator[TestClient]:
    key = create_api_key(session_factory, f"{tenant}_other")
    with TestClient(api, headers={"Authorization": f"Bearer {key}"}) as other:
        yield other


def test_register_shows_a_whsec_secret_once(client: TestClient) -> None:
    created = register_ok(client, events=["job.succeeded", "job.failed", "job.succeeded"])
    assert created["id"].startswith("wh_") and created["url"] == PUBLIC_URL
    assert created["events"] == ["job.succeeded", "job.failed"]  # duplicates dropped, order kept
    assert created["description"] == "ops channel" and created["status"] == "active"
    secret = created["secret"]
    assert secret.startswith("whsec_")
    assert len(base64.b64decode(secret.removeprefix("whsec_"), validate=True)) == 32
    Webhook(secret)  # the reference library takes it as it is

    listed = client.get("/v1/webhooks").json()
    assert [w["id"] for w in listed["data"]] == [created["id"]] and listed["has_more"] is False
    shown = client.get(f"/v1/webhooks/{created['id']}").json()
    for body in (listed["data"][0], shown):
        assert "secret" not in body and secret not in str(body)
        assert body["events"] == created["events"]


def test_rotation_returns_a_new_secret_and_keeps_the_old_one_for_the_grace_period(
    client: TestClient, db_session: Session, api_settings: Settings
) -> None:
    created = register_ok(client)
    before = utcnow()
    rotated = client.post(f"/v1/webhooks/{created['id']}/rotate-secret")
    assert rotated.status_code == 200, rotated.text
    new = rotated.json()["secret"]
    assert new.startswith("whsec_") and new != created["secret"]
    grace = timedelta(seconds=api_settings.webhook_rotation_grace_seconds)
    ends = rotated.json()["previous_secret_expires_at"]
    assert ends is not None
    row = db_session.get(WebhookEndpoint, created["id"])
    assert row is not None and (row.secret, row.previous_secret) == (new, created["secret"])
    assert before + grace <= row.previous_secret_expires_at <= utcnow() + grace
    assert "secret" not in client.get(f"/v1/webhooks/{created['id']}").json()


def test_delete_removes_the_webhook_and_its_deliveries(client: TestClient, db_session: Session, tenant: str) -> None:
    created = register_ok(client)
    job = make_job(db_session, tenant)
    assert record_job_event(db_session, job_id=job.id, tenant_id=tenant, status="running") == 1
    db_session.commit()
    assert len(client.get(f"/v1/webhooks/{created['id']}/deliveries").json()["data"]) == 1

    assert client.delete(f"/v1/webhooks/{created['id']}").status_code == 204
    assert_error(client.get(f"/v1/webhooks/{created['id']}"), 404, None, "not_found")
    assert client.get("/v1/webhooks").json()["data"] == []
    assert deliveries_of(db_session, job.id) == []
    assert_error(client.delete(f"/v1/webhooks/{created['id']}"), 404, None, "not_found")


def test_another_tenant_gets_404_and_changes_nothing(
    client: TestClient, intruder: TestClient, db_session: Session, tenant: str
) -> None:
    created = register_ok(client)
    job = make_job(db_session, tenant)
    record_job_event(db_session, job_id=job.id, tenant_id=tenant, status="running")
    db_session.commit()
    delivery_id = deliveries_of(db_session, job.id)[0].id
    base = f"/v1/webhooks/{created['id']}"
    for method, path in [
        ("GET", base),
        ("DELETE", base),
        ("POST", f"{base}/rotate-secret"),
        ("GET", f"{base}/deliveries"),
        ("POST", f"{base}/deliveries/{delivery_id}/retry"),
    ]:
        assert_error(intruder.request(method, path), 404, None, "not_found")
    assert intruder.get("/v1/webhooks").json()["data"] == []
    # The other tenant's jobs never reach this tenant's endpoints.
    other_job = make_job(db_session, f"{tenant}_other")
    assert record_job_event(db_session, job_id=other_job.id, tenant_id=f"{tenant}_other", status="running") == 0
    shown = client.get(base).json()
    assert shown["status"] == "active" and shown["previous_secret_expires_at"] is None  # not rotated


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"url": "ftp://93.184.215.14/x", "events": ["job.failed"]}, "url"),
        ({"url": "file:///etc/passwd", "events": ["job.failed"]}, "url"),
        ({"url": "not a url", "events": ["job.failed"]}, "url"),
        ({"url": "http://93.184.215.14:99999/", "events": ["job.failed"]}, "url"),
        ({"url": "https://", "events": ["job.failed"]}, "url"),
        ({"events": ["job.failed"]}, "url"),
        ({"url": PUBLIC_URL, "events": ["job.queued"]}, "events[0]"),
        ({"url": PUBLIC_URL, "events": ["job.failed", "job.exploded"]}, "events[1]"),
        ({"url": PUBLIC_URL, "events": []}, "events"),
        ({"url": PUBLIC_URL}, "events"),
        ({"url": PUBLIC_URL, "events": ["job.failed"], "description": "x" * 1025}, "description"),
        ({"url": PUBLIC_URL, "events": ["job.failed"], "secret": "whsec_mine"}, "secret"),
    ],
)
def test_bad_input_is_422_naming_the_field(client: TestClient, body: dict[str, Any], param: str) -> None:
    assert_error(client.post("/v1/webhooks", json=body), 422, param)
    assert client.get("/v1/webhooks").json()["data"] == []


@pytest.mark.parametrize(
    ("url", "kind"),
    [
        ("http://127.0.0.1/hook", "loopback"),
        ("http://127.8.9.10:8080/hook", "loopback"),
        ("http://[::1]/hook", "loopback"),
        ("http://[::ffff:127.0.0.1]/hook", "loopback"),  # IPv4 mapped into IPv6 is judged as IPv4
        ("http://localhost:8000/hook", "loopback"),  # a name that resolves to loopback
        ("http://10.1.2.3/hook", "private"),
        ("http://172.16.0.9/hook", "private"),
        ("https://192.168.1.1/hook", "private"),
        ("http://[fd12:3456::1]/hook", "private"),
        ("http://169.254.169.254/latest/meta-data/", "link-local"),  # the cloud metadata service
        ("http://[fe80::1]/hook", "link-local"),
        ("http://0.0.0.0/hook", "unspecified"),
        ("http://[::]/hook", "unspecified"),
        ("http://100.64.0.1/hook", "not a public"),  # carrier-grade NAT
        ("http://224.0.0.1/hook", "multicast"),
    ],
)
def test_private_loopback_and_link_local_addresses_are_refused(client: TestClient, url: str, kind: str) -> None:
    error = assert_error(register(client, url), 422, "url", "unsafe_url")
    assert kind in error["message"] and "DISTILLERY_WEBHOOK_ALLOWED_NETWORKS" in error["message"]


def test_an_unresolvable_host_is_refused(client: TestClient) -> None:
    error = assert_error(register(client, "https://no-such-host.invalid/hook"), 422, "url", "unsafe_url")
    assert "could not be resolved" in error["message"]


def test_an_allow_listed_network_may_be_registered(
    api_settings: Settings, session_factory: sessionmaker[Session], queue: Any, api_key: str
) -> None:
    settings = api_settings.model_copy(update={"webhook_allowed_networks": LOOPBACK_ONLY})
    app = create_app(settings, session_factory=session_factory, queue=queue)
    with TestClient(app, headers={"Authorization": f"Bearer {api_key}"}) as allowed:
        assert register(allowed, "http://localhost:9/hook").status_code == 201  # localhost -> 127.0.0.1
        assert register(allowed, "http://127.0.0.1:9/hook").status_code == 201
        # Only that network: the rest of loopback, and IPv6 loopback, stay refused.
        assert_error(register(allowed, "http://127.0.0.2/hook"), 422, "url", "unsafe_url")
        assert_error(register(allowed, "http://[::1]/hook"), 422, "url", "unsafe_url")


def test_a_tenant_has_a_limited_number_of_webhooks(
    api_settings: Settings, session_factory: sessionmaker[Session], queue: Any, api_key: str
) -> None:
    settings = api_settings.model_copy(update={"webhook_max_per_tenant": 2})
    app = create_app(settings, session_factory=session_factory, queue=queue)
    with TestClient(app, headers={"Authorization": f"Bearer {api_key}"}) as limited:
        register_ok(limited)
        register_ok(limited)
        assert_error(register(limited), 409, None, "too_many_webhooks")


# --- the outbox --------------------------------------------------------------------------------------------


def test_cancelling_a_queued_job_queues_one_event_per_subscribed_endpoint(
    client: TestClient, intruder: TestClient, db_session: Session, tenant: str
) -> None:
    wants_cancel = register_ok(client, events=["job.cancelled"])
    wants_success = register_ok(client, events=["job.succeeded"])
    register_ok(intruder, events=ALL_EVENTS)  # another tenant's: never told about this tenant's jobs
    job = make_job(db_session, tenant)

    assert client.post(f"/v1/jobs/{job.id}/cancel").json()["status"] == "cancelled"
    rows = deliveries_of(db_session, job.id)
    assert [(r.webhook_id, r.event_type, r.status, r.attempts) for r in rows] == [
        (wants_cancel["id"], "job.cancelled", "pending", 0)
    ]
    assert rows[0].payload["data"] == {"object": "job", "id": job.id, "status": "cancelled"}
    assert rows[0].payload["type"] == "job.cancelled" and rows[0].payload["timestamp"].endswith("Z")
    assert rows[0].message_id.startswith("msg_")
    listed = client.get(f"/v1/webhooks/{wants_cancel['id']}/deliveries").json()["data"]
    assert [(d["id"], d["event_type"], d["job_id"], d["status"]) for d in listed] == [
        (rows[0].id, "job.cancelled", job.id, "pending")
    ]
    assert client.get(f"/v1/webhooks/{wants_success['id']}/deliveries").json()["data"] == []


def test_no_event_for_a_status_change_that_rolled_back(
    client: TestClient, session_factory: sessionmaker[Session], db_session: Session, tenant: str
) -> None:
    register_ok(client, events=["job.cancelled"])
    job = make_job(db_session, tenant)

    with session_factory() as session:
        assert jobs_service.cancel_job(session, tenant=tenant, job_id=job.id).status == "cancelled"
        assert len(deliveries_of(session, job.id)) == 1  # written in the same transaction...
        session.rollback()  # ...and gone with it
    db_session.expire_all()
    assert deliveries_of(db_session, job.id) == []
    assert client.get(f"/v1/jobs/{job.id}").json()["status"] == "queued"

    with session_factory() as session:
        jobs_service.cancel_job(session, tenant=tenant, job_id=job.id)
        session.commit()
    assert [d.event_type for d in deliveries_of(db_session, job.id)] == ["job.cancelled"]


def test_statuses_without_an_event_queue_nothing(client: TestClient, db_session: Session, tenant: str) -> None:
    register_ok(client)
    job = make_job(db_session, tenant)
    for status in ("queued", "cancelling"):
        assert record_job_event(db_session, job_id=job.id, tenant_id=tenant, status=status) == 0
    assert deliveries_of(db_session, job.id) == []


def test_retry_schedules_a_delivery_again(client: TestClient, db_session: Session, tenant: str) -> None:
    created = register_ok(client)
    other = register_ok(client)
    job = make_job(db_session, tenant)
    record_job_event(db_session, job_id=job.id, tenant_id=tenant, status="failed")
    db_session.commit()
    (delivery,) = [d for d in deliveries_of(db_session, job.id) if d.webhook_id == created["id"]]
    db_session.execute(
        update(WebhookDelivery)
        .where(WebhookDelivery.id == delivery.id)
        .values(status="failed", attempts=5, next_attempt_at=None, response_status_code=500, error="HTTP 500")
    )
    db_session.commit()
    failed = client.get(f"/v1/webhooks/{created['id']}/deliveries", params={"status": "failed"}).json()["data"]
    assert [(d["id"], d["response_status_code"], d["attempts"]) for d in failed] == [(delivery.id, 500, 5)]

    before = utcnow()
    response = client.post(f"/v1/webhooks/{created['id']}/deliveries/{delivery.id}/retry")
    assert response.status_code == 202, response.text
    body = response.json()
    assert body["status"] == "pending" and body["attempts"] == 5
    db_session.expire_all()
    row = db_session.get(WebhookDelivery, delivery.id)
    assert row is not None and row.next_attempt_at is not None and before <= row.next_attempt_at <= utcnow()
    # Not a delivery of that webhook, or none at all: 404.
    assert_error(client.post(f"/v1/webhooks/{other['id']}/deliveries/{delivery.id}/retry"), 404, None, "not_found")
    assert_error(client.post(f"/v1/webhooks/{created['id']}/deliveries/whd_nope/retry"), 404, None, "not_found")


# --- the guard at send time (redirects, DNS) ------------------------------------------------------------------


def test_redirects_are_followed_only_to_allowed_addresses() -> None:
    with running_receiver() as receiver:
        receiver.routes = {
            "/moved": (308, "/hook"),
            "/to-metadata": (302, "http://169.254.169.254/latest/meta-data/"),
            "/to-private": (307, "http://10.0.0.7/hook"),
            "/to-ipv6-loopback": (301, f"http://[::1]:{receiver.port}/hook"),
            "/loop": (302, "/loop"),
        }
        body, headers = b'{"type":"job.running"}', {"content-type": "application/json", "webhook-id": "msg_1"}
        with sender.make_client(allowed=LOOPBACK_ONLY, timeout=5) as client:

            def post(path: str, allowed: list[Any] = LOOPBACK_ONLY) -> sender.Attempt:
                url = receiver.url(path)
                return sender.post(client, url, body=body, headers=headers, allowed=allowed, max_redirects=3)

            # An allowed redirect is followed, POSTing the same body again.
            assert post("/moved") == sender.Attempt(200, None)
            assert [(r.path, r.body, r.headers["webhook-id"]) for r in receiver.received] == [
                ("/moved", body, "msg_1"),
                ("/hook", body, "msg_1"),
            ]
            receiver.received.clear()
            for path in ("/to-metadata", "/to-private", "/to-ipv6-loopback"):
                attempt = post(path)
                assert attempt.status_code in (301, 302, 307) and attempt.error is not None, path
                assert "refused" in attempt.error, attempt
            assert [r.path for r in receiver.received] == ["/to-metadata", "/to-private", "/to-ipv6-loopback"]
            assert post("/loop") == sender.Attempt(302, "more than 3 redirects")

    # `localhost` is judged by what it resolves to: the allow-list here is 127.0.0.1/32, so it is followed;
    # with no allow-list even the first hop is refused, by the connection itself.
    with running_receiver() as receiver:
        receiver.routes = {"/to-localhost": (302, f"http://localhost:{receiver.port}/hook")}
        with sender.make_client(allowed=LOOPBACK_ONLY, timeout=5) as client:
            attempt = sender.post(
                client, receiver.url("/to-localhost"), body=b"{}", headers={}, allowed=LOOPBACK_ONLY, max_redirects=3
            )
            assert attempt == sender.Attempt(200, None)
        with sender.make_client(allowed=[], timeout=5) as client:
            attempt = sender.post(client, receiver.url("/hook"), body=b"{}", headers={}, allowed=[], max_redirects=3)
            assert attempt.status_code is None and attempt.error is not None and "refused" in attempt.error


def test_the_connection_itself_is_guarded_after_dns_resolution() -> None:
    """Whatever a URL passed at registration, the address connected to is checked at send time (DNS may
    have changed: rebinding)."""
    with running_receiver() as receiver:
        transport = ssrf.GuardedTransport(allowed=[])
        with httpx.Client(transport=transport, timeout=5) as client:
            for host in ("127.0.0.1", "localhost"):
                with pytest.raises(httpx.ConnectError, match="refused: .*loopback"):
                    client.post(f"http://{host}:{receiver.port}/hook", content=b"{}")
        assert receiver.received == []
        with httpx.Client(transport=ssrf.GuardedTransport(allowed=LOOPBACK_ONLY), timeout=5) as client:
            assert client.post(f"http://localhost:{receiver.port}/hook", content=b"{}").status_code == 200
        assert len(receiver.received) == 1

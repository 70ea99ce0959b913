"""All SQL on `webhook_endpoints` and `webhook_deliveries`. API queries are scoped to one tenant; the
dispatcher's (claim_due, record_attempt) work across tenants, as the worker does for jobs."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import func, insert, select, update
from sqlalchemy.orm import Session

from app.models import WebhookDelivery, WebhookEndpoint

# --- endpoints ---------------------------------------------------------------------------------------------


def get(session: Session, *, tenant: str, webhook_id: str) -> WebhookEndpoint | None:
    query = select(WebhookEndpoint).where(WebhookEndpoint.tenant_id == tenant, WebhookEndpoint.id == webhook_id)
    return session.scalars(query).one_or_none()


def count(session: Session, *, tenant: str) -> int:
    return int(session.scalar(select(func.count()).where(WebhookEndpoint.tenant_id == tenant)) or 0)


def list_page(session: Session, *, tenant: str, limit: int, after: str | None) -> Sequence[WebhookEndpoint]:
    """Newest first; `limit + 1` rows so the caller can tell whether there is more."""
    query = select(WebhookEndpoint).where(WebhookEndpoint.tenant_id == tenant)
    if after is not None:
        query = query.where(WebhookEndpoint.id < after)
    return session.scalars(query.order_by(WebhookEndpoint.id.desc()).limit(limit + 1)).all()


def add(session: Session, endpoint: WebhookEndpoint) -> WebhookEndpoint:
    session.add(endpoint)
    session.flush()
    return endpoint


def delete(session: Session, endpoint: WebhookEndpoint) -> None:
    """Its deliveries go with it (ON DELETE CASCADE)."""
    session.delete(endpoint)
    session.flush()


def subscribed(session: Session, *, tenant: str, event_type: str) -> list[str]:
    """Ids of the tenant's endpoints that want `event_type` (filtered here: JSON containment differs by backend,
    and a tenant has a handful of endpoints at most, Settings.webhook_max_per_tenant)."""
    rows = session.execute(
        select(WebhookEndpoint.id, WebhookEndpoint.events).where(WebhookEndpoint.tenant_id == tenant)
    ).all()
    return [row.id for row in rows if event_type in (row.events or ())]


def set_status(session: Session, *, webhook_id: str, failing: bool, now: datetime) -> None:
    """`failing` (since the first time) when a delivery ran out of retries; `active` again on a success."""
    query = update(WebhookEndpoint).where(WebhookEndpoint.id == webhook_id)
    if failing:
        values: dict[str, Any] = {
            "status": "failing",
            "failing_since": func.coalesce(WebhookEndpoint.failing_since, now),
            "updated_at": now,
        }
    else:
        query = query.where(WebhookEndpoint.status != "active")
        values = {"status": "active", "failing_since": None, "updated_at": now}
    session.execute(query.values(**values).execution_options(synchronize_session=False))


# --- deliveries --------------------------------------------------------------------------------------------


def add_deliveries(session: Session, rows: list[dict[str, Any]]) -> None:
    if rows:
        session.execute(insert(WebhookDelivery), rows)


def get_delivery(session: Session, *, webhook_id: str, delivery_id: str) -> WebhookDelivery | None:
    query = select(WebhookDelivery).where(WebhookDelivery.webhook_id == webhook_id, WebhookDelivery.id == delivery_id)
    return session.scalars(query).one_or_none()


def list_deliveries(
    session: Session, *, webhook_id: str, limit: int, after: str | None, status: str | None
) -> Sequence[WebhookDelivery]:
    """Newest first; `limit + 1` rows."""
    query = select(WebhookDelivery).where(WebhookDelivery.webhook_id == webhook_id)
    if status is not None:
        query = query.where(WebhookDelivery.status == status)
    if after is not None:
        query = query.where(WebhookDelivery.id < after)
    return session.scalars(query.order_by(WebhookDelivery.id.desc()).limit(limit + 1)).all()


def schedule_replay(session: Session, delivery: WebhookDelivery, *, now: datetime) -> WebhookDelivery:
    """Send it again as soon as the dispatcher looks: once (retry_until = now), the same message id and body."""
    delivery.status = "pending"
    delivery.next_attempt_at = now
    delivery.retry_until = now
    delivery.updated_at = now
    session.flush()
    return delivery


# --- the dispatcher ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ClaimedDelivery:
    """What one attempt needs, read when it was claimed."""

    id: str
    webhook_id: str
    attempt: int  # the attempts count this claim set: record_attempt is fenced by it
    message_id: str
    payload: dict[str, Any]
    url: str
    secret: str
    previous_secret: str | None
    previous_secret_expires_at: datetime | None
    created_at: datetime
    retry_until: datetime | None


def claim_due(session: Session, *, now: datetime, lease_until: datetime, limit: int) -> list[ClaimedDelivery]:
    """Take up to `limit` due deliveries: count the attempt and push next_attempt_at to `lease_until`, so no
    other dispatcher takes them meanwhile (and a dispatcher that dies leaves them due again at the lease).

    On Postgres the rows are locked with FOR UPDATE SKIP LOCKED, so concurrent dispatchers (one per worker)
    take disjoint batches without waiting on each other. SQLite (the embedded mode, one worker) has no row
    locks: SQLAlchemy renders no FOR UPDATE there, and the write transaction serialises dispatchers anyway.
    The caller commits."""
    query = (
        select(WebhookDelivery, WebhookEndpoint)
        .join(WebhookEndpoint, WebhookEndpoint.id == WebhookDelivery.webhook_id)
        .where(WebhookDelivery.status == "pending", WebhookDelivery.next_attempt_at <= now)
        .order_by(WebhookDelivery.next_attempt_at)
        .limit(limit)
        .with_for_update(skip_locked=True, of=WebhookDelivery)
    )
    claimed = []
    for delivery, endpoint in session.execute(query):
        delivery.attempts += 1
        delivery.next_attempt_at = lease_until
        claimed.append(
            ClaimedDelivery(
                id=delivery.id,
                webhook_id=delivery.webhook_id,
                attempt=delivery.attempts,
                message_id=delivery.message_id,
                payload=delivery.payload,
                url=endpoint.url,
                secret=endpoint.secret,
                previous_secret=endpoint.previous_secret,
                previous_secret_expires_at=endpoint.previous_secret_expires_at,
                created_at=delivery.created_at,
                retry_until=delivery.retry_until,
            )
        )
    session.flush()
    return claimed


def record_attempt(
    session: Session,
    claim: ClaimedDelivery,
    *,
    now: datetime,
    status: str,
    status_code: int | None,
    error: str | None,
    next_attempt_at: datetime | None,
) -> bool:
    """Write an attempt's outcome; False if the delivery is gone (its endpoint was deleted) or was claimed
    again meanwhile (this attempt outlived its lease), in which case the newer attempt's outcome stands."""
    result = session.execute(
        update(WebhookDelivery)
        .where(
            WebhookDelivery.id == claim.id,
            WebhookDelivery.attempts == claim.attempt,
            WebhookDelivery.status == "pending",
        )
        .values(
            status=status,
            response_status_code=status_code,
            error=error,
            last_attempt_at=now,
            next_attempt_at=next_attempt_at,
            updated_at=now,
        )
        .execution_options(synchronize_session=False)
    )
    return bool(getattr(result, "rowcount", 0) == 1)

"""The one way webhook events come to exist: `record_job_event`, called in the transaction of a job's status change.

Written there, an event is committed exactly when its status change is (none lost, none sent for a change
that rolled back), and sending it later is the dispatcher's business (worker/webhooks.py): a job's status
change never waits on, or fails because of, a receiver.
"""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy.orm import Session

from app.models import WEBHOOK_EVENT_TYPES, new_id, utcnow
from app.webhooks import repository


def job_payload(*, event_type: str, job_id: str, status: str, at: datetime) -> dict[str, object]:
    """The thin payload of DESIGN §3: what happened to which job; the client GETs the job for the rest."""
    timestamp = at.astimezone(UTC).isoformat().replace("+00:00", "Z")
    return {"type": event_type, "timestamp": timestamp, "data": {"object": "job", "id": job_id, "status": status}}


def record_job_event(
    session: Session,
    *,
    job_id: str,
    tenant_id: str,
    status: str,
    now: datetime | None = None,
) -> int:
    """Queue `job.<status>` for each of the tenant's endpoints that subscribed to it, in the caller's
    transaction (the caller commits). Statuses without an event (queued, cancelling) are ignored.
    Returns the number of deliveries queued."""
    event_type = f"job.{status}"
    if event_type not in WEBHOOK_EVENT_TYPES:
        return 0
    webhook_ids = repository.subscribed(session, tenant=tenant_id, event_type=event_type)
    if not webhook_ids:
        return 0
    now = now or utcnow()
    payload = job_payload(event_type=event_type, job_id=job_id, status=status, at=now)
    message_id = new_id("msg_")  # one event, one webhook-id, whichever endpoint receives it
    repository.add_deliveries(
        session,
        [
            {
                "id": new_id("whd_"),
                "webhook_id": webhook_id,
                "tenant_id": tenant_id,
                "message_id": message_id,
                "event_type": event_type,
                "job_id": job_id,
                "payload": payload,
                "status": "pending",
                "attempts": 0,
                "next_attempt_at": now,
                "retry_until": None,  # the dispatcher's retry cutoff after created_at
                "created_at": now,
                "updated_at": now,
            }
            for webhook_id in webhook_ids
        ],
    )
    return len(webhook_ids)

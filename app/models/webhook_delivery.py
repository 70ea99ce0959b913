"""One event for one webhook endpoint: the outbox row, then the record of its delivery.

The row is written in the same transaction as the job's status change (app.webhooks.outbox), so an event
exists exactly when its change was committed. The worker's dispatcher (worker/webhooks.py) sends pending
rows whose `next_attempt_at` has come, and writes back each attempt's outcome. There is no foreign key to
`jobs`: a delivery is a record of what was sent, and the worker tests empty `jobs` with TRUNCATE.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from sqlalchemy import JSON, CheckConstraint, ForeignKey, Index, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from app.models.base import Base, UTCDateTime, new_id, utcnow

DeliveryStatus = Literal["pending", "succeeded", "failed"]


class WebhookDelivery(Base):
    __tablename__ = "webhook_deliveries"
    __table_args__ = (
        CheckConstraint("status IN ('pending', 'succeeded', 'failed')", name="status"),
        # The dispatcher's query: pending rows whose next attempt is due.
        Index("ix_webhook_deliveries_due", "status", "next_attempt_at"),
    )

    id: Mapped[str] = mapped_column(String(40), primary_key=True, default=lambda: new_id("whd_"))
    webhook_id: Mapped[str] = mapped_column(ForeignKey("webhook_endpoints.id", ondelete="CASCADE"), index=True)
    tenant_id: Mapped[str] = mapped_column(String(64))
    # The `webhook-id` header: one per event, the same for every endpoint and every attempt (receivers
    # de-duplicate by it).
    message_id: Mapped[str] = mapped_column(String(40))
    event_type: Mapped[str] = mapped_column(String(32))
    job_id: Mapped[str] = mapped_column(String(40))
    # {"type", "timestamp", "data": {"object": "job", "id", "status"}}, sent as compact JSON.
    payload: Mapped[dict[str, Any]] = mapped_column(JSON)
    status: Mapped[str] = mapped_column(String(16), default="pending")
    attempts: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    # When the dispatcher may next send it (also its lease while an attempt is in flight); NULL once done.
    next_attempt_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    # No retry is scheduled past this. NULL: created_at + the dispatcher's Settings.webhook_retry_cutoff_seconds;
    # a replay sets it to the time of the replay (one attempt, no retries).
    retry_until: Mapped[datetime | None] = mapped_column(UTCDateTime())
    last_attempt_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    # The last attempt's HTTP status (NULL: no response, e.g. refused or timed out) and what went wrong.
    response_status_code: Mapped[int | None] = mapped_column(Integer)
    error: Mapped[str | None] = mapped_column(String(1024))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, onupdate=utcnow)

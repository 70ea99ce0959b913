"""A tenant's webhook endpoint (DESIGN §3, Webhooks): where job status changes are sent, and the secret that signs them.

The secret is stored as given to the client (`whsec_` + base64), because every delivery is signed with it
(HMAC-SHA256, Standard Webhooks); the API shows it once, at creation and at each rotation. After a rotation
the previous secret keeps signing too, next to the new one, until `previous_secret_expires_at`, so receivers
can switch without dropping a message.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from sqlalchemy import JSON, CheckConstraint, String
from sqlalchemy.orm import Mapped, mapped_column

from app.models.base import Base, UTCDateTime, new_id, utcnow

WebhookStatus = Literal["active", "failing"]
# The events a webhook may subscribe to: one per status a job can end up in, and the start.
WEBHOOK_EVENT_TYPES: tuple[str, ...] = ("job.running", "job.succeeded", "job.failed", "job.cancelled")
WebhookEventType = Literal["job.running", "job.succeeded", "job.failed", "job.cancelled"]


class WebhookEndpoint(Base):
    __tablename__ = "webhook_endpoints"
    __table_args__ = (CheckConstraint("status IN ('active', 'failing')", name="status"),)

    id: Mapped[str] = mapped_column(String(40), primary_key=True, default=lambda: new_id("wh_"))
    tenant_id: Mapped[str] = mapped_column(String(64), index=True)
    url: Mapped[str] = mapped_column(String(2048))
    description: Mapped[str] = mapped_column(String(1024), default="")
    # The subscribed event types, a subset of WEBHOOK_EVENT_TYPES.
    events: Mapped[list[str]] = mapped_column(JSON)
    secret: Mapped[str] = mapped_column(String(128))
    previous_secret: Mapped[str | None] = mapped_column(String(128))
    previous_secret_expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    # failing: a delivery ran out of retries (Settings.webhook_retry_cutoff_seconds); the next success clears it.
    status: Mapped[str] = mapped_column(String(16), default="active")
    failing_since: Mapped[datetime | None] = mapped_column(UTCDateTime())
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, onupdate=utcnow)

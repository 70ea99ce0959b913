"""HTTP shapes of webhooks and their deliveries."""

from __future__ import annotations

from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

import httpx
from pydantic import BaseModel, ConfigDict, Field, field_validator

from app.models import DeliveryStatus, WebhookEventType, WebhookStatus


class WebhookCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    url: str = Field(
        max_length=2048,
        description="http or https; its host must resolve to public addresses (private, loopback and link-local "
        "ones are refused unless the operator allowed them).",
    )
    events: list[WebhookEventType] = Field(min_length=1, max_length=8, description="The event types to receive.")
    description: str = Field("", max_length=1024)

    @field_validator("url")
    @classmethod
    def _http_url(cls, url: str) -> str:
        url = url.strip()
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https"):
            raise ValueError(f"the URL must be http or https, not {parts.scheme or 'schemeless'!r}")
        try:
            parts.port  # noqa: B018 (raises on a port that is not a number in range)
            httpx.URL(url)
        except (ValueError, httpx.InvalidURL) as exc:
            raise ValueError(f"not a valid URL: {exc}") from None
        if not parts.hostname:
            raise ValueError("the URL has no host")
        return url

    @field_validator("events")
    @classmethod
    def _unique(cls, events: list[WebhookEventType]) -> list[WebhookEventType]:
        return list(dict.fromkeys(events))


class WebhookRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: str
    url: str
    events: list[str]
    description: str
    status: WebhookStatus = Field(
        description="failing: a delivery ran out of retries; the next successful delivery makes it active again."
    )
    failing_since: datetime | None
    previous_secret_expires_at: datetime | None = Field(
        description="After a rotation: until then, deliveries are signed with the previous secret too."
    )
    created_at: datetime


class WebhookWithSecret(WebhookRead):
    """Returned at creation and at rotation only: the secret is never shown again."""

    secret: str = Field(description="whsec_…: verify deliveries with it (Standard Webhooks).")


class WebhookList(BaseModel):
    data: list[WebhookRead]
    has_more: bool


class DeliveryRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: str
    webhook_id: str
    message_id: str = Field(description="The webhook-id header: the same on every attempt.")
    event_type: WebhookEventType
    job_id: str
    status: DeliveryStatus
    attempts: int
    response_status_code: int | None = Field(description="The last attempt's HTTP status; null without a response.")
    error: str | None = Field(description="Why the last attempt failed; null once delivered.")
    next_attempt_at: datetime | None
    last_attempt_at: datetime | None
    created_at: datetime
    payload: dict[str, Any]


class DeliveryList(BaseModel):
    data: list[DeliveryRead]
    has_more: bool

"""Secrets and signatures, per Standard Webhooks (https://www.standardwebhooks.com), with its reference library.

A secret is `whsec_` + base64 of 32 random bytes. Each attempt is signed anew (its `webhook-timestamp` is the
time of the attempt, which receivers check against replays); during a rotation's grace period the header
carries one signature per secret, space-separated, so a receiver holding either secret verifies.
"""

from __future__ import annotations

import base64
import json
import secrets
from collections.abc import Sequence
from datetime import datetime
from math import floor
from typing import Any

from standardwebhooks import Webhook

SECRET_PREFIX = "whsec_"
SECRET_BYTES = 32


def new_secret() -> str:
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(SECRET_BYTES)).decode()


def signing_secrets(
    secret: str, previous: str | None, previous_expires_at: datetime | None, *, now: datetime
) -> list[str]:
    """The secrets an attempt at `now` is signed with: the current one, and the previous one while its grace lasts."""
    if previous is not None and previous_expires_at is not None and previous_expires_at > now:
        return [secret, previous]
    return [secret]


def body_of(payload: dict[str, Any]) -> bytes:
    """The request body: compact JSON. The same bytes on every attempt; the signature covers them exactly."""
    return json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode()


def signed_headers(*, secrets: Sequence[str], message_id: str, body: bytes, now: datetime) -> dict[str, str]:
    """The three Standard Webhooks headers (and the content type) for one attempt."""
    signatures = " ".join(Webhook(secret).sign(message_id, now, body) for secret in secrets)
    return {
        "content-type": "application/json",
        "webhook-id": message_id,
        "webhook-timestamp": str(floor(now.timestamp())),
        "webhook-signature": signatures,
    }

"""Rules for webhooks: registration (URL and address checks), secret rotation, deliveries and their retry policy."""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy.orm import Session

from app.errors import Conflict, InvalidRequest, NotFound
from app.models import WebhookDelivery, WebhookEndpoint, utcnow
from app.pagination import split_page
from app.settings import Settings
from app.webhooks import repository, signing, ssrf
from app.webhooks.schemas import WebhookCreate

MAX_DELAY_SECONDS = 365 * 24 * 3600.0


def check_url(url: str, settings: Settings) -> None:
    """422 `unsafe_url` unless the URL's host resolves to allowed addresses only (app.webhooks.ssrf)."""
    try:
        ssrf.check_url(url, settings.webhook_allowed_networks)
    except ssrf.UnsafeUrl as exc:
        raise InvalidRequest(str(exc), code="unsafe_url", param="url") from None


def create_webhook(session: Session, *, tenant: str, settings: Settings, body: WebhookCreate) -> WebhookEndpoint:
    """The new endpoint, with its secret (the caller shows it once)."""
    check_url(body.url, settings)  # before any query: resolving a name may take a while
    if repository.count(session, tenant=tenant) >= settings.webhook_max_per_tenant:
        raise Conflict(
            f"a tenant may have at most {settings.webhook_max_per_tenant} webhooks; delete one first",
            code="too_many_webhooks",
        )
    endpoint = WebhookEndpoint(
        tenant_id=tenant,
        url=body.url,
        events=list(body.events),
        description=body.description,
        secret=signing.new_secret(),
        status="active",
    )
    return repository.add(session, endpoint)


def get_webhook(session: Session, *, tenant: str, webhook_id: str) -> WebhookEndpoint:
    endpoint = repository.get(session, tenant=tenant, webhook_id=webhook_id)
    if endpoint is None:
        raise NotFound(f"no webhook {webhook_id!r}")
    return endpoint


def list_webhooks(
    session: Session, *, tenant: str, limit: int, after: str | None
) -> tuple[list[WebhookEndpoint], bool]:
    return split_page(repository.list_page(session, tenant=tenant, limit=limit, after=after), limit)


def delete_webhook(session: Session, *, tenant: str, webhook_id: str) -> None:
    repository.delete(session, get_webhook(session, tenant=tenant, webhook_id=webhook_id))


def rotate_secret(session: Session, *, tenant: str, settings: Settings, webhook_id: str) -> WebhookEndpoint:
    """A new secret; the current one keeps signing (next to it) for Settings.webhook_rotation_grace_seconds.
    Rotating again within the grace period drops the oldest secret at once."""
    endpoint = get_webhook(session, tenant=tenant, webhook_id=webhook_id)
    now = utcnow()
    grace = settings.webhook_rotation_grace_seconds
    endpoint.previous_secret = endpoint.secret if grace > 0 else None
    endpoint.previous_secret_expires_at = now + timedelta(seconds=grace) if grace > 0 else None
    endpoint.secret = signing.new_secret()
    endpoint.updated_at = now
    session.flush()
    return endpoint


def list_deliveries(
    session: Session, *, tenant: str, webhook_id: str, limit: int, after: str | None, status: str | None
) -> tuple[list[WebhookDelivery], bool]:
    get_webhook(session, tenant=tenant, webhook_id=webhook_id)
    rows = repository.list_deliveries(session, webhook_id=webhook_id, limit=limit, after=after, status=status)
    return split_page(rows, limit)


def retry_delivery(session: Session, *, tenant: str, webhook_id: str, delivery_id: str) -> WebhookDelivery:
    """Replay a delivery (failed, or delivered and wanted again): one more attempt, as soon as the dispatcher
    looks, with the same webhook-id and body. A pending one is simply brought forward."""
    get_webhook(session, tenant=tenant, webhook_id=webhook_id)
    delivery = repository.get_delivery(session, webhook_id=webhook_id, delivery_id=delivery_id)
    if delivery is None:
        raise NotFound(f"no delivery {delivery_id!r} of webhook {webhook_id!r}")
    return repository.schedule_replay(session, delivery, now=utcnow())


def next_attempt_at(
    settings: Settings, *, attempts: int, now: datetime, created_at: datetime, retry_until: datetime | None
) -> datetime | None:
    """The retry policy: after the n-th failed attempt wait first_delay * factor**(n-1); None (give up) when
    that would be past the cutoff (created_at + webhook_retry_cutoff_seconds, or a replay's retry_until)."""
    # Capped, so that a long-replayed delivery's attempts count cannot overflow the float or the timedelta.
    exponent = min(max(attempts - 1, 0), 64)
    delay = min(settings.webhook_retry_first_delay_seconds * settings.webhook_retry_factor**exponent, MAX_DELAY_SECONDS)
    cutoff = retry_until or created_at + timedelta(seconds=settings.webhook_retry_cutoff_seconds)
    at = now + timedelta(seconds=delay)
    return at if at <= cutoff else None

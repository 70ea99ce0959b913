"""Rules for tenants and keys: create, list, revoke, authenticate; and the limits a tenant runs under.

Never commits (the CLI and the request dependency do).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from app.auth import keys, repository
from app.auth.limits import TenantLimits
from app.errors import InvalidRequest, NotFound, Unauthorized
from app.models import ApiKey, Tenant, utcnow
from app.settings import Settings

log = logging.getLogger(__name__)

# Tenant ids become folder names (uploads are stored under upload_dir/<tenant>/): nothing else may pass.
TENANT_RE = re.compile(r"[a-z0-9][a-z0-9_-]{0,63}")
LIMIT_FIELDS = ("max_concurrent_jobs", "max_storage_bytes", "max_upload_bytes", "job_time_budget_seconds")


@dataclass(frozen=True)
class CreatedKey:
    key: str  # shown once, never stored
    prefix: str
    tenant: str


def check_tenant_name(name: str) -> str:
    if TENANT_RE.fullmatch(name) is None:
        raise InvalidRequest(
            f"tenant {name!r} is not a valid name: 1-64 of a-z, 0-9, '_' and '-', starting with a letter or digit",
            param="tenant",
        )
    return name


def ensure_tenant(session: Session, *, name: str) -> Tenant:
    existing = repository.get_tenant(session, check_tenant_name(name))
    return existing if existing is not None else repository.add_tenant(session, Tenant(id=name))


def create_key(session: Session, *, tenant: str) -> CreatedKey:
    """A new key for `tenant` (created if new). The key itself is in the result only."""
    ensure_tenant(session, name=tenant)
    for _ in range(5):  # a prefix collision (1 in 4 billion per existing key) just draws again
        key = keys.new_key()
        try:
            with session.begin_nested():
                repository.add_key(
                    session, ApiKey(tenant_id=tenant, prefix=keys.key_prefix(key), key_hash=keys.hash_key(key))
                )
        except IntegrityError:
            continue
        return CreatedKey(key=key, prefix=keys.key_prefix(key), tenant=tenant)
    raise RuntimeError("could not draw an unused key prefix")


def list_keys(session: Session, *, tenant: str | None = None) -> Sequence[ApiKey]:
    return repository.list_keys(session, tenant=tenant)


def revoke_key(session: Session, *, prefix: str) -> ApiKey:
    """Revoke the key with this prefix (idempotent: a revoked key keeps its first revoked_at)."""
    row = repository.get_key_by_prefix(session, prefix) if keys.is_prefix(prefix) else None
    if row is None:
        raise NotFound(f"no key with prefix {prefix!r}", param="prefix")
    if row.revoked_at is None:
        row.revoked_at = utcnow()
        session.flush()
    return row


@dataclass(frozen=True)
class Authenticated:
    tenant: str
    wrote: bool  # last_used_at was due: the caller commits


def authenticate(session: Session, *, authorization: str | None, settings: Settings) -> Authenticated:
    """The tenant of `Authorization: Bearer <key>`, or Unauthorized (missing, malformed, unknown, revoked)."""
    if not authorization:
        raise Unauthorized("an API key is required: send 'Authorization: Bearer <key>'")
    scheme, _, key = authorization.partition(" ")
    key = key.strip()
    if scheme.lower() != "bearer" or not key:
        raise Unauthorized("the Authorization header must be 'Bearer <key>'")
    # The shape is checked before any query, so NUL bytes or megabytes of header never reach the database.
    row = repository.get_key_by_prefix(session, keys.key_prefix(key)) if keys.is_well_formed(key) else None
    if row is None or not keys.matches(key, row.key_hash):
        raise Unauthorized("the API key is not valid")
    if row.revoked_at is not None:
        raise Unauthorized(f"the API key {row.prefix}… was revoked")
    now = utcnow()
    touch_before = now - timedelta(seconds=settings.key_touch_seconds)
    if row.last_used_at is None or row.last_used_at < touch_before:
        repository.touch_key(session, key_id=row.id, now=now, older_than=touch_before)
        return Authenticated(row.tenant_id, wrote=True)
    return Authenticated(row.tenant_id, wrote=False)


def tenant_limits(session: Session, *, tenant: str, settings: Settings, lock: bool = False) -> TenantLimits:
    """The limits `tenant` runs under. `lock` holds its row until the transaction ends, so that checking a
    limit and taking what it limits (a job slot, storage) is one step per tenant."""
    return TenantLimits.of(repository.get_tenant(session, tenant, for_update=lock), settings)


def set_limits(session: Session, *, tenant: str, values: dict[str, int | None]) -> Tenant:
    """Override some of `tenant`'s limits (None: back to the setting). Creates the tenant if new."""
    row = ensure_tenant(session, name=tenant)
    for name, value in values.items():
        if name not in LIMIT_FIELDS:
            raise ValueError(f"unknown limit {name!r}")
        if value is not None and value < 0:
            raise InvalidRequest(f"{name} must be >= 0, got {value}", param=name)
        setattr(row, name, value)
    session.flush()
    return row


def list_tenants(session: Session) -> Sequence[Tenant]:
    return repository.list_tenants(session)


def log_auth_mode(settings: Settings) -> None:
    """The line the API says at start: whether it wants keys, or runs as one local tenant."""
    if settings.auth_required:
        log.info("auth required: every /v1 request needs 'Authorization: Bearer <key>' (distillery keys create)")
        return
    # WARNING, not INFO: it must be seen even where nobody configured logging, and it is worth seeing.
    why = "the embedded default" if settings.auth is None else "DISTILLERY_AUTH=off"
    log.warning(
        "auth is off (%s): every request runs as the one local tenant %r; set DISTILLERY_AUTH=required "
        "and create keys with `distillery keys create --tenant NAME` to serve several teams",
        why,
        settings.default_tenant,
    )

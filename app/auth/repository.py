"""All SQL on `tenants` and `api_keys`."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import bindparam, or_, select, update
from sqlalchemy.orm import Session

from app.models import ApiKey, Tenant

# Built once: requests read their tenant's limits often, and building the statement and its cache key each
# time showed in the profile of a burst of submissions (docs/BENCHMARKS.md).
_TENANT = select(Tenant).where(Tenant.id == bindparam("tenant_id"))
# Serialises one tenant's uploads, so two at once cannot both pass its storage limit. (Its submissions take
# turns on its count of live jobs instead: jobs.repository.write_new_job.)
_TENANT_FOR_UPDATE = _TENANT.with_for_update()


def get_tenant(session: Session, tenant_id: str, *, for_update: bool = False) -> Tenant | None:
    query = _TENANT_FOR_UPDATE if for_update else _TENANT
    return session.scalars(query, {"tenant_id": tenant_id}).one_or_none()


def list_tenants(session: Session) -> Sequence[Tenant]:
    return session.scalars(select(Tenant).order_by(Tenant.id)).all()


def add_tenant(session: Session, tenant: Tenant) -> Tenant:
    session.add(tenant)
    session.flush()
    return tenant


def add_key(session: Session, key: ApiKey) -> ApiKey:
    session.add(key)
    session.flush()
    return key


def get_key_by_prefix(session: Session, prefix: str) -> ApiKey | None:
    return session.scalars(select(ApiKey).where(ApiKey.prefix == prefix)).one_or_none()


def list_keys(session: Session, *, tenant: str | None = None) -> Sequence[ApiKey]:
    query = select(ApiKey).order_by(ApiKey.tenant_id, ApiKey.created_at)
    if tenant is not None:
        query = query.where(ApiKey.tenant_id == tenant)
    return session.scalars(query).all()


def touch_key(session: Session, *, key_id: str, now: datetime, older_than: datetime) -> None:
    """last_used_at = now, unless another request did it since `older_than` (one write per interval)."""
    session.execute(
        update(ApiKey)
        .where(ApiKey.id == key_id, or_(ApiKey.last_used_at.is_(None), ApiKey.last_used_at < older_than))
        .values(last_used_at=now)
    )

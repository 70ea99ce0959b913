"""A tenant: the owner of files and jobs (`tenant_id` on every row), with its limit overrides.

Limits are settings (Settings.max_concurrent_jobs, …) that every tenant gets, and a tenant row may override
each one (NULL = the setting). A row per tenant rather than limits in the environment: an operator raises
one team's quota with `distillery tenants set` without restarting every API replica, and keys need a row
to point at anyway. Tenants are named by their id (`team-search`): it is what the files' and jobs'
`tenant_id` hold and what the storage path starts with, so it is restricted to [a-z0-9_-].
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from app.models.base import Base, UTCDateTime, utcnow


class Tenant(Base):
    __tablename__ = "tenants"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    # NULL: the setting of the same name applies.
    max_concurrent_jobs: Mapped[int | None] = mapped_column(Integer)
    max_storage_bytes: Mapped[int | None] = mapped_column(BigInteger)
    max_upload_bytes: Mapped[int | None] = mapped_column(BigInteger)
    job_time_budget_seconds: Mapped[int | None] = mapped_column(Integer)


class TenantLiveJobs(Base):
    """How many of a tenant's jobs are live (queued, running, cancelling), kept by triggers on `jobs`
    (migration 0009): the slot check of every submission reads this one row instead of counting its jobs.
    Never written by the application; a tenant's row appears with its first job."""

    __tablename__ = "tenant_live_jobs"

    tenant_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    live_jobs: Mapped[int] = mapped_column(Integer)

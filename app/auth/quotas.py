"""Per-tenant limits checked where what they limit is taken: a job slot at submission, storage at upload.

The locked check holds the tenant's row (SELECT … FOR UPDATE) until the request commits, so two requests
of one tenant cannot both take the last slot. Tenants without a row (auth off) run on the settings alone,
unlocked: the embedded default has one user.
"""

from __future__ import annotations

from sqlalchemy.orm import Session

from app.auth.limits import TenantLimits
from app.auth.service import tenant_limits
from app.errors import PayloadTooLarge, TooManyRequests
from app.files import repository as files_repository
from app.jobs import repository as jobs_repository
from app.settings import Settings


class StorageQuotaExceeded(PayloadTooLarge):
    code = "storage_quota_exceeded"


def check_job_slot(session: Session, *, tenant: str, settings: Settings, lock: bool, written: int = 0) -> TenantLimits:
    """429 `too_many_jobs` (with Retry-After) when the tenant already has its limit of unfinished jobs.

    `written`: jobs this transaction has inserted already, which the count sees and must not hold against
    it. A submission writes its job first and takes the lock last, so the lock is held for this check and
    the commit only (docs/BENCHMARKS.md, bursts); a 429 then rolls the job back with the rest."""
    limits = tenant_limits(session, tenant=tenant, settings=settings, lock=lock)
    active = jobs_repository.count_active(session, tenant=tenant) - written
    if active >= limits.max_concurrent_jobs:
        raise TooManyRequests(
            f"{active} jobs are queued or running, the limit of this tenant is {limits.max_concurrent_jobs}; "
            "submit again when one has finished (or cancel one)",
            code="too_many_jobs",
            retry_after=settings.too_many_jobs_retry_after_seconds,
        )
    return limits


def check_storage(session: Session, *, tenant: str, settings: Settings, incoming_bytes: int) -> TenantLimits:
    """413 `storage_quota_exceeded` when the tenant's files plus this upload pass its storage limit."""
    limits = tenant_limits(session, tenant=tenant, settings=settings, lock=True)
    used = files_repository.total_bytes(session, tenant=tenant)
    if used + incoming_bytes > limits.max_storage_bytes:
        raise StorageQuotaExceeded(
            f"this upload ({incoming_bytes} bytes) would bring the tenant's files to {used + incoming_bytes} bytes, "
            f"over its storage limit of {limits.max_storage_bytes}; delete files it no longer needs",
            param="file",
        )
    return limits

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


def check_job_slot(session: Session, *, tenant: str, settings: Settings, lock: bool) -> TenantLimits:
    """429 `too_many_jobs` (with Retry-After) when the tenant already has its limit of unfinished jobs."""
    limits = tenant_limits(session, tenant=tenant, settings=settings, lock=lock)
    refuse_when_full(limits, live_jobs=jobs_repository.count_active(session, tenant=tenant), settings=settings)
    return limits


def refuse_when_full(limits: TenantLimits, *, live_jobs: int, settings: Settings) -> None:
    """The rule of job slots: 429 `too_many_jobs` when `live_jobs` (queued or running, not counting the one
    being submitted) have reached the tenant's limit. A submission counts under its tenant's row lock, taken
    with its job's write (jobs.repository.write_new_job), and a 429 rolls that job back."""
    if live_jobs >= limits.max_concurrent_jobs:
        raise TooManyRequests(
            f"{live_jobs} jobs are queued or running, the limit of this tenant is {limits.max_concurrent_jobs}; "
            "submit again when one has finished (or cancel one)",
            code="too_many_jobs",
            retry_after=settings.too_many_jobs_retry_after_seconds,
        )


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

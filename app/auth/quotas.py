"""Per-tenant limits checked where what they limit is taken: a job slot at submission, storage at upload.

A job slot: a submission's INSERT takes its tenant's counter of live jobs (kept by triggers, migration
0009) and holds that row until it commits, so two submissions of one tenant cannot both take the last
slot. Storage: the check holds the tenant's row (SELECT … FOR UPDATE) until the upload commits. Tenants
without a row (auth off) run on the settings alone.
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


def check_job_slot(session: Session, *, tenant: str, settings: Settings) -> TenantLimits:
    """429 `too_many_jobs` (with Retry-After) when the tenant already has its limit of unfinished jobs: asked
    before a probe is spent on a job, and again when the job is written (refuse_when_full)."""
    limits = tenant_limits(session, tenant=tenant, settings=settings)
    refuse_when_full(limits, live_jobs=jobs_repository.live_jobs(session, tenant=tenant), settings=settings)
    return limits


def refuse_when_full(limits: TenantLimits, *, live_jobs: int, settings: Settings) -> None:
    """The rule of job slots: 429 `too_many_jobs` when `live_jobs` (queued or running, not counting the one
    being submitted) have reached the tenant's limit. A submission reads the count after its job's INSERT,
    which holds the tenant's counter row until it commits (jobs.repository.write_new_job); a 429 rolls that
    job back, and the count with it."""
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

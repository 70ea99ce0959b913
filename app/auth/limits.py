"""A tenant's limits: each a setting, overridden by the tenant's row where it says so."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from app.settings import Settings


class LimitOverrides(Protocol):
    """What a tenant's row says of its limits (a `Tenant`, or the row a submission reads with its job)."""

    @property
    def max_concurrent_jobs(self) -> int | None: ...
    @property
    def max_storage_bytes(self) -> int | None: ...
    @property
    def max_upload_bytes(self) -> int | None: ...
    @property
    def job_time_budget_seconds(self) -> int | None: ...


@dataclass(frozen=True)
class TenantLimits:
    max_concurrent_jobs: int
    max_storage_bytes: int
    max_upload_bytes: int
    job_time_budget_seconds: int

    @classmethod
    def of(cls, tenant: LimitOverrides | None, settings: Settings) -> TenantLimits:
        def pick(override: int | None, default: int) -> int:
            return default if override is None else override

        if tenant is None:
            return cls(
                settings.max_concurrent_jobs,
                settings.max_storage_bytes,
                settings.max_upload_bytes,
                settings.job_time_budget_seconds,
            )
        return cls(
            pick(tenant.max_concurrent_jobs, settings.max_concurrent_jobs),
            pick(tenant.max_storage_bytes, settings.max_storage_bytes),
            pick(tenant.max_upload_bytes, settings.max_upload_bytes),
            pick(tenant.job_time_budget_seconds, settings.job_time_budget_seconds),
        )

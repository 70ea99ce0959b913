"""A distillation job: its spec, its state machine and the worker's lease on it.

Postgres is the source of truth for a job's state (DESIGN §2): the worker claims a job with one
conditional UPDATE on `status` / `lease_expires_at`, and cancellation is the `cancel_requested` flag.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from sqlalchemy import JSON, Boolean, CheckConstraint, Index, Integer, String, UniqueConstraint, false, text
from sqlalchemy.orm import Mapped, mapped_column, relationship

from app.models.artifact import Artifact
from app.models.base import Base, UTCDateTime, new_id, utcnow

JobStatus = Literal["queued", "running", "cancelling", "succeeded", "failed", "cancelled"]
JOB_STATUSES: tuple[str, ...] = ("queued", "running", "cancelling", "succeeded", "failed", "cancelled")
ACTIVE_STATUSES: tuple[str, ...] = ("queued", "running", "cancelling")
FINISHED_STATUSES: tuple[str, ...] = ("succeeded", "failed", "cancelled")
LIVE_SQL = "status IN ('queued', 'running', 'cancelling')"  # ACTIVE_STATUSES, as an index predicate


class Job(Base):
    __tablename__ = "jobs"
    __table_args__ = (
        CheckConstraint(
            "status IN ('queued', 'running', 'cancelling', 'succeeded', 'failed', 'cancelled')", name="status"
        ),
        UniqueConstraint("tenant_id", "idempotency_key", name="uq_jobs_tenant_id_idempotency_key"),
        # The worker's reconciler looks for queued jobs that were never dispatched, or whose lease expired.
        Index("ix_jobs_status", "status"),
        # ... and reads them oldest first: the live jobs in id order, however many finished ones (0007).
        Index("ix_jobs_live_id", "id", postgresql_where=text(LIVE_SQL), sqlite_where=text(LIVE_SQL)),
        # A tenant's list, newest first (with a status filter: the second), read in index order without a
        # sort; the second also counts the tenant's live jobs at submission (migration 0006).
        Index("ix_jobs_tenant_id_id", "tenant_id", "id"),
        Index("ix_jobs_tenant_id_status_id", "tenant_id", "status", "id"),
    )

    id: Mapped[str] = mapped_column(String(40), primary_key=True, default=lambda: new_id("job_"))
    tenant_id: Mapped[str] = mapped_column(String(64))  # indexed with id: see __table_args__
    status: Mapped[str] = mapped_column(String(16), default="queued")
    # The submitted body, normalised (JobCreate.model_dump(by_alias=True)); file ids, not paths.
    spec: Mapped[dict[str, Any]] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, onupdate=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    # {epoch, epochs, step, steps, fraction, eta_seconds}
    progress: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    # latest scalars while running, final ones (and the report summary) once finished
    metrics: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    # {code, message, param} when failed
    error: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    attempt: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    lease_expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    worker_id: Mapped[str | None] = mapped_column(String(255))
    cancel_requested: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    # Set when the Celery message was sent; NULL means the reconciler must (re)send it.
    dispatched_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    idempotency_key: Mapped[str | None] = mapped_column(String(255))
    request_hash: Mapped[str | None] = mapped_column(String(64))
    # Wall-clock seconds the job may train, the tenant's limit when it was submitted (migration 0003): the
    # worker stops the engine child past it and fails the job as `time_budget_exceeded`.
    time_budget_seconds: Mapped[int | None] = mapped_column(Integer)
    # The job's MLflow run (migration 0004) when DISTILLERY_MLFLOW_TRACKING_URI is set: a resumed attempt
    # continues the same run.
    mlflow_run_id: Mapped[str | None] = mapped_column(String(64))

    # Every JobRead lists its artifacts: loaded with the jobs in one extra query per batch (selectin), or
    # joined into the job's own query where one job is read (jobs.repository.get).
    artifacts: Mapped[list[Artifact]] = relationship(lazy="selectin", order_by=Artifact.name, viewonly=True)

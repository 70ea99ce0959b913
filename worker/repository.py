"""All the worker's SQL: claiming a job, syncing a running job, finishing it, and what the reconciler asks.

Every write to a running job is *fenced* by (job id, worker id, attempt): a worker that lost its lease (it
stalled past `lease_expires_at` and another worker took the job over) finds its UPDATE matching no row and
stops, instead of overwriting the new owner's state. Times are passed in, never read from the database
clock, so the same statements run on Postgres and SQLite.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, and_, delete, func, insert, literal, literal_column, or_, select, tuple_, update
from sqlalchemy.orm import Session

from app.models import ACTIVE_STATUSES, Artifact, Job, JobEvent, JobMetric, UTCDateTime
from app.webhooks.outbox import record_job_event

RUNNING = ("running", "cancelling")


@dataclass(frozen=True)
class ClaimedJob:
    """What the supervisor needs of the job it now owns."""

    id: str
    tenant_id: str
    attempt: int
    worker_id: str
    spec: dict[str, Any]
    metrics: dict[str, Any]
    cancel_requested: bool
    started_at: datetime | None = None  # the first attempt's start: the time budget counts from there
    time_budget_seconds: int | None = None  # the tenant's job time budget when the job was accepted


@dataclass
class EventRow:
    type: str
    message: str = ""
    level: str = "info"
    data: dict[str, Any] = field(default_factory=dict)
    created_at: datetime | None = None


@dataclass
class MetricRow:
    name: str
    step: int
    epoch: int | None
    value: float
    created_at: datetime | None = None


@dataclass
class ArtifactRow:
    name: str
    bytes: int
    sha256: str
    format: str
    storage_path: str


@dataclass(frozen=True)
class SyncResult:
    owned: bool  # False: the lease was lost (or the job vanished); stop without writing anything else
    cancel_requested: bool


def _ts(value: datetime) -> ColumnElement[datetime]:
    return literal(value, type_=UTCDateTime())


def _claimable(now: datetime) -> ColumnElement[bool]:
    """Queued, or running/cancelling under a lease that has expired (its worker died or stalled)."""
    return or_(Job.status == "queued", and_(Job.status.in_(RUNNING), Job.lease_expires_at < now))


def claim_job(
    session: Session, *, job_id: str, worker_id: str, now: datetime, lease_seconds: float, max_attempts: int
) -> ClaimedJob | None:
    """Take the job with ONE conditional UPDATE; None if it is not claimable (a duplicate message, a live
    lease, a finished job, or no attempts left). Commits."""
    stmt = (
        update(Job)
        .where(Job.id == job_id, _claimable(now), Job.attempt < max_attempts)
        .values(
            # queued -> running; a job taken over keeps its status (a cancelling one stays cancelling, so
            # the new owner finishes the cancel instead of training).
            status=func.coalesce(func.nullif(Job.status, "queued"), "running"),
            attempt=Job.attempt + 1,
            worker_id=worker_id,
            lease_expires_at=now + timedelta(seconds=lease_seconds),
            started_at=func.coalesce(Job.started_at, _ts(now)),
            updated_at=now,
        )
        .returning(
            Job.id,
            Job.tenant_id,
            Job.attempt,
            Job.spec,
            Job.metrics,
            Job.cancel_requested,
            Job.started_at,
            Job.time_budget_seconds,
        )
        .execution_options(synchronize_session=False)
    )
    row = session.execute(stmt).one_or_none()
    if row is not None and row.started_at == now:  # started_at was NULL: queued -> running for the first time
        record_job_event(session, job_id=row.id, tenant_id=row.tenant_id, status="running", now=now)
    session.commit()
    if row is None:
        return None
    return ClaimedJob(
        id=row.id,
        tenant_id=row.tenant_id,
        attempt=row.attempt,
        worker_id=worker_id,
        spec=row.spec,
        metrics=dict(row.metrics or {}),
        cancel_requested=bool(row.cancel_requested),
        started_at=row.started_at,
        time_budget_seconds=row.time_budget_seconds,
    )


def fail_if_exhausted(session: Session, *, job_id: str, now: datetime, max_attempts: int) -> bool:
    """Fail a claimable job that has used all its attempts (a crash loop); True if it was. Commits.

    One that was being cancelled is simply cancelled: that is what its user asked for."""
    exhausted = and_(Job.id == job_id, _claimable(now), Job.attempt >= max_attempts)
    cancel = (
        update(Job)
        .where(exhausted, Job.cancel_requested.is_(True))
        .values(status="cancelled", finished_at=now, updated_at=now, lease_expires_at=None, worker_id=None)
        .returning(Job.tenant_id)
        .execution_options(synchronize_session=False)
    )
    cancelled = session.execute(cancel).one_or_none()
    if cancelled is not None:
        _insert_events(session, job_id, [EventRow("cancelled", "the job was cancelled")], now)
        record_job_event(session, job_id=job_id, tenant_id=cancelled.tenant_id, status="cancelled", now=now)
        session.commit()
        return True
    message = f"the job was started {max_attempts} times without finishing; giving up"
    stmt = (
        update(Job)
        .where(exhausted)
        .values(
            status="failed",
            error={"code": "too_many_attempts", "message": message, "param": None},
            finished_at=now,
            updated_at=now,
            lease_expires_at=None,
            worker_id=None,
        )
        .returning(Job.tenant_id)
        .execution_options(synchronize_session=False)
    )
    failed = session.execute(stmt).one_or_none()
    if failed is not None:
        _insert_events(session, job_id, [EventRow("failed", message, "error", {"code": "too_many_attempts"})], now)
        record_job_event(session, job_id=job_id, tenant_id=failed.tenant_id, status="failed", now=now)
    session.commit()
    return failed is not None


def _fence(job: ClaimedJob) -> ColumnElement[bool]:
    return and_(Job.id == job.id, Job.worker_id == job.worker_id, Job.attempt == job.attempt, Job.status.in_(RUNNING))


def sync_running_job(
    session: Session,
    job: ClaimedJob,
    *,
    now: datetime,
    progress: dict[str, Any] | None = None,
    metrics: dict[str, Any] | None = None,
    lease_until: datetime | None = None,
    events: list[EventRow] | None = None,
    metric_rows: list[MetricRow] | None = None,
) -> SyncResult:
    """One transaction: write what the run produced since the last call, renew the lease if asked, and
    read the cancel flag. Nothing is written when the lease was lost. Commits."""
    values: dict[str, Any] = {}
    if progress is not None:
        values["progress"] = progress
    if metrics is not None:
        values["metrics"] = metrics
    if lease_until is not None:
        values["lease_expires_at"] = lease_until
    if values or events or metric_rows:
        values["updated_at"] = now
        stmt = (
            update(Job)
            .where(_fence(job))
            .values(**values)
            .returning(Job.cancel_requested)
            .execution_options(synchronize_session=False)
        )
        row = session.execute(stmt).one_or_none()
    else:
        row = session.execute(select(Job.cancel_requested).where(_fence(job))).one_or_none()
    if row is None:
        session.rollback()
        return SyncResult(owned=False, cancel_requested=False)
    _insert_events(session, job.id, events or [], now)
    _insert_metrics(session, job.id, metric_rows or [], now)
    session.commit()
    return SyncResult(owned=True, cancel_requested=bool(row.cancel_requested))


def finish_job(
    session: Session,
    job: ClaimedJob,
    *,
    now: datetime,
    status: str,
    error: dict[str, Any] | None = None,
    progress: dict[str, Any] | None = None,
    metrics: dict[str, Any] | None = None,
    artifacts: list[ArtifactRow] | None = None,
    events: list[EventRow] | None = None,
    metric_rows: list[MetricRow] | None = None,
) -> bool:
    """Set the final status and everything that goes with it in one transaction; False if the lease was
    lost (the new owner decides). Commits."""
    values: dict[str, Any] = {
        "status": status,
        "error": error,
        "finished_at": now,
        "updated_at": now,
        "lease_expires_at": None,
    }
    if progress is not None:
        values["progress"] = progress
    if metrics is not None:
        values["metrics"] = metrics
    stmt = update(Job).where(_fence(job)).values(**values).returning(Job.id)
    if session.execute(stmt.execution_options(synchronize_session=False)).one_or_none() is None:
        session.rollback()
        return False
    _insert_events(session, job.id, events or [], now)
    _insert_metrics(session, job.id, metric_rows or [], now)
    record_job_event(session, job_id=job.id, tenant_id=job.tenant_id, status=status, now=now)
    if artifacts:
        # A previous attempt never gets this far (the rows are written with the final status), but a
        # re-run of the same job directory must not trip over unique (job_id, name).
        session.execute(delete(Artifact).where(Artifact.job_id == job.id))
        session.execute(
            insert(Artifact),
            [
                {
                    "job_id": job.id,
                    "tenant_id": job.tenant_id,
                    "name": a.name,
                    "bytes": a.bytes,
                    "sha256": a.sha256,
                    "format": a.format,
                    "storage_path": a.storage_path,
                    "created_at": now,
                }
                for a in artifacts
            ],
        )
    session.commit()
    return True


def requeue_job(
    session: Session, job: ClaimedJob, *, now: datetime, events: list[EventRow], count_attempt: bool = False
) -> bool:
    """Give the job back; its checkpoint is on disk. dispatched_at NULL makes the reconciler send it again.

    A worker shutting down does not count the attempt against the job; a training child that died (an
    OOM kill) does (`count_attempt`), so a job that kills its child every time stops at max_attempts.
    A cancel requested meanwhile is kept: the next claim cancels instead of training. Commits."""
    stmt = (
        update(Job)
        .where(_fence(job))
        .values(
            status="queued",
            attempt=Job.attempt if count_attempt else Job.attempt - 1,
            worker_id=None,
            lease_expires_at=None,
            dispatched_at=None,
            updated_at=now,
        )
        .returning(Job.id)
        .execution_options(synchronize_session=False)
    )
    if session.execute(stmt).one_or_none() is None:
        session.rollback()
        return False
    _insert_events(session, job.id, events, now)
    session.commit()
    return True


def _insert_events(session: Session, job_id: str, events: list[EventRow], now: datetime) -> None:
    if events:
        session.execute(
            insert(JobEvent),
            [
                {
                    "job_id": job_id,
                    "created_at": e.created_at or now,
                    "level": e.level,
                    "type": e.type,
                    "message": e.message,
                    "data": e.data,
                }
                for e in events
            ],
        )


def _insert_metrics(session: Session, job_id: str, rows: list[MetricRow], now: datetime) -> None:
    """Write metric rows keyed by (name, step, epoch), the last value winning: a batch retried after the
    database came back, or the epochs an attempt resumed from its checkpoint trains again, are stored once."""
    latest = {(m.name, m.step, -1 if m.epoch is None else m.epoch): m for m in rows}
    rows = list(latest.values())
    if rows:
        key = tuple_(JobMetric.name, JobMetric.step, func.coalesce(JobMetric.epoch, -1))
        session.execute(delete(JobMetric).where(JobMetric.job_id == job_id, key.in_(list(latest))))
        session.execute(
            insert(JobMetric),
            [
                {
                    "job_id": job_id,
                    "name": m.name,
                    "step": m.step,
                    "epoch": m.epoch,
                    "value": m.value,
                    "created_at": m.created_at or now,
                }
                for m in rows
            ],
        )


def metric_keys(session: Session, *, job_id: str) -> set[tuple[str, int, int | None]]:
    """(name, step, epoch) of every metric row stored for the job."""
    rows = session.execute(select(JobMetric.name, JobMetric.step, JobMetric.epoch).where(JobMetric.job_id == job_id))
    keys = {(name, step, epoch) for name, step, epoch in rows}
    session.rollback()
    return keys


def add_event(session: Session, job_id: str, event: EventRow, *, now: datetime) -> None:
    """Append one event outside a run (the reconciler's notes). Commits."""
    _insert_events(session, job_id, [event], now)
    session.commit()


# --- the reconciler's questions -------------------------------------------------------------------------
#
# Statuses are written into these statements as literals, never bound: a prepared statement's generic
# plan (made without the parameter values, which psycopg may use from its 6th run on a connection) then
# still knows that it reads the few live jobs, through ix_jobs_status or the index of the live jobs in id
# order (ix_jobs_live_id, migration 0007). With the statuses bound it walked the primary key of every job
# ever run: 0.7-0.9 s at 1M jobs (bench/scale_explain.py --only reconciler).


def _status_in(*statuses: str) -> ColumnElement[bool]:
    return Job.status.in_([literal_column(f"'{status}'") for status in statuses])


@dataclass(frozen=True)
class DispatchWindow:
    now: datetime
    stale_before: datetime  # a message sent (or seen waiting in the queue) before this may have been lost
    fresh_after: datetime  # a never-dispatched job created after this is left to the API's own send
    max_attempts: int


@dataclass(frozen=True)
class DueJob:
    id: str
    waiting: bool  # queued with a message sent long ago: it may still be in the queue, behind other jobs


def _needs_dispatch(w: DispatchWindow) -> ColumnElement[bool]:
    """A job whose Celery message is missing or may have been lost.

    - queued and never dispatched (the broker was down at submission, or the job was given back), once it
      is a few seconds old so the API's own send after commit is not doubled;
    - queued with a message sent long ago: lost with a broker that restarted empty, or still waiting behind
      other jobs (the reconciler asks the broker which, see worker/broker_queue.py);
    - running/cancelling with an expired lease (its worker died) and not re-sent since the lease expired:
      another worker takes it over and resumes from the checkpoint.
    """
    never_sent = and_(Job.dispatched_at.is_(None), Job.created_at < w.fresh_after)
    sent_long_ago = Job.dispatched_at < w.stale_before
    queued = and_(_status_in("queued"), or_(never_sent, sent_long_ago))
    orphaned = and_(
        _status_in(*RUNNING),
        Job.lease_expires_at < w.now,
        Job.attempt < w.max_attempts,
        or_(Job.dispatched_at.is_(None), Job.dispatched_at < Job.lease_expires_at, sent_long_ago),
    )
    # The first term is the OR's arms' statuses together, as ix_jobs_live_id's predicate says them: Postgres
    # does not see that the OR implies it, and the index would not serve the query.
    return and_(_status_in(*ACTIVE_STATUSES), or_(queued, orphaned))


def jobs_needing_dispatch(session: Session, window: DispatchWindow, *, limit: int) -> list[DueJob]:
    query = select(Job.id, Job.status, Job.dispatched_at).where(_needs_dispatch(window)).order_by(Job.id).limit(limit)
    rows = session.execute(query).all()
    session.rollback()
    return [DueJob(row.id, row.status == "queued" and row.dispatched_at is not None) for row in rows]


def mark_dispatched(session: Session, window: DispatchWindow, *, job_id: str) -> bool:
    """Reserve the re-send: True for exactly one of several reconcilers racing on the same job. Commits."""
    stmt = (
        update(Job)
        .where(Job.id == job_id, _needs_dispatch(window))
        .values(dispatched_at=window.now)
        .returning(Job.id)
        .execution_options(synchronize_session=False)
    )
    won = session.execute(stmt).one_or_none() is not None
    session.commit()
    return won


def mark_waiting(session: Session, *, job_ids: Collection[str], now: datetime) -> None:
    """The broker still holds these queued jobs' messages: count them as sent now, so that they are asked
    about again one interval later, and the rest of the backlog gets its turn meanwhile. Commits."""
    stmt = (
        update(Job)
        .where(Job.id.in_(job_ids), _status_in("queued"), Job.dispatched_at < now)
        .values(dispatched_at=now)
        .execution_options(synchronize_session=False)
    )
    session.execute(stmt)
    session.commit()


def clear_dispatched(session: Session, *, job_id: str, dispatched_at: datetime) -> None:
    """The re-send failed (broker still down): leave the job for the next round. Commits."""
    stmt = (
        update(Job)
        .where(Job.id == job_id, Job.dispatched_at == dispatched_at)
        .values(dispatched_at=None)
        .execution_options(synchronize_session=False)
    )
    session.execute(stmt)
    session.commit()


def exhausted_jobs(session: Session, *, now: datetime, max_attempts: int, limit: int) -> list[str]:
    """Orphaned jobs with no attempts left: the reconciler fails them instead of sending them again."""
    cond = and_(_status_in(*RUNNING), Job.lease_expires_at < now, Job.attempt >= max_attempts)
    ids = session.execute(select(Job.id).where(cond).order_by(Job.id).limit(limit)).scalars().all()
    session.rollback()
    return list(ids)


# --- MLflow (worker/mlflow_tracking.py) -----------------------------------------------------------------


def mlflow_run_id(session: Session, *, job_id: str) -> str | None:
    """The MLflow run an earlier attempt of the job started, which a resumed attempt continues."""
    run_id = session.execute(select(Job.mlflow_run_id).where(Job.id == job_id)).scalar_one_or_none()
    session.rollback()
    return run_id


def set_mlflow_run_id(session: Session, job: ClaimedJob, *, run_id: str, now: datetime) -> bool:
    """Record the job's MLflow run as soon as it exists; False if the lease was lost. Commits."""
    stmt = (
        update(Job)
        .where(_fence(job))
        .values(mlflow_run_id=run_id, updated_at=now)  # updated_at: the job's ETag changes with it
        .returning(Job.id)
        .execution_options(synchronize_session=False)
    )
    owned = session.execute(stmt).one_or_none() is not None
    session.commit()
    return owned

"""All SQL on `jobs`, `job_events` and `job_metrics`. Every job query is scoped to one tenant.

A new job's write also reads its tenant's limits (`tenants`) and live jobs (`tenant_live_jobs`, which
triggers keep): the slot check needs them in the same round trip (write_new_job)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple, cast

from psycopg.types.json import Json
from sqlalchemy import Connection, Select, Table, and_, bindparam, func, insert, or_, select, update
from sqlalchemy.dialects import sqlite
from sqlalchemy.orm import Session, joinedload, make_transient_to_detached
from sqlalchemy.orm.attributes import set_committed_value

from app.db import driver_connection
from app.models import ACTIVE_STATUSES, Artifact, Job, JobEvent, JobMetric, Tenant, TenantLiveJobs, UTCDateTime

# A hot query (every read of a job's events, metrics or artifacts goes through it), built once: building a
# statement and computing its cache key was a third of the CPU the read took. GET /v1/jobs/{id} has its
# own, leaner read below.
_GET = (
    select(Job)
    .options(joinedload(Job.artifacts))
    .where(Job.tenant_id == bindparam("tenant"), Job.id == bindparam("job_id"))
)


def get(session: Session, *, tenant: str, job_id: str) -> Job | None:
    """The job and its artifacts in one round trip (a join; the relationship's own selectin is a second query)."""
    return session.scalars(_GET, {"tenant": tenant, "job_id": job_id}).unique().one_or_none()


# What JobRead shows of a job and of each artifact: a Core query (no ORM objects to build) of only those
# columns, the artifacts joined in, one row per artifact (one row with NULLs when there is none).
_READ_JOB_COLUMNS = (
    "id", "status", "created_at", "updated_at", "started_at", "finished_at", "spec", "progress", "metrics",
    "error", "attempt", "cancel_requested", "time_budget_seconds", "mlflow_run_id",
)  # fmt: skip
_READ_ARTIFACT_COLUMNS = ("name", "bytes", "sha256", "format")
_READ = (
    select(
        *(Job.__table__.c[name] for name in _READ_JOB_COLUMNS),
        *(Artifact.__table__.c[name] for name in _READ_ARTIFACT_COLUMNS),
    )
    .select_from(Job.__table__.outerjoin(Artifact.__table__, Artifact.job_id == Job.id))
    .where(Job.tenant_id == bindparam("tenant"), Job.id == bindparam("job_id"))
    .order_by(Artifact.name)
)


def read(connection: Connection, *, tenant: str, job_id: str) -> dict[str, Any] | None:
    """The job as JobRead's fields ({column: value}, `artifacts` a list of {column: value}), in one statement."""
    rows = _rows(connection, _READ, {"tenant": tenant, "job_id": job_id})
    if not rows:
        return None
    width = len(_READ_JOB_COLUMNS)
    job = dict(zip(_READ_JOB_COLUMNS, rows[0][:width], strict=True))
    job["artifacts"] = [
        dict(zip(_READ_ARTIFACT_COLUMNS, row[width:], strict=True)) for row in rows if row[width] is not None
    ]
    return job


_UTC = UTCDateTime()
_DRIVER_QUERIES: dict[Select[Any], tuple[str, list[int]]] = {}  # statement -> (its SQL, its UTCDateTime columns)


def _rows(connection: Connection, statement: Select[Any], params: dict[str, Any]) -> Sequence[Sequence[Any]]:
    """The rows of one of the reads above. On Postgres straight from psycopg's cursor: SQLAlchemy's execution
    and result machinery took more CPU than psycopg itself (docs/BENCHMARKS.md), and psycopg decodes these
    columns as SQLAlchemy would (JSON, timestamptz), but for UTCDateTime's conversion to UTC, redone here.
    A failed read is run again through SQLAlchemy, which tells a dead connection from a bad statement (and
    invalidates the pool, for app.db.Reads to retry) and raises its own errors, which the 503 handler knows.
    """
    if connection.dialect.name != "postgresql":
        return connection.execute(statement, params).all()
    if statement not in _DRIVER_QUERIES:
        utc = [i for i, column in enumerate(statement.selected_columns) if isinstance(column.type, UTCDateTime)]
        _DRIVER_QUERIES[statement] = (str(statement.compile(dialect=connection.dialect)), utc)
    sql, utc = _DRIVER_QUERIES[statement]
    try:
        with connection.connection.driver_connection.cursor() as cursor:  # type: ignore[union-attr]
            cursor.execute(sql, params)
            rows: list[Any] = cursor.fetchall()
    except connection.dialect.loaded_dbapi.Error:
        return connection.execute(statement, params).all()
    for row_index, row in enumerate(rows):
        values = list(row)
        for i in utc:
            values[i] = _UTC.process_result_value(values[i], connection.dialect)
        rows[row_index] = values
    return rows


def statuses(session: Session, *, job_ids: Sequence[str]) -> dict[str, str]:
    """{job id: status} of the jobs that exist (not tenant-scoped: the event stream checked the tenant)."""
    rows = session.execute(select(Job.id, Job.status).where(Job.id.in_(job_ids))).all()
    return {job_id: status for job_id, status in rows}


def events_after(session: Session, *, cursors: dict[str, int], limit: int) -> Sequence[JobEvent]:
    """The events of several jobs, each after its own cursor, in id order: one query for all watchers."""
    condition = or_(*(and_(JobEvent.job_id == job_id, JobEvent.id > after) for job_id, after in cursors.items()))
    return session.scalars(select(JobEvent).where(condition).order_by(JobEvent.id).limit(limit)).all()


_ID_BY_KEY = select(Job.id).where(Job.tenant_id == bindparam("tenant"), Job.idempotency_key == bindparam("key"))


def get_by_idempotency_key(session: Session, *, tenant: str, key: str) -> Job | None:
    """The tenant's job with this Idempotency-Key. Asked at every submission that has a key, and nearly always
    none: so a prebuilt one-column query first, and the job (with its artifacts) only when there is one."""
    # On the session's connection (same transaction): the Session's own execute costs more than the query.
    job_id = session.connection().execute(_ID_BY_KEY, {"tenant": tenant, "key": key}).scalar_one_or_none()
    return None if job_id is None else get(session, tenant=tenant, job_id=job_id)


def list_page(session: Session, *, tenant: str, limit: int, after: str | None, status: str | None) -> Sequence[Job]:
    """Newest first; `limit + 1` rows so the caller can tell whether there is more."""
    query = select(Job).where(Job.tenant_id == tenant)
    if status is not None:
        query = query.where(Job.status == status)
    if after is not None:
        query = query.where(Job.id < after)
    return session.scalars(query.order_by(Job.id.desc()).limit(limit + 1)).all()


def list_active(session: Session, *, tenant: str) -> Sequence[Job]:
    return session.scalars(select(Job).where(Job.tenant_id == tenant, Job.status.in_(ACTIVE_STATUSES))).all()


def add(session: Session, job: Job) -> Job:
    session.add(job)
    session.flush()
    return job


# The columns a new job is written with; the others start NULL, and time_budget_seconds is the tenant's.
_NEW_JOB_COLUMNS = (
    "id", "tenant_id", "status", "spec", "created_at", "updated_at", "progress", "metrics", "attempt",
    "cancel_requested", "idempotency_key", "request_hash", "dispatched_at",
)  # fmt: skip
_JSON_COLUMNS = ("spec", "progress", "metrics")
_LIMIT_COLUMNS = ("max_concurrent_jobs", "max_storage_bytes", "max_upload_bytes", "job_time_budget_seconds")


class TenantRow(NamedTuple):
    """The tenant's limit overrides, as read (and locked) with its new job."""

    max_concurrent_jobs: int | None
    max_storage_bytes: int | None
    max_upload_bytes: int | None
    job_time_budget_seconds: int | None


@dataclass(frozen=True)
class NewJobWrite:
    """What writing a new job found. `inserted` False: another job of the tenant has its Idempotency-Key, and
    nothing was written. Else `tenant` is the tenant's row (None if it has none), and `live_jobs` the tenant's
    queued and running jobs, the new one included: its counter row (migration 0009), which the INSERT's
    trigger has locked until the transaction ends, so no other submission of the tenant can pass it meanwhile."""

    inserted: bool
    tenant: TenantRow | None = None
    live_jobs: int = 0


# Postgres: two statements sent in one round trip (psycopg's pipeline; the server runs them in order):
# 1. the job with its `queued` event, unless its key is taken (ON CONFLICT, no savepoint), its time budget the
#    tenant's override or the default. Its trigger adds one to the tenant's live jobs, taking that row's lock;
_PG_INSERT_JOB = f"""
WITH job AS (
    INSERT INTO jobs ({", ".join(_NEW_JOB_COLUMNS)}, time_budget_seconds)
    VALUES ({", ".join(f"%({name})s" for name in _NEW_JOB_COLUMNS)},
            coalesce((SELECT job_time_budget_seconds FROM tenants WHERE id = %(tenant_id)s::varchar),
                     %(default_time_budget)s))
    ON CONFLICT (tenant_id, idempotency_key) DO NOTHING
    RETURNING id, time_budget_seconds
), event AS (
    INSERT INTO job_events (job_id, created_at, level, type, message, data)
    SELECT id, %(created_at)s, 'info', %(event_type)s, %(event_message)s, '{{}}' FROM job
)
SELECT time_budget_seconds FROM job
"""
# 2. the tenant's limits (its row, if any) and that count, as it stands after the INSERT.
_PG_LIMITS_AND_LIVE = f"""
SELECT tenant.id, {", ".join(f"tenant.{name}" for name in _LIMIT_COLUMNS)},
       (SELECT live_jobs FROM tenant_live_jobs WHERE tenant_id = %(tenant_id)s::varchar)
FROM (VALUES (1)) AS one LEFT JOIN tenants AS tenant ON tenant.id = %(tenant_id)s::varchar
"""
_INSERT_EVENT = insert(cast(Table, JobEvent.__table__))
_INSERTS: dict[str, Any] = {}


def write_new_job(
    session: Session, job: Job, *, default_time_budget: int, event_type: str, event_message: str
) -> NewJobWrite:
    """Write a new job (every column of `_NEW_JOB_COLUMNS` set on `job`) and its first event, then read its
    tenant's limits and live jobs (see NewJobWrite). On Postgres that is one round trip; elsewhere (SQLite,
    one process) the same steps one by one. When written, `job` joins the session as if loaded (no flush;
    its artifacts known to be none, so its JobRead queries nothing)."""
    params: dict[str, Any] = {name: getattr(job, name) for name in _NEW_JOB_COLUMNS}
    params.update(default_time_budget=default_time_budget, event_type=event_type, event_message=event_message)
    if session.get_bind().dialect.name == "postgresql":
        budget, written = _write_in_pipeline(session, params)
    else:
        budget, written = _write_one_by_one(session, params)
    if budget is not None:
        _attach_as_loaded(session, job, time_budget_seconds=budget)
    return written


def _write_in_pipeline(session: Session, params: dict[str, Any]) -> tuple[int | None, NewJobWrite]:
    for name in _JSON_COLUMNS:
        params[name] = Json(params[name])
    with driver_connection(session) as connection:
        insert, read = connection.cursor(), connection.cursor()
        with connection.pipeline():  # sent together; one sync at the end of the block
            insert.execute(_PG_INSERT_JOB, params)
            read.execute(_PG_LIMITS_AND_LIVE, params)
        inserted, limits = insert.fetchone(), read.fetchone()
        insert.close()
        read.close()
    if inserted is None:
        return None, NewJobWrite(inserted=False)
    assert limits is not None  # one row, always
    tenant_id, *overrides, live = limits
    row = None if tenant_id is None else TenantRow(*overrides)
    return int(inserted[0]), NewJobWrite(inserted=True, tenant=row, live_jobs=int(live or 0))


def _write_one_by_one(session: Session, params: dict[str, Any]) -> tuple[int | None, NewJobWrite]:
    budget = session.execute(_sqlite_insert_job(), params).scalar_one_or_none()
    if budget is None:
        return None, NewJobWrite(inserted=False)
    event = {"type": params["event_type"], "message": params["event_message"], "level": "info", "data": {}}
    session.execute(_INSERT_EVENT, {"job_id": params["id"], **event})
    tenant = session.get(Tenant, params["tenant_id"])
    row = None if tenant is None else TenantRow(*(getattr(tenant, name) for name in _LIMIT_COLUMNS))
    live = live_jobs(session, tenant=params["tenant_id"])
    return int(budget), NewJobWrite(inserted=True, tenant=row, live_jobs=live)


_LIVE_JOBS = select(TenantLiveJobs.live_jobs).where(TenantLiveJobs.tenant_id == bindparam("tenant"))


def live_jobs(session: Session, *, tenant: str) -> int:
    """How many of the tenant's jobs are queued or running: its counter row, kept by triggers (migration 0009),
    one row whatever the count (counting the jobs took one index entry per live job)."""
    return int(session.connection().scalar(_LIVE_JOBS, {"tenant": tenant}) or 0)


def _sqlite_insert_job() -> Any:
    """SQLite's INSERT of a new job (Postgres sends _PG_INSERT_JOB), built once: its cache key is costly."""
    if "sqlite" not in _INSERTS:
        table = cast(Table, Job.__table__)
        _INSERTS["sqlite"] = (
            sqlite.insert(table)
            .values(
                **{name: bindparam(name, type_=table.c[name].type) for name in _NEW_JOB_COLUMNS},
                time_budget_seconds=func.coalesce(
                    select(Tenant.job_time_budget_seconds).where(Tenant.id == bindparam("tenant_id")).scalar_subquery(),
                    bindparam("default_time_budget"),
                ),
            )
            .on_conflict_do_nothing(index_elements=["tenant_id", "idempotency_key"])
            .returning(table.c.time_budget_seconds)
        )
    return _INSERTS["sqlite"]


def _attach_as_loaded(session: Session, job: Job, *, time_budget_seconds: int) -> None:
    job.time_budget_seconds = time_budget_seconds
    for name in ("started_at", "finished_at", "error", "lease_expires_at", "worker_id"):
        setattr(job, name, None)
    job.mlflow_run_id = None
    set_committed_value(job, "artifacts", [])  # a new job has none: its JobRead must not query them
    make_transient_to_detached(job)  # as though just loaded: persistent once added, no INSERT of its own
    session.add(job)


def transition(session: Session, job: Job, *, from_status: str, **values: Any) -> bool:
    """`UPDATE jobs SET … WHERE id = … AND status = from_status`: False if someone (the worker) moved it first.

    The worker claims with the same kind of conditional UPDATE, so a cancel and a claim never both win.
    """
    result = session.execute(
        update(Job)
        .where(Job.id == job.id, Job.status == from_status)
        .values(**values)
        .execution_options(synchronize_session=False)
    )
    session.refresh(job)
    return bool(getattr(result, "rowcount", 0) == 1)


def add_event(
    session: Session, *, job_id: str, type: str, message: str, level: str = "info", data: dict[str, Any] | None = None
) -> JobEvent:
    event = JobEvent(job_id=job_id, type=type, message=message, level=level, data=data or {})
    session.add(event)
    session.flush()
    return event


def list_events(session: Session, *, job_id: str, after: int | None, limit: int) -> Sequence[JobEvent]:
    """Oldest first (a log); `limit + 1` rows."""
    query = select(JobEvent).where(JobEvent.job_id == job_id)
    if after is not None:
        query = query.where(JobEvent.id > after)
    return session.scalars(query.order_by(JobEvent.id).limit(limit + 1)).all()


def add_metric(
    session: Session, *, job_id: str, name: str, step: int, value: float, epoch: int | None = None
) -> JobMetric:
    metric = JobMetric(job_id=job_id, name=name, step=step, epoch=epoch, value=value)
    session.add(metric)
    session.flush()
    return metric


def list_metrics(
    session: Session, *, job_id: str, name: str | None, after: int | None, limit: int
) -> Sequence[JobMetric]:
    """In recording order (id); `limit + 1` rows."""
    query = select(JobMetric).where(JobMetric.job_id == job_id)
    if name is not None:
        query = query.where(JobMetric.name == name)
    if after is not None:
        query = query.where(JobMetric.id > after)
    return session.scalars(query.order_by(JobMetric.id).limit(limit + 1)).all()

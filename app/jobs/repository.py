"""All SQL on `jobs`, `job_events` and `job_metrics`. Every job query is scoped to one tenant."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, cast

from sqlalchemy import Connection, Select, Table, and_, bindparam, func, insert, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session, joinedload, make_transient_to_detached
from sqlalchemy.orm.attributes import set_committed_value

from app.models import ACTIVE_STATUSES, Artifact, Job, JobEvent, JobMetric, Tenant, UTCDateTime

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


_COUNT_ACTIVE = (
    select(func.count()).select_from(Job).where(Job.tenant_id == bindparam("tenant"), Job.status.in_(ACTIVE_STATUSES))
)


def count_active(session: Session, *, tenant: str) -> int:
    """How many of the tenant's jobs are queued or running: one count on (tenant_id, status, id), no rows loaded
    (loading them made a burst of submissions quadratic, docs/BENCHMARKS.md); the statement built once."""
    return int(session.connection().scalar(_COUNT_ACTIVE, {"tenant": tenant}) or 0)  # 160 µs CPU, not 240


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
_INSERTS: dict[str, Any] = {}  # dialect name -> the statement, built once (its cache key is costly)


def _insert_new_job(dialect: str) -> Any:
    if dialect not in _INSERTS:
        table = cast(Table, Job.__table__)
        insert = postgresql.insert(table) if dialect == "postgresql" else sqlite.insert(table)
        _INSERTS[dialect] = (
            insert.values(
                **{name: bindparam(name, type_=table.c[name].type) for name in _NEW_JOB_COLUMNS},
                time_budget_seconds=func.coalesce(
                    select(Tenant.job_time_budget_seconds).where(Tenant.id == bindparam("tenant_id")).scalar_subquery(),
                    bindparam("default_time_budget"),
                ),
            )
            .on_conflict_do_nothing(index_elements=["tenant_id", "idempotency_key"])
            .returning(table.c.time_budget_seconds)
        )
    return _INSERTS[dialect]


def insert_unless_key_taken(session: Session, job: Job, *, default_time_budget: int) -> bool:
    """Write a new job (every column of `_NEW_JOB_COLUMNS` set on `job`) with its tenant's time budget (its
    row's, else `default_time_budget`), in one round trip: no ORM flush, and no savepoint to survive the
    race on its Idempotency-Key, which `ON CONFLICT DO NOTHING` settles instead. False, and nothing
    written, when another job of the tenant has that key; else `job` joins the session as if loaded."""
    params = {name: getattr(job, name) for name in _NEW_JOB_COLUMNS}
    params["default_time_budget"] = default_time_budget
    budget = session.execute(_insert_new_job(session.get_bind().dialect.name), params).scalar_one_or_none()
    if budget is None:
        return False
    job.time_budget_seconds = budget
    for name in ("started_at", "finished_at", "error", "lease_expires_at", "worker_id"):
        setattr(job, name, None)
    job.mlflow_run_id = None
    set_committed_value(job, "artifacts", [])  # a new job has none: its JobRead must not query them
    make_transient_to_detached(job)  # as though just loaded: persistent once added, no INSERT of its own
    session.add(job)
    return True


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


_INSERT_EVENT = insert(cast(Table, JobEvent.__table__))


def insert_event(session: Session, *, job_id: str, type: str, message: str) -> None:
    """`add_event` where the caller needs no JobEvent back: one INSERT, no ORM flush, no RETURNING."""
    session.execute(_INSERT_EVENT, {"job_id": job_id, "type": type, "message": message, "level": "info", "data": {}})


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

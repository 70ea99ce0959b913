"""`tenant_live_jobs` (migration 0009): the triggers keep each tenant's count of live jobs equal to a count of
its jobs, whoever writes them and however, on Postgres and on SQLite (the embedded mode); the migration counts
the jobs already there."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from alembic import command
from sqlalchemy import Engine, create_engine, delete, func, select, text, update
from sqlalchemy.orm import Session, sessionmaker

from app.migrate import alembic_config, upgrade_to_head
from app.models import ACTIVE_STATUSES, Job, TenantLiveJobs, new_id, utcnow
from tests.conftest import POSTGRES_SERVER_URL, create_database, drop_database, require_service


def add_job(session: Session, tenant: str, status: str = "queued") -> Job:
    now = utcnow()
    job = Job(id=new_id("job_"), tenant_id=tenant, status=status, spec={}, created_at=now, updated_at=now)
    session.add(job)
    session.flush()
    return job


def counted(session: Session, tenant: str) -> int:
    row = session.scalar(select(TenantLiveJobs.live_jobs).where(TenantLiveJobs.tenant_id == tenant))
    return int(row or 0)


def actual(session: Session, tenant: str) -> int:
    live = select(func.count()).select_from(Job).where(Job.tenant_id == tenant, Job.status.in_(ACTIVE_STATUSES))
    return int(session.scalar(live) or 0)


def exercise(session: Session) -> None:
    """Every kind of write a job sees, the count checked against the jobs after each."""
    tenant, other = f"t_{uuid.uuid4().hex[:8]}", f"o_{uuid.uuid4().hex[:8]}"

    def check(expected: int) -> None:
        session.flush()
        assert (counted(session, tenant), actual(session, tenant)) == (expected, expected)

    jobs = [add_job(session, tenant) for _ in range(3)]  # submissions
    check(3)
    add_job(session, tenant, status="succeeded")  # written finished (an import): not live
    add_job(session, other)  # another tenant's
    check(3)
    session.execute(update(Job).where(Job.id == jobs[0].id).values(status="running", worker_id="w1"))  # a claim
    session.execute(update(Job).where(Job.id == jobs[0].id).values(lease_expires_at=utcnow()))  # a heartbeat
    check(3)
    session.execute(update(Job).where(Job.id == jobs[0].id).values(status="cancelling"))
    check(3)
    session.execute(update(Job).where(Job.id == jobs[0].id).values(status="cancelled"))  # finished
    session.execute(update(Job).where(Job.id == jobs[1].id).values(status="failed"))
    check(1)
    session.execute(update(Job).where(Job.id == jobs[1].id).values(status="queued"))  # sent back to the queue
    check(2)
    session.execute(update(Job).where(Job.id == jobs[2].id).values(tenant_id=other))  # moved (an operator)
    check(1)
    assert (counted(session, other), actual(session, other)) == (2, 2)
    session.execute(delete(Job).where(Job.id == jobs[1].id))  # a live job deleted
    session.execute(delete(Job).where(Job.id == jobs[0].id))  # a finished one
    check(0)
    add_job(session, tenant)
    check(1)


def test_the_count_follows_every_write_on_postgres(db_session: Session) -> None:
    exercise(db_session)


def test_a_truncate_empties_the_counts(db_session: Session, tenant: str) -> None:
    add_job(db_session, tenant)
    assert counted(db_session, tenant) == 1
    db_session.execute(text("TRUNCATE jobs CASCADE"))  # in the test's transaction: rolled back after it
    assert db_session.scalar(select(func.count()).select_from(TenantLiveJobs)) == 0


def test_the_count_follows_every_write_on_sqlite(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/distillery.db"
    upgrade_to_head(url)
    engine = create_engine(url)
    try:
        with sessionmaker(bind=engine)() as session:
            exercise(session)
    finally:
        engine.dispose()


@pytest.fixture
def database_at_0008() -> Iterator[tuple[str, Engine]]:
    require_service("postgres")
    name = f"distillery_migration_{uuid.uuid4().hex[:10]}"
    create_database(name)
    url = f"{POSTGRES_SERVER_URL}/{name}"
    command.upgrade(alembic_config(url), "0008_job_change_notify")
    engine = create_engine(url)
    try:
        yield url, engine
    finally:
        engine.dispose()
        drop_database(name)


def test_the_migration_counts_the_jobs_already_there(database_at_0008: tuple[str, Engine]) -> None:
    url, engine = database_at_0008
    now = utcnow().isoformat()
    rows = [("a", "queued"), ("a", "running"), ("a", "succeeded"), ("b", "cancelling"), ("c", "failed")]
    with engine.begin() as connection:
        for n, (tenant, status) in enumerate(rows):
            connection.execute(
                text(
                    "INSERT INTO jobs (id, tenant_id, status, spec, created_at, updated_at, progress, metrics, "
                    "attempt, cancel_requested) VALUES (:id, :tenant, :status, '{}', :now, :now, '{}', '{}', 0, false)"
                ),
                {"id": f"job_{n}", "tenant": tenant, "status": status, "now": now},
            )
    upgrade_to_head(url)
    with engine.connect() as connection:
        counts = dict(connection.execute(text("SELECT tenant_id, live_jobs FROM tenant_live_jobs")).all())
    assert counts == {"a": 2, "b": 1}

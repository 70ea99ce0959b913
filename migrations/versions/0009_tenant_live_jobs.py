"""Each tenant's count of live jobs, kept by triggers, so that a submission's slot check is one row (issue #10).

A submission is refused (429) when its tenant already has `max_concurrent_jobs` jobs queued or running. It
counted them, `count(*)` over (tenant_id, status, id): one index entry per live job, so the check grew with
the jobs waiting, 1.5-3.8 ms of Postgres per submission at 6,000 queued and in proportion beyond
(docs/BENCHMARKS.md, bursts). `tenant_live_jobs` holds that count, and triggers on `jobs` keep it whoever
writes (a submission, a worker's claim and finish, a cancel, the reconciler, an operator's SQL): +1 for a
job that becomes live, -1 for one that stops being live or is deleted. The UPDATE trigger fires only
when a row crosses between live and finished, so a claim (queued -> running) or a lease renewal costs
nothing. A submission's INSERT thus takes its tenant's counter row, locked until it commits: that lock
now serialises a tenant's submissions, and the count read after it is exact.

Postgres and SQLite alike (the embedded mode uses the same rule). TRUNCATE (Postgres) empties the counts.
Existing jobs are counted once here.

Revision ID: 0009_tenant_live_jobs
Revises: 0008_job_change_notify
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009_tenant_live_jobs"
down_revision = "0008_job_change_notify"
branch_labels = None
depends_on = None

LIVE = "('queued', 'running', 'cancelling')"  # app.models.ACTIVE_STATUSES


def _add(row: str, delta: int) -> str:
    """The statement that adds `delta` to the count of `row`'s tenant (a row made at the first job)."""
    return (
        f"INSERT INTO tenant_live_jobs (tenant_id, live_jobs) VALUES ({row}.tenant_id, {delta}) "
        f"ON CONFLICT (tenant_id) DO UPDATE SET live_jobs = tenant_live_jobs.live_jobs + {delta}"
    )


POSTGRES_UP = f"""
CREATE FUNCTION count_live_jobs() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'TRUNCATE' THEN
        DELETE FROM tenant_live_jobs;
        RETURN NULL;
    END IF;
    IF TG_OP <> 'INSERT' AND OLD.status IN {LIVE} THEN
        {_add("OLD", -1)};
    END IF;
    IF TG_OP <> 'DELETE' AND NEW.status IN {LIVE} THEN
        {_add("NEW", 1)};
    END IF;
    RETURN NULL;
END $$;
CREATE TRIGGER jobs_live_inserted AFTER INSERT ON jobs
    FOR EACH ROW WHEN (NEW.status IN {LIVE}) EXECUTE FUNCTION count_live_jobs();
CREATE TRIGGER jobs_live_updated AFTER UPDATE OF status, tenant_id ON jobs
    FOR EACH ROW WHEN ((OLD.status IN {LIVE}) IS DISTINCT FROM (NEW.status IN {LIVE})
                       OR OLD.tenant_id IS DISTINCT FROM NEW.tenant_id)
    EXECUTE FUNCTION count_live_jobs();
CREATE TRIGGER jobs_live_deleted AFTER DELETE ON jobs
    FOR EACH ROW WHEN (OLD.status IN {LIVE}) EXECUTE FUNCTION count_live_jobs();
CREATE TRIGGER jobs_live_truncated AFTER TRUNCATE ON jobs
    FOR EACH STATEMENT EXECUTE FUNCTION count_live_jobs();
"""

POSTGRES_DOWN = """
DROP TRIGGER jobs_live_truncated ON jobs;
DROP TRIGGER jobs_live_deleted ON jobs;
DROP TRIGGER jobs_live_updated ON jobs;
DROP TRIGGER jobs_live_inserted ON jobs;
DROP FUNCTION count_live_jobs();
"""

# SQLite: a trigger body is statements, and its upsert needs a SELECT with a WHERE (the parser's rule).
SQLITE_UP = [
    f"""CREATE TRIGGER jobs_live_inserted AFTER INSERT ON jobs FOR EACH ROW WHEN NEW.status IN {LIVE}
    BEGIN {_add("NEW", 1)}; END""",
    f"""CREATE TRIGGER jobs_live_updated AFTER UPDATE OF status, tenant_id ON jobs FOR EACH ROW
    WHEN (OLD.status IN {LIVE}) IS NOT (NEW.status IN {LIVE}) OR OLD.tenant_id IS NOT NEW.tenant_id
    BEGIN
        UPDATE tenant_live_jobs SET live_jobs = live_jobs - 1 WHERE tenant_id = OLD.tenant_id AND OLD.status IN {LIVE};
        INSERT INTO tenant_live_jobs (tenant_id, live_jobs) SELECT NEW.tenant_id, 1 WHERE NEW.status IN {LIVE}
            ON CONFLICT (tenant_id) DO UPDATE SET live_jobs = tenant_live_jobs.live_jobs + 1;
    END""",
    f"""CREATE TRIGGER jobs_live_deleted AFTER DELETE ON jobs FOR EACH ROW WHEN OLD.status IN {LIVE}
    BEGIN UPDATE tenant_live_jobs SET live_jobs = live_jobs - 1 WHERE tenant_id = OLD.tenant_id; END""",
]
SQLITE_DOWN = ["DROP TRIGGER jobs_live_deleted", "DROP TRIGGER jobs_live_updated", "DROP TRIGGER jobs_live_inserted"]


def upgrade() -> None:
    op.create_table(
        "tenant_live_jobs",
        sa.Column("tenant_id", sa.String(length=64), nullable=False),
        sa.Column("live_jobs", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("tenant_id", name=op.f("pk_tenant_live_jobs")),
    )
    op.execute(
        f"INSERT INTO tenant_live_jobs (tenant_id, live_jobs) "
        f"SELECT tenant_id, count(*) FROM jobs WHERE status IN {LIVE} GROUP BY tenant_id"
    )
    if op.get_bind().dialect.name == "postgresql":
        op.execute(POSTGRES_UP)
    else:
        for statement in SQLITE_UP:
            op.execute(statement)


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(POSTGRES_DOWN)
    else:
        for statement in SQLITE_DOWN:
            op.execute(statement)
    op.drop_table("tenant_live_jobs")

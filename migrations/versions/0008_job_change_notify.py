"""Tell the API processes when a job changes, so they can keep its answer in memory (issue #10, polling).

`GET /v1/jobs/{id}` is what clients poll. Each API process keeps the answers it served (app/jobs/
read_cache.py) and forgets one as soon as Postgres says the job changed: these triggers send the job's id
on the channel `distillery_job_changed` (NOTIFY, delivered when the writing transaction commits) for every
change to a job row or to one of its artifacts, whoever makes it (the API, a worker, the reconciler, an
operator's SQL), except an UPDATE of only the columns no answer shows (`QUIET`). A TRUNCATE sends '*':
forget everything. Inserting a job sends nothing: no process can hold an answer for a job that did not
exist.

Postgres only: SQLite (the embedded mode) has no NOTIFY, and there the API reads every time.

Revision ID: 0008_job_change_notify
Revises: 0007_check_verdicts
"""

from __future__ import annotations

from alembic import op

revision = "0008_job_change_notify"
down_revision = "0007_check_verdicts"
branch_labels = None
depends_on = None

CHANNEL = "distillery_job_changed"  # app.jobs.read_cache.CHANNEL
# The row without the columns no answer shows and that change without the job changing: the dispatch time
# (written for every submission, in a burst a thousand a second) and the worker's lease (renewed every few
# seconds). An UPDATE that changes only these notifies nobody. A column added later notifies by default.
QUIET = "(to_jsonb({row}) - 'dispatched_at' - 'lease_expires_at' - 'worker_id')"

UPGRADE = f"""
CREATE FUNCTION notify_job_changed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'TRUNCATE' THEN
        PERFORM pg_notify('{CHANNEL}', '*');
    ELSIF TG_TABLE_NAME = 'jobs' THEN
        PERFORM pg_notify('{CHANNEL}', OLD.id);
    ELSIF TG_OP = 'DELETE' THEN
        PERFORM pg_notify('{CHANNEL}', OLD.job_id);
    ELSE
        PERFORM pg_notify('{CHANNEL}', NEW.job_id);
    END IF;
    RETURN NULL;
END $$;
CREATE TRIGGER jobs_notify_changed AFTER UPDATE ON jobs
    FOR EACH ROW WHEN ({QUIET.format(row="OLD")} IS DISTINCT FROM {QUIET.format(row="NEW")})
    EXECUTE FUNCTION notify_job_changed();
CREATE TRIGGER jobs_notify_deleted AFTER DELETE ON jobs
    FOR EACH ROW EXECUTE FUNCTION notify_job_changed();
CREATE TRIGGER jobs_notify_truncated AFTER TRUNCATE ON jobs
    FOR EACH STATEMENT EXECUTE FUNCTION notify_job_changed();
CREATE TRIGGER artifacts_notify_changed AFTER INSERT OR UPDATE OR DELETE ON artifacts
    FOR EACH ROW EXECUTE FUNCTION notify_job_changed();
CREATE TRIGGER artifacts_notify_truncated AFTER TRUNCATE ON artifacts
    FOR EACH STATEMENT EXECUTE FUNCTION notify_job_changed();
"""

DOWNGRADE = """
DROP TRIGGER artifacts_notify_truncated ON artifacts;
DROP TRIGGER artifacts_notify_changed ON artifacts;
DROP TRIGGER jobs_notify_truncated ON jobs;
DROP TRIGGER jobs_notify_deleted ON jobs;
DROP TRIGGER jobs_notify_changed ON jobs;
DROP FUNCTION notify_job_changed();
"""


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(UPGRADE)


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(DOWNGRADE)

"""Submission checks that passed, and an index of the live jobs for the reconciler (issue #10).

`check_verdicts`: a job whose check passed before is not checked again (app/checks/verdicts.py says what the
key covers; only passes are stored). For an uploaded model that check is a sandboxed interpreter of
seconds (app/probe.py), and a burst of identical submissions ran it once each.

`ix_jobs_live_id`: the live jobs (queued, running, cancelling) in id order. The reconciler asks for the
oldest live jobs that need a message (`ORDER BY id LIMIT 100`). Its statuses are now literals, so even a
prepared statement's generic plan knows it reads the few live jobs; but a plan may still walk an index in
id order and filter, stopping at the limit, which over `pk_jobs` reads every job ever run (10,000 rows at
10k jobs, 1,000,000 at 1M: 0.7-0.9 s). Over this index the same walk reads the live jobs only, whatever
the size (bench/scale_explain.py --only reconciler).

Revision ID: 0007_check_verdicts
Revises: 0006_scale_indexes
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007_check_verdicts"
down_revision = "0006_scale_indexes"
branch_labels = None
depends_on = None

UTC_DATETIME = sa.DateTime(timezone=True)  # mirrors app.models.base.UTCDateTime
LIVE = "status IN ('queued', 'running', 'cancelling')"


def upgrade() -> None:
    op.create_table(
        "check_verdicts",
        sa.Column("tenant_id", sa.String(length=64), nullable=False),
        sa.Column("key", sa.String(length=64), nullable=False),
        sa.Column("created_at", UTC_DATETIME, nullable=False),
        sa.PrimaryKeyConstraint("tenant_id", "key", name=op.f("pk_check_verdicts")),
    )
    op.create_index("ix_jobs_live_id", "jobs", ["id"], postgresql_where=sa.text(LIVE), sqlite_where=sa.text(LIVE))


def downgrade() -> None:
    op.drop_index("ix_jobs_live_id", table_name="jobs")
    op.drop_table("check_verdicts")

"""Indexes for a tenant's job list at scale (issue #10, bench/scale_explain.py).

A job list is `WHERE tenant_id = ? [AND status = ?] [AND id < ?] ORDER BY id DESC LIMIT 21`. With only
`ix_jobs_tenant_id` and the primary key, Postgres either reads the tenant's rows and sorts them all or walks
the primary key backwards past every other tenant's jobs: at 1M jobs, the list of a tenant whose jobs are
old read 994k rows (0.43 s). (tenant_id, id) gives the rows in list order, and replaces ix_jobs_tenant_id
(a prefix of it); (tenant_id, status, id) does the same for a status filter and for the tenant's count of
live jobs that every submission takes.

Revision ID: 0006_scale_indexes
Revises: 0005_webhooks
"""

from __future__ import annotations

from alembic import op

revision = "0006_scale_indexes"
down_revision = "0005_webhooks"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_jobs_tenant_id_id", "jobs", ["tenant_id", "id"])
    op.create_index("ix_jobs_tenant_id_status_id", "jobs", ["tenant_id", "status", "id"])
    op.drop_index(op.f("ix_jobs_tenant_id"), table_name="jobs")


def downgrade() -> None:
    op.create_index(op.f("ix_jobs_tenant_id"), "jobs", ["tenant_id"])
    op.drop_index("ix_jobs_tenant_id_status_id", table_name="jobs")
    op.drop_index("ix_jobs_tenant_id_id", table_name="jobs")

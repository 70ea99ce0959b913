"""Each job's MLflow run id, when the service reports to an MLflow tracking server (issue #9).

Revision ID: 0004_mlflow_run
Revises: 0003_api_keys
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004_mlflow_run"
down_revision = "0003_api_keys"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("jobs", sa.Column("mlflow_run_id", sa.String(length=64), nullable=True))


def downgrade() -> None:
    op.drop_column("jobs", "mlflow_run_id")

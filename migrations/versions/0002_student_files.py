"""Files of purpose 'student': ONNX student graphs from any framework (issue #8).

Revision ID: 0002_student_files
Revises: 0001_initial
"""

from __future__ import annotations

from alembic import op

revision = "0002_student_files"
down_revision = "0001_initial"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("files") as batch:  # batch mode: SQLite (the embedded default) rebuilds the table
        batch.drop_constraint(op.f("ck_files_purpose"), type_="check")
        batch.create_check_constraint(op.f("ck_files_purpose"), "purpose IN ('teacher', 'student', 'dataset')")


def downgrade() -> None:
    op.execute("DELETE FROM files WHERE purpose = 'student'")
    with op.batch_alter_table("files") as batch:
        batch.drop_constraint(op.f("ck_files_purpose"), type_="check")
        batch.create_check_constraint(op.f("ck_files_purpose"), "purpose IN ('teacher', 'dataset')")

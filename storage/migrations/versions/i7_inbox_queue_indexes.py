"""inbox queue indexes on human_tasks, in first-page order (issue 7, bench row 2)

Revision ID: i7_inbox_queue_indexes
Revises: 0001_initial
"""
from alembic import op


revision = "i7_inbox_queue_indexes"
down_revision = "0001_initial"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("human_tasks", schema=None) as batch_op:
        batch_op.create_index("ix_human_tasks_role_queue", ["status", "role", "created_at", "id"], unique=False,
                              postgresql_include=["assignee_id"])
        batch_op.create_index("ix_human_tasks_dept_queue", ["status", "role", "department_id", "created_at", "id"],
                              unique=False, postgresql_include=["assignee_id"])


def downgrade() -> None:
    with op.batch_alter_table("human_tasks", schema=None) as batch_op:
        batch_op.drop_index("ix_human_tasks_dept_queue")
        batch_op.drop_index("ix_human_tasks_role_queue")

"""web inbox queue indexes in its default order (due date first), issue 19 point 6 (bench row 8)

Revision ID: bench_inbox_due_indexes
Revises: 16a_contract_as_data
"""
from alembic import op

revision = "bench_inbox_due_indexes"
down_revision = "16a_contract_as_data"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("human_tasks", schema=None) as batch_op:
        batch_op.create_index("ix_human_tasks_role_due_queue", ["status", "role", "due_at", "created_at", "id"],
                              unique=False, postgresql_include=["assignee_id"])
        batch_op.create_index("ix_human_tasks_dept_due_queue",
                              ["status", "role", "department_id", "due_at", "created_at", "id"], unique=False,
                              postgresql_include=["assignee_id"])


def downgrade() -> None:
    with op.batch_alter_table("human_tasks", schema=None) as batch_op:
        batch_op.drop_index("ix_human_tasks_dept_due_queue")
        batch_op.drop_index("ix_human_tasks_role_due_queue")

"""task form drafts kept on the server per task and user

Revision ID: 19_task_drafts
Revises: 18a_service_orders
"""
import sqlalchemy as sa
from alembic import op

revision = "19_task_drafts"
down_revision = "18b_notifications_admin"
branch_labels = None
depends_on = None


def upgrade():
    op.create_table(
        "task_drafts",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("task_id", sa.Integer(), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("data", sa.JSON(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["task_id"], ["human_tasks.id"], name=op.f("fk_task_drafts_task_id_human_tasks")),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"], name=op.f("fk_task_drafts_user_id_users")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_task_drafts")),
        sa.UniqueConstraint("task_id", "user_id", name="uq_task_drafts_task_user"),
    )


def downgrade():
    op.drop_table("task_drafts")

"""notifications keep a message key and its params, so each reader sees them in their own language; users keep
the language they chose (for their e-mail and chat notifications). Old rows keep their text and show it.

Revision ID: 18c_notification_keys
Revises: bench_inbox_due_indexes
"""
import sqlalchemy as sa
from alembic import op

revision = "18c_notification_keys"
down_revision = "bench_inbox_due_indexes"
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table("notifications", schema=None) as batch_op:
        batch_op.add_column(sa.Column("message_key", sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column("params", sa.JSON(), nullable=True))
    with op.batch_alter_table("users", schema=None) as batch_op:
        batch_op.add_column(sa.Column("language", sa.String(length=8), nullable=True))


def downgrade():
    with op.batch_alter_table("users", schema=None) as batch_op:
        batch_op.drop_column("language")
    with op.batch_alter_table("notifications", schema=None) as batch_op:
        batch_op.drop_column("params")
        batch_op.drop_column("message_key")

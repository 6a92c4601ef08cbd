"""per-recipient notifications with their own read state, channels and the delivery outbox; department lead
reviewers; an index for the admin status page

Revision ID: 18b_notifications_admin
Revises: 18a_service_orders
"""
import sqlalchemy as sa
from alembic import op

revision = "18b_notifications_admin"
down_revision = "18a_service_orders"
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table("notifications", schema=None) as batch_op:
        batch_op.alter_column("item_id", existing_type=sa.Integer(), nullable=True)
        batch_op.add_column(sa.Column("settlement_id", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("comment", sa.Text(), nullable=True))
        batch_op.create_foreign_key(batch_op.f("fk_notifications_settlement_id_settlements"), "settlements",
                                    ["settlement_id"], ["id"])
    # A notification addressed to a group becomes one row per member, each with its own read state.
    op.execute(
        "INSERT INTO notifications (user_id, role, department_id, item_id, task_id, kind, message, created_at, "
        "read_at) SELECT u.id, n.role, n.department_id, n.item_id, n.task_id, n.kind, n.message, n.created_at, "
        "n.read_at FROM notifications n JOIN users u ON u.role = n.role AND u.active = true "
        "AND (n.department_id IS NULL OR u.department_id = n.department_id) WHERE n.user_id IS NULL")
    op.execute("DELETE FROM notifications WHERE user_id IS NULL")
    op.create_table(
        "notification_channels",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("owner_type", sa.String(length=16), nullable=False),
        sa.Column("owner_id", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("target", sa.String(length=500), nullable=False),
        sa.Column("enabled", sa.Boolean(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_notification_channels")),
        sa.UniqueConstraint("owner_type", "owner_id", "kind", name="uq_notification_channels_owner"),
    )
    op.create_table(
        "notification_deliveries",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("notification_id", sa.Integer(), nullable=True),
        sa.Column("channel_id", sa.Integer(), nullable=True),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("target", sa.String(length=500), nullable=False),
        sa.Column("title", sa.String(length=200), nullable=False),
        sa.Column("body", sa.Text(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("claimed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("sent_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(["notification_id"], ["notifications.id"],
                                name=op.f("fk_notification_deliveries_notification_id_notifications")),
        sa.ForeignKeyConstraint(["channel_id"], ["notification_channels.id"],
                                name=op.f("fk_notification_deliveries_channel_id_notification_channels")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_notification_deliveries")),
    )
    with op.batch_alter_table("notification_deliveries", schema=None) as batch_op:
        batch_op.create_index("ix_notification_deliveries_queue", ["status", "next_attempt_at", "id"],
                              unique=False)
    with op.batch_alter_table("departments", schema=None) as batch_op:
        batch_op.add_column(sa.Column("lead_reviewer_id", sa.Integer(), nullable=True))
        batch_op.create_foreign_key(batch_op.f("fk_departments_lead_reviewer_id_users"), "users",
                                    ["lead_reviewer_id"], ["id"])
    with op.batch_alter_table("audit_events", schema=None) as batch_op:
        batch_op.create_index("ix_audit_events_type", ["event_type", "id"], unique=False)


def downgrade():
    with op.batch_alter_table("audit_events", schema=None) as batch_op:
        batch_op.drop_index("ix_audit_events_type")
    with op.batch_alter_table("departments", schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f("fk_departments_lead_reviewer_id_users"), type_="foreignkey")
        batch_op.drop_column("lead_reviewer_id")
    with op.batch_alter_table("notification_deliveries", schema=None) as batch_op:
        batch_op.drop_index("ix_notification_deliveries_queue")
    op.drop_table("notification_deliveries")
    op.drop_table("notification_channels")
    op.execute("DELETE FROM notifications WHERE item_id IS NULL")
    with op.batch_alter_table("notifications", schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f("fk_notifications_settlement_id_settlements"), type_="foreignkey")
        batch_op.drop_column("comment")
        batch_op.drop_column("settlement_id")
        batch_op.alter_column("item_id", existing_type=sa.Integer(), nullable=False)

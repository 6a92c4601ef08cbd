"""service orders (运营服务单): requests with their letter, accepted into an item or declined

Revision ID: 18a_service_orders
Revises: 13d_sessions_anchors
"""
import sqlalchemy as sa
from alembic import op

revision = "18a_service_orders"
down_revision = "17_settlement_contract"
branch_labels = None
depends_on = None


def upgrade():
    op.create_table(
        "service_orders",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("contract_id", sa.Integer(), nullable=False),
        sa.Column("department_id", sa.Integer(), nullable=False),
        sa.Column("title", sa.String(length=300), nullable=False),
        sa.Column("description", sa.Text(), nullable=True),
        sa.Column("service_line", sa.String(length=32), nullable=True),
        sa.Column("mode", sa.String(length=16), nullable=False),
        sa.Column("channels", sa.JSON(), nullable=False),
        sa.Column("wanted_by", sa.Date(), nullable=True),
        sa.Column("filename", sa.String(length=255), nullable=False),
        sa.Column("bucket", sa.String(length=100), nullable=False),
        sa.Column("key", sa.String(length=400), nullable=False),
        sa.Column("version_id", sa.String(length=200), nullable=True),
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("media_type", sa.String(length=200), nullable=False),
        sa.Column("requested_by_id", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("decided_by_id", sa.Integer(), nullable=True),
        sa.Column("decided_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("decline_reason", sa.Text(), nullable=True),
        sa.Column("item_id", sa.Integer(), nullable=True),
        sa.ForeignKeyConstraint(["contract_id"], ["contracts.id"], name=op.f("fk_service_orders_contract_id_contracts")),
        sa.ForeignKeyConstraint(["department_id"], ["departments.id"],
                                name=op.f("fk_service_orders_department_id_departments")),
        sa.ForeignKeyConstraint(["requested_by_id"], ["users.id"], name=op.f("fk_service_orders_requested_by_id_users")),
        sa.ForeignKeyConstraint(["decided_by_id"], ["users.id"], name=op.f("fk_service_orders_decided_by_id_users")),
        sa.ForeignKeyConstraint(["item_id"], ["work_items.id"], name=op.f("fk_service_orders_item_id_work_items")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_service_orders")),
    )
    with op.batch_alter_table("service_orders", schema=None) as batch_op:
        batch_op.create_index("ix_service_orders_status", ["status", "created_at"], unique=False)
        batch_op.create_index("ix_service_orders_department", ["department_id", "created_at"], unique=False)


def downgrade():
    with op.batch_alter_table("service_orders", schema=None) as batch_op:
        batch_op.drop_index("ix_service_orders_department")
        batch_op.drop_index("ix_service_orders_status")
    op.drop_table("service_orders")

"""settlement as the contract runs it: stages, the revision clock, carried lines, contract tasks, payments

Revision ID: 17_settlement_contract
Revises: 13d_sessions_anchors
"""
import sqlalchemy as sa
from alembic import op

revision = "17_settlement_contract"
down_revision = "16b_sign_off_sheets"
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table("settlements", schema=None) as batch_op:
        batch_op.add_column(sa.Column("stage", sa.String(length=16), nullable=True))
        batch_op.add_column(sa.Column("revision_due_at", sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column("revision_late", sa.Boolean(), server_default=sa.false(), nullable=False))
        batch_op.add_column(sa.Column("other_deductions", sa.Numeric(precision=16, scale=2), nullable=True))
        batch_op.create_index("uq_settlements_contract_stage", ["contract_id", "stage"], unique=True)
    with op.batch_alter_table("settlement_lines", schema=None) as batch_op:
        batch_op.add_column(sa.Column("carried", sa.Boolean(), server_default=sa.false(), nullable=False))
    op.create_table(
        "contract_tasks",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("contract_id", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("key", sa.String(length=32), nullable=False),
        sa.Column("title", sa.String(length=200), nullable=False),
        sa.Column("settlement_id", sa.Integer(), nullable=True),
        sa.Column("period_start", sa.Date(), nullable=True),
        sa.Column("period_end", sa.Date(), nullable=True),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("due_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("submitted_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("revision_due_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("late", sa.Boolean(), server_default=sa.false(), nullable=False),
        sa.Column("narrative", sa.Text(), nullable=True),
        sa.Column("data", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["contract_id"], ["contracts.id"], name=op.f("fk_contract_tasks_contract_id_contracts")),
        sa.ForeignKeyConstraint(["settlement_id"], ["settlements.id"],
                                name=op.f("fk_contract_tasks_settlement_id_settlements")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_contract_tasks")),
        sa.UniqueConstraint("contract_id", "kind", "key", name="uq_contract_tasks_kind_key"),
    )
    op.create_table(
        "payments",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("contract_id", sa.Integer(), nullable=False),
        sa.Column("number", sa.Integer(), nullable=False),
        sa.Column("amount", sa.Numeric(precision=16, scale=2), nullable=False),
        sa.Column("paid_on", sa.Date(), nullable=False),
        sa.Column("invoice_number", sa.String(length=64), nullable=False),
        sa.Column("recorded_by_id", sa.Integer(), nullable=True),
        sa.Column("recorded_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["contract_id"], ["contracts.id"], name=op.f("fk_payments_contract_id_contracts")),
        sa.ForeignKeyConstraint(["recorded_by_id"], ["users.id"], name=op.f("fk_payments_recorded_by_id_users")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_payments")),
    )
    with op.batch_alter_table("payments", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_payments_contract_id"), ["contract_id"], unique=False)


def downgrade():
    with op.batch_alter_table("payments", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_payments_contract_id"))
    op.drop_table("payments")
    op.drop_table("contract_tasks")
    with op.batch_alter_table("settlement_lines", schema=None) as batch_op:
        batch_op.drop_column("carried")
    with op.batch_alter_table("settlements", schema=None) as batch_op:
        batch_op.drop_index("uq_settlements_contract_stage")
        batch_op.drop_column("other_deductions")
        batch_op.drop_column("revision_late")
        batch_op.drop_column("revision_due_at")
        batch_op.drop_column("stage")

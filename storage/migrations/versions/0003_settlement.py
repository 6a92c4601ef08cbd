"""settlement: settlements, their lines and notes; one reversal per ledger entry

Revision ID: 0003_settlement
Revises: 0001_initial
"""
from alembic import op
import sqlalchemy as sa


revision = "0003_settlement"
down_revision = "0001_initial"
branch_labels = None
depends_on = None


def upgrade():
    op.create_table(
        "settlements",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("contract_id", sa.Integer(), nullable=False),
        sa.Column("label", sa.String(length=100), nullable=False),
        sa.Column("period_start", sa.Date(), nullable=False),
        sa.Column("period_end", sa.Date(), nullable=False),
        sa.Column("status", sa.String(length=32), nullable=False),
        sa.Column("definition_id", sa.Integer(), nullable=False),
        sa.Column("state", sa.Text(), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("current_task", sa.String(length=64), nullable=True),
        sa.Column("current_lane", sa.String(length=32), nullable=True),
        sa.Column("round", sa.Integer(), nullable=False),
        sa.Column("assessment_score", sa.Numeric(precision=5, scale=2), nullable=True),
        sa.Column("due_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("first_submitted_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("first_reviewed_by_id", sa.Integer(), nullable=True),
        sa.Column("approved_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("approved_by_id", sa.Integer(), nullable=True),
        sa.Column("gross_amount", sa.Numeric(precision=16, scale=2), nullable=True),
        sa.Column("penalty_rate", sa.Numeric(precision=6, scale=4), nullable=True),
        sa.Column("penalty_amount", sa.Numeric(precision=16, scale=2), nullable=True),
        sa.Column("deduction_rate", sa.Numeric(precision=6, scale=4), nullable=True),
        sa.Column("deduction_amount", sa.Numeric(precision=16, scale=2), nullable=True),
        sa.Column("net_amount", sa.Numeric(precision=16, scale=2), nullable=True),
        sa.Column("created_by_id", sa.Integer(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["contract_id"], ["contracts.id"], name=op.f("fk_settlements_contract_id_contracts")),
        sa.ForeignKeyConstraint(["definition_id"], ["process_definitions.id"],
                                name=op.f("fk_settlements_definition_id_process_definitions")),
        sa.ForeignKeyConstraint(["first_reviewed_by_id"], ["users.id"],
                                name=op.f("fk_settlements_first_reviewed_by_id_users")),
        sa.ForeignKeyConstraint(["approved_by_id"], ["users.id"], name=op.f("fk_settlements_approved_by_id_users")),
        sa.ForeignKeyConstraint(["created_by_id"], ["users.id"], name=op.f("fk_settlements_created_by_id_users")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_settlements")),
    )
    op.create_index("ix_settlements_contract_status", "settlements", ["contract_id", "status"], unique=False)

    op.create_table(
        "settlement_lines",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("settlement_id", sa.Integer(), nullable=False),
        sa.Column("entry_id", sa.Integer(), nullable=False),
        sa.Column("added_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("added_by_id", sa.Integer(), nullable=True),
        sa.Column("added_reason", sa.Text(), nullable=True),
        sa.ForeignKeyConstraint(["settlement_id"], ["settlements.id"],
                                name=op.f("fk_settlement_lines_settlement_id_settlements")),
        sa.ForeignKeyConstraint(["entry_id"], ["workload_entries.id"],
                                name=op.f("fk_settlement_lines_entry_id_workload_entries")),
        sa.ForeignKeyConstraint(["added_by_id"], ["users.id"], name=op.f("fk_settlement_lines_added_by_id_users")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_settlement_lines")),
        # The rule "an entry belongs to at most one settlement", kept by the database itself.
        sa.UniqueConstraint("entry_id", name=op.f("uq_settlement_lines_entry_id")),
    )
    op.create_index("ix_settlement_lines_settlement", "settlement_lines", ["settlement_id"], unique=False)

    op.create_table(
        "settlement_notes",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("settlement_id", sa.Integer(), nullable=False),
        sa.Column("round", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("entry_id", sa.Integer(), nullable=True),
        sa.Column("text", sa.Text(), nullable=True),
        sa.Column("user_id", sa.Integer(), nullable=True),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["settlement_id"], ["settlements.id"],
                                name=op.f("fk_settlement_notes_settlement_id_settlements")),
        sa.ForeignKeyConstraint(["entry_id"], ["workload_entries.id"],
                                name=op.f("fk_settlement_notes_entry_id_workload_entries")),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"], name=op.f("fk_settlement_notes_user_id_users")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_settlement_notes")),
    )
    op.create_index("ix_settlement_notes_settlement", "settlement_notes", ["settlement_id", "id"], unique=False)

    op.create_index("uq_workload_entries_reverses_id", "workload_entries", ["reverses_id"], unique=True)


def downgrade():
    op.drop_index("uq_workload_entries_reverses_id", table_name="workload_entries")
    op.drop_index("ix_settlement_notes_settlement", table_name="settlement_notes")
    op.drop_table("settlement_notes")
    op.drop_index("ix_settlement_lines_settlement", table_name="settlement_lines")
    op.drop_table("settlement_lines")
    op.drop_index("ix_settlements_contract_status", table_name="settlements")
    op.drop_table("settlements")

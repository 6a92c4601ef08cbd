"""a whole contract as data: units, metered lines, difficulty levels; metered records, go-live dates, the
out-of-period flag and who proposed/confirmed difficulty; ledger amounts at full precision

Revision ID: 16a_contract_as_data
Revises: 19_task_drafts
"""
import sqlalchemy as sa
from alembic import op

revision = "16a_contract_as_data"
down_revision = "19_task_drafts"
branch_labels = None
depends_on = None


def _sqlite_references_off():
    """SQLite alters a column's type or adds a reference only by copying the table, and other tables refer to
    work_items and workload_entries: their references are checked at commit, not during the copy."""
    if op.get_bind().dialect.name == "sqlite":
        op.execute("PRAGMA defer_foreign_keys=ON")
        op.execute("PRAGMA foreign_keys=OFF")


def _sqlite_references_on():
    if op.get_bind().dialect.name == "sqlite":
        op.execute("PRAGMA foreign_keys=ON")


def upgrade():
    _sqlite_references_off()
    with op.batch_alter_table("service_lines", schema=None) as batch_op:
        batch_op.add_column(sa.Column("unit_code", sa.String(length=32), nullable=True))
        batch_op.add_column(sa.Column("metered", sa.Boolean(), server_default=sa.false(), nullable=False))
        batch_op.add_column(sa.Column("difficulty_levels", sa.JSON(), nullable=True))
    with op.batch_alter_table("work_items", schema=None) as batch_op:
        batch_op.add_column(sa.Column("units", sa.Numeric(precision=18, scale=4), nullable=True))
        batch_op.add_column(sa.Column("period", sa.String(length=7), nullable=True))
        batch_op.add_column(sa.Column("go_live_date", sa.Date(), nullable=True))
        batch_op.add_column(sa.Column("out_of_period", sa.Boolean(), server_default=sa.false(), nullable=False))
        batch_op.add_column(sa.Column("difficulty_proposed_by_id", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("difficulty_confirmed_by_id", sa.Integer(), nullable=True))
        batch_op.create_foreign_key(batch_op.f("fk_work_items_difficulty_proposed_by_id_users"), "users",
                                    ["difficulty_proposed_by_id"], ["id"])
        batch_op.create_foreign_key(batch_op.f("fk_work_items_difficulty_confirmed_by_id_users"), "users",
                                    ["difficulty_confirmed_by_id"], ["id"])
    with op.batch_alter_table("workload_entries", schema=None) as batch_op:
        batch_op.alter_column("units", type_=sa.Numeric(precision=18, scale=4),
                              existing_type=sa.Numeric(precision=10, scale=2), existing_nullable=False)
        batch_op.alter_column("unit_price", type_=sa.Numeric(precision=18, scale=6),
                              existing_type=sa.Numeric(precision=14, scale=2), existing_nullable=False)
        batch_op.alter_column("amount", type_=sa.Numeric(precision=22, scale=6),
                              existing_type=sa.Numeric(precision=16, scale=2), existing_nullable=False)
        batch_op.add_column(sa.Column("difficulty_proposed_by_id", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("difficulty_confirmed_by_id", sa.Integer(), nullable=True))
        batch_op.create_foreign_key(batch_op.f("fk_workload_entries_difficulty_proposed_by_id_users"), "users",
                                    ["difficulty_proposed_by_id"], ["id"])
        batch_op.create_foreign_key(batch_op.f("fk_workload_entries_difficulty_confirmed_by_id_users"), "users",
                                    ["difficulty_confirmed_by_id"], ["id"])
    _sqlite_references_on()


def downgrade():
    _sqlite_references_off()
    with op.batch_alter_table("workload_entries", schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f("fk_workload_entries_difficulty_confirmed_by_id_users"),
                                 type_="foreignkey")
        batch_op.drop_constraint(batch_op.f("fk_workload_entries_difficulty_proposed_by_id_users"),
                                 type_="foreignkey")
        batch_op.drop_column("difficulty_confirmed_by_id")
        batch_op.drop_column("difficulty_proposed_by_id")
        batch_op.alter_column("amount", type_=sa.Numeric(precision=16, scale=2),
                              existing_type=sa.Numeric(precision=22, scale=6), existing_nullable=False)
        batch_op.alter_column("unit_price", type_=sa.Numeric(precision=14, scale=2),
                              existing_type=sa.Numeric(precision=18, scale=6), existing_nullable=False)
        batch_op.alter_column("units", type_=sa.Numeric(precision=10, scale=2),
                              existing_type=sa.Numeric(precision=18, scale=4), existing_nullable=False)
    with op.batch_alter_table("work_items", schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f("fk_work_items_difficulty_confirmed_by_id_users"), type_="foreignkey")
        batch_op.drop_constraint(batch_op.f("fk_work_items_difficulty_proposed_by_id_users"), type_="foreignkey")
        for column in ("difficulty_confirmed_by_id", "difficulty_proposed_by_id", "out_of_period", "go_live_date",
                       "period", "units"):
            batch_op.drop_column(column)
    with op.batch_alter_table("service_lines", schema=None) as batch_op:
        batch_op.drop_column("difficulty_levels")
        batch_op.drop_column("metered")
        batch_op.drop_column("unit_code")
    _sqlite_references_on()

"""monthly operations reports run as work items: a work item may belong to the contract alone (no service line,
no department: a 月度运营报告 is the supplier's report to the third party, not a line's work), and each report
row names the work item its lifecycle runs on. Existing reports are adopted by the app
(engine/usecases/monthly_report.py open_month, run by the tick: `itemgate tick` and `serve`'s loop), in their state.

Revision ID: 20_monthly_report_items
Revises: 18c_notification_keys
"""
import sqlalchemy as sa
from alembic import op

revision = "20_monthly_report_items"
down_revision = "18c_notification_keys"
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table("work_items", schema=None) as batch_op:
        batch_op.alter_column("service_line_id", existing_type=sa.Integer(), nullable=True)
        batch_op.alter_column("department_id", existing_type=sa.Integer(), nullable=True)
    with op.batch_alter_table("contract_tasks", schema=None) as batch_op:
        batch_op.add_column(sa.Column("item_id", sa.Integer(), nullable=True))
        batch_op.create_foreign_key(op.f("fk_contract_tasks_item_id_work_items"), "work_items", ["item_id"], ["id"])
        batch_op.create_unique_constraint(op.f("uq_contract_tasks_item_id"), ["item_id"])


def downgrade():
    with op.batch_alter_table("contract_tasks", schema=None) as batch_op:
        batch_op.drop_constraint(op.f("uq_contract_tasks_item_id"), type_="unique")
        batch_op.drop_constraint(op.f("fk_contract_tasks_item_id_work_items"), type_="foreignkey")
        batch_op.drop_column("item_id")
    op.execute("DELETE FROM task_drafts WHERE task_id IN (SELECT h.id FROM human_tasks h JOIN work_items w "
               "ON w.id = h.item_id WHERE w.service_line_id IS NULL)")
    op.execute("DELETE FROM gate_passes WHERE item_id IN (SELECT id FROM work_items WHERE service_line_id IS NULL)")
    op.execute("DELETE FROM human_tasks WHERE item_id IN (SELECT id FROM work_items WHERE service_line_id IS NULL)")
    op.execute("DELETE FROM process_instances WHERE item_id IN "
               "(SELECT id FROM work_items WHERE service_line_id IS NULL)")
    op.execute("DELETE FROM work_items WHERE service_line_id IS NULL")
    with op.batch_alter_table("work_items", schema=None) as batch_op:
        batch_op.alter_column("department_id", existing_type=sa.Integer(), nullable=False)
        batch_op.alter_column("service_line_id", existing_type=sa.Integer(), nullable=False)

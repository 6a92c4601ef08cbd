"""sign-off sheets ItemGate prints: one verification code per item and artefact kind

Revision ID: 16b_sign_off_sheets
Revises: 13d_sessions_anchors
"""
import sqlalchemy as sa
from alembic import op

revision = "16b_sign_off_sheets"
down_revision = "13d_sessions_anchors"
branch_labels = None
depends_on = None


def upgrade():
    op.create_table(
        "sign_off_sheets",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("item_id", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(length=64), nullable=False),
        sa.Column("code", sa.String(length=16), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("created_by_id", sa.Integer(), nullable=True),
        sa.ForeignKeyConstraint(["created_by_id"], ["users.id"], name=op.f("fk_sign_off_sheets_created_by_id_users")),
        sa.ForeignKeyConstraint(["item_id"], ["work_items.id"], name=op.f("fk_sign_off_sheets_item_id_work_items")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_sign_off_sheets")),
        sa.UniqueConstraint("code", name=op.f("uq_sign_off_sheets_code")),
        sa.UniqueConstraint("item_id", "kind", name=op.f("uq_sign_off_sheets_item_id")),
    )


def downgrade():
    op.drop_table("sign_off_sheets")

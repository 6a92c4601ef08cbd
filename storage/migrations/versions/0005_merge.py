"""Merge the parallel migration branches of issues 3, 5, 6 and the inbox index work into one head.

Revision ID: 0005_merge
Revises: 0002_kinds_deadlines, 0003_settlement, 0004_trust, i7_inbox_queue_indexes
"""

revision = "0005_merge"
down_revision = ("0002_kinds_deadlines", "0003_settlement", "0004_trust", "i7_inbox_queue_indexes")
branch_labels = None
depends_on = None


def upgrade():
    pass


def downgrade():
    pass

"""audit events: index by target, for an item's history

Revision ID: 0007_audit_target_index
Revises: 0006_export_jobs
"""
from alembic import op

revision = "0007_audit_target_index"
down_revision = "0006_export_jobs"
branch_labels = None
depends_on = None


def upgrade():
    op.create_index("ix_audit_events_target", "audit_events", ["target_type", "target_id"])


def downgrade():
    op.drop_index("ix_audit_events_target", table_name="audit_events")

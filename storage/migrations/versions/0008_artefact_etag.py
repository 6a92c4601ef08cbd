"""artefacts: the ETag the store answered, which verifies objects streamed in without SHA-256 metadata

Revision ID: 0008_artefact_etag
Revises: 0007_audit_target_index
"""
import sqlalchemy as sa
from alembic import op

revision = "0008_artefact_etag"
down_revision = "0007_audit_target_index"
branch_labels = None
depends_on = None


def upgrade():
    # Nullable and without a default: rows stored before keep NULL, and are verified as they were.
    with op.batch_alter_table("artefacts", schema=None) as batch_op:
        batch_op.add_column(sa.Column("etag", sa.String(length=200), nullable=True))


def downgrade():
    with op.batch_alter_table("artefacts", schema=None) as batch_op:
        batch_op.drop_column("etag")

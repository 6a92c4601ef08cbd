"""export jobs: attempts and the runner, so a job whose process died is taken up again by the next tick

Revision ID: 13a_export_job_attempts
Revises: 0008_artefact_etag
"""
import sqlalchemy as sa
from alembic import op

revision = "13a_export_job_attempts"
down_revision = "0008_artefact_etag"
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table("export_jobs", schema=None) as batch_op:
        batch_op.add_column(sa.Column("attempts", sa.Integer(), nullable=False, server_default="0"))
        batch_op.add_column(sa.Column("runner", sa.String(length=200), nullable=True))
        batch_op.create_index("ix_export_jobs_status", ["status", "id"], unique=False)


def downgrade():
    with op.batch_alter_table("export_jobs", schema=None) as batch_op:
        batch_op.drop_index("ix_export_jobs_status")
        batch_op.drop_column("runner")
        batch_op.drop_column("attempts")

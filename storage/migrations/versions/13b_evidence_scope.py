"""evidence scope: per-department steps (human_tasks.per_department) and whose evidence an artefact is
(artefacts.department_id)

Existing rows are filled in from the deployed models: a task whose step declares `department_var` is a
per-department step, and an artefact uploaded for such a task is that task's department's evidence. Artefacts
uploaded without naming a task stay evidence of the whole item; a per-department gate does not count them.

Revision ID: 13b_evidence_scope
Revises: 13a_export_job_attempts
"""
from xml.etree import ElementTree

import sqlalchemy as sa
from alembic import op

revision = "13b_evidence_scope"
down_revision = "13a_export_job_attempts"
branch_labels = None
depends_on = None

_BPMN = "{http://www.omg.org/spec/BPMN/20100524/MODEL}"
_SPIFF = "{http://spiffworkflow.org/bpmn/schema/1.0/core}"


def _per_department_steps(xml: str) -> set[str]:
    """The ids of the user tasks of one BPMN document that carry a `department_var` property."""
    try:
        root = ElementTree.fromstring(xml)  # noqa: S314 - the models were validated when they were deployed
    except ElementTree.ParseError:
        return set()
    steps = set()
    for task in root.iter(f"{_BPMN}userTask"):
        for prop in task.iter(f"{_SPIFF}property"):
            if prop.get("name") == "department_var" and prop.get("value"):
                steps.add(task.get("id", ""))
    return steps


def upgrade():
    conn = op.get_bind()
    # Plain ADD COLUMNs: on SQLite a batch copy of these tables (which others refer to) fails on a database that
    # holds rows, and a new nullable column with a reference needs no copy.
    op.add_column("human_tasks", sa.Column("per_department", sa.Boolean(), server_default=sa.false(), nullable=False))
    if conn.dialect.name == "sqlite":
        op.execute("ALTER TABLE artefacts ADD COLUMN department_id INTEGER "
                   "CONSTRAINT fk_artefacts_department_id_departments REFERENCES departments (id)")
    else:
        op.add_column("artefacts", sa.Column("department_id", sa.Integer(), nullable=True))
        op.create_foreign_key("fk_artefacts_department_id_departments", "artefacts", "departments",
                              ["department_id"], ["id"])

    tasks = sa.table("human_tasks", sa.column("id"), sa.column("instance_id"), sa.column("spec_name"),
                     sa.column("department_id"), sa.column("per_department"))
    instances = sa.table("process_instances", sa.column("id"), sa.column("definition_id"))
    artefacts = sa.table("artefacts", sa.column("task_id"), sa.column("department_id"))
    for definition_id, xml in conn.execute(sa.text("SELECT id, bpmn_xml FROM process_definitions")):
        steps = _per_department_steps(xml or "")
        if not steps:
            continue
        of_definition = sa.select(instances.c.id).where(instances.c.definition_id == definition_id)
        conn.execute(tasks.update().where(tasks.c.instance_id.in_(of_definition), tasks.c.spec_name.in_(steps))
                     .values(per_department=True))
    scoped = (sa.select(tasks.c.department_id)
              .where(tasks.c.id == artefacts.c.task_id, tasks.c.per_department.is_(True)).scalar_subquery())
    conn.execute(artefacts.update().where(artefacts.c.task_id.in_(
        sa.select(tasks.c.id).where(tasks.c.per_department.is_(True)))).values(department_id=scoped))


def downgrade():
    if op.get_bind().dialect.name != "sqlite":
        op.drop_constraint("fk_artefacts_department_id_departments", "artefacts", type_="foreignkey")
        op.drop_column("artefacts", "department_id")
        op.drop_column("human_tasks", "per_department")
        return
    # SQLite drops a column with a reference only by copying the table, and other tables refer to artefacts:
    # their references are checked at commit (inside a transaction) or not during the copy (outside one).
    op.execute("PRAGMA defer_foreign_keys=ON")
    op.execute("PRAGMA foreign_keys=OFF")
    with op.batch_alter_table("artefacts", recreate="always") as batch_op:
        batch_op.drop_column("department_id")
    op.drop_column("human_tasks", "per_department")
    op.execute("PRAGMA foreign_keys=ON")

"""The benchmark data generators at toy scale, so `make test` keeps them working on both databases."""
from __future__ import annotations

from decimal import Decimal

import psycopg
import pytest
from sqlalchemy import func, select

from api.extensions import db
from bench import datagen
from bench.harness import capture_statements, id_sequences, inserted_tables, replay_statements, sequence_marks
from engine.trust import audit
from engine.usecases.tasks import Ctx, NewItem, create_item, current_definition
from storage.models import Contract, HumanTask, ProcessInstance, User, WorkItem, WorkloadEntry


def test_generators_build_data_the_api_reads(world):
    session = db.session
    contract = session.execute(select(Contract).where(Contract.code == "SH-YWTB-2025")).scalar_one()
    definition = current_definition(session, "service_item")
    impl_id = session.execute(select(User.id).where(User.username == "impl")).scalar_one()
    departments = datagen.ensure_departments(session, 3, prefix="SMK")
    assert datagen.ensure_departments(session, 3, prefix="SMK") == departments  # idempotent

    bulk = datagen.bulk_items(session, contract_id=contract.id, definition_id=definition.id,
                              department_ids=departments, count=24, tasks_per_item=5, implementer_ids=[impl_id])
    entries = datagen.bulk_workload(session, list(bulk.item_ids), 30)
    session.commit()

    assert session.scalar(select(func.count()).select_from(WorkItem)) == 24
    assert session.scalar(select(func.count()).select_from(ProcessInstance)) == 24
    assert session.scalar(select(func.count()).select_from(HumanTask)) == bulk.task_rows == 24 * 5
    ready = session.scalar(select(func.count()).select_from(HumanTask).where(HumanTask.status == "ready"))
    assert ready == sum(bulk.ready_by_role.values())
    assert entries == 30 == session.scalar(select(func.count()).select_from(WorkloadEntry))

    # The inbox and the export read the generated rows through the API.
    inbox = world.get("impl", "/api/v1/tasks?scope=group&per_page=5").get_json()
    assert inbox["total"] == bulk.ready_by_role.get("implementer", 0)
    csv_lines = world.get("pm", "/api/v1/exports/workload.csv").get_data().decode("utf-8-sig").splitlines()
    assert sum(",BENCH-" in line for line in csv_lines) == entries

    # Clones keep the template's state and stay workable; sequences moved past the explicit ids.
    template = world.new_item("SMK-TPL-1")
    clones = datagen.clone_items(session, template["id"], 3, code_prefix="SMK-CLONE")
    session.commit()
    world.complete_task_as("impl", clones[0], "intake", {"summary": "克隆事项"})
    assert world.task_named(clones[0], "confirm_difficulty")
    assert world.task_named(clones[1], "intake")
    assert world.new_item("SMK-AFTER-1")["id"] > max(clones)

    # A long history in memory: the survey loop, returned again and again, then one more through the API.
    looping = world.new_item("SMK-LOOP-1")["id"]
    world.complete_task_as("impl", looping, "intake", {"summary": "循环"})
    world.complete_task_as("pm", looping, "confirm_difficulty", {"difficulty": "1.0", "complexity_note": "一般"})
    world.complete_task_as("impl", looping, "survey_sorting", {"item_count": 1})
    world.complete_task_as("rev_a", looping, "confirm_survey", {"decision": "return", "comment": "补充"})

    def data_for(name):
        return {"decision": "return", "comment": "再补充"} if name == "confirm_survey" else {"item_count": 2}

    assert datagen.reachable_steps(session, looping, 4, data_for) == (4, None)
    assert datagen.fast_forward(session, looping, 4, data_for) == 4
    session.commit()
    rows = session.scalars(select(HumanTask).where(HumanTask.item_id == looping)).all()
    # intake, proposal, the third party's confirmation, survey and its review, the returned survey; 4 more steps
    assert len(rows) == 6 + 4 and sum(r.status == "ready" for r in rows) == 1
    world.complete_task_as("impl", looping, "survey_sorting", {"item_count": 3})
    assert world.task_named(looping, "confirm_survey")

    stored = datagen.bulk_artefacts(session, clones[2], [("bench/k1", None, "0" * 64, 1)], impl_id)
    session.commit()
    listed = world.get("pm", f"/api/v1/items/{clones[2]}/artefacts").get_json()["artefacts"]
    assert [a["id"] for a in listed] == stored


def test_captured_statements_replay_alone_and_leave_nothing(world):
    """The floor-by-parts replay: a use case's statements, captured in process, sent again through psycopg
    alone, twice, with the id sequences set back so later statements find the ids the earlier INSERTs made."""
    if db.engine.dialect.name != "postgresql":
        pytest.skip("the replay goes through psycopg to PostgreSQL, as the benchmark does")
    session = db.session
    world.new_item("SMK-REPLAY-0")  # deploys the definition, so the captured run is the usual one
    pm = session.execute(select(User).where(User.username == "pm")).scalar_one()
    session.expunge(pm)
    session.rollback()
    body = dict(contract="SH-YWTB-2025", service_line="1", name="回放", code="SMK-REPLAY-1", department="DA",
                channels=["pc"], mode="new", difficulty=Decimal("1.00"))

    def create() -> None:
        create_item(Ctx(session, pm), NewItem(**body))
        audit.write_pending(session)

    # A new item's first task is told to its queue (engine/trust/notify.py): one notification row per member.
    tables = ["work_items", "process_instances", "human_tasks", "notifications", "audit_events"]
    items_before = session.scalar(select(func.count()).select_from(WorkItem))
    session.rollback()
    dsn = db.engine.url.set(drivername="postgresql").render_as_string(hide_password=False)

    with psycopg.connect(dsn) as conn:
        sequences = id_sequences(conn, tables)
        assert len(sequences) == len(tables)
        marks = sequence_marks(conn, sequences)
        statements = capture_statements(db.engine, create)
        session.rollback()
        assert inserted_tables(statements) == tables
        stat = replay_statements(conn, statements, 2, marks)
        assert stat.n == 2 and all(s > 0 for s in stat.samples)
        assert session.scalar(select(func.count()).select_from(WorkItem)) == items_before  # rolled back
        # Without setting the sequences back, the instance's INSERT names an item id that is not there.
        with pytest.raises(psycopg.errors.ForeignKeyViolation):
            replay_statements(conn, statements, 1)

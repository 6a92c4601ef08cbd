"""Two people complete the same task at the same instant: exactly one 200 and one 409, one audit event,
one state change (version + 1) — 50 times over. PostgreSQL only (real row-level concurrency; SQLite
serialises writers), with real commits from two threads, each with its own app context and session."""
from __future__ import annotations

import threading

import pytest
from sqlalchemy import func, select

from api.extensions import db
from storage.models import AuditEvent, HumanTask, ProcessInstance

ROUNDS = 50


def _race(app, url: str, headers: list[dict[str, str]]) -> list[int]:
    barrier = threading.Barrier(len(headers))
    statuses: list[int] = []
    errors: list[BaseException] = []

    def worker(h: dict[str, str]) -> None:
        client = app.test_client()
        try:
            barrier.wait(timeout=30)
            r = client.post(url, json={"data": {"summary": "并发"}}, headers=h)
            statuses.append(r.status_code)
            r.close()
        except BaseException as exc:  # surfaced in the main thread below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(h,)) for h in headers]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors, errors
    return sorted(statuses)


def test_two_completes_of_one_task_one_wins(world, app, backend):
    if backend != "postgresql":
        pytest.skip("PostgreSQL only: SQLite serialises writers, so there is no real race to test")
    headers = [world.headers("impl"), world.headers("impl2")]
    for i in range(ROUNDS):
        item_id = world.new_item(f"RACE-{i}", channels=["pc"])["id"]
        for kind in ("requirement_letter", "complexity_statement"):
            assert world.upload("impl", item_id, kind).status_code == 201
        task = world.task_named(item_id, "intake")
        db.session.remove()
        version = db.session.execute(select(ProcessInstance.version)
                                     .where(ProcessInstance.item_id == item_id)).scalar()
        db.session.remove()  # the main thread holds no snapshot or connection during the race

        statuses = _race(app, f"/api/v1/tasks/{task['id']}/complete", headers)

        assert statuses == [200, 409], f"round {i}: {statuses}"
        completed = db.session.execute(select(func.count(AuditEvent.id)).where(
            AuditEvent.event_type == "task.completed", AuditEvent.target_id == str(task["id"]))).scalar()
        assert completed == 1, f"round {i}: {completed} completion events"
        after = db.session.execute(select(ProcessInstance.version)
                                   .where(ProcessInstance.item_id == item_id)).scalar()
        assert after == version + 1, f"round {i}: version {version} → {after}"
        row = db.session.get(HumanTask, task["id"])
        assert row.status == "completed"
        db.session.remove()

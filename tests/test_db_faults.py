"""The database connection dies in the middle of a request (PostgreSQL `pg_terminate_backend` from another
connection, as a failover, a restart or an administrator does): the request answers 503 with Retry-After and a
problem body, its transaction is gone as a whole, and the very next request on the same app succeeds — the pool
drops the dead connection instead of handing it out again. PostgreSQL only: SQLite has no connection to lose."""
from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import psycopg
import pytest
from flask import has_request_context
from sqlalchemy import event, func, select

from api.extensions import db
from storage.models import AuditEvent, GatePass, HumanTask, ProcessInstance, WorkItem
from tests.conftest import PG_ADMIN_DSN
from tests.test_web import Browser


@pytest.fixture(autouse=True)
def _postgresql_only(backend: str) -> None:
    if backend != "postgresql":
        pytest.skip("PostgreSQL only: an SQLite file has no server connection to lose")


def _terminate(pid: int) -> None:
    with psycopg.connect(PG_ADMIN_DSN, autocommit=True) as admin:
        # With a timeout, pg_terminate_backend waits until the backend has exited.
        assert admin.execute("SELECT pg_terminate_backend(%s, 5000)", (pid,)).fetchone() == (True,)


@contextmanager
def killed_at(app: Any, matches: Callable[[str], bool] | None, *, at_commit: bool = False) -> Iterator[list[str]]:
    """Terminate the request's database connection once: just before the first statement for which `matches`
    is true, or (`at_commit`) just before the request commits. Yields the statements seen, for the message."""
    fired: list[str] = []

    def before_execute(conn: Any, cursor: Any, statement: str, *_: Any) -> None:
        if not fired and has_request_context() and matches is not None and matches(statement):
            fired.append(statement)
            _terminate(cursor.connection.info.backend_pid)

    def before_commit(conn: Any) -> None:
        if not fired and has_request_context():
            fired.append("COMMIT")
            _terminate(conn.connection.dbapi_connection.info.backend_pid)

    with app.app_context():
        engine = db.engine
    event.listen(engine, "before_cursor_execute", before_execute)
    if at_commit:
        event.listen(engine, "commit", before_commit)
    try:
        yield fired
    finally:
        event.remove(engine, "before_cursor_execute", before_execute)
        if at_commit:
            event.remove(engine, "commit", before_commit)


def _unavailable(r: Any) -> None:
    assert r.status_code == 503, (r.status_code, r.get_data(as_text=True)[:500])
    assert int(r.headers["Retry-After"]) >= 1
    if r.mimetype == "application/problem+json":
        assert r.get_json()["code"] == "database_unavailable", r.get_json()


def _ready_intake(world: Any) -> dict[str, Any]:
    item_id = world.new_item("DBKILL-1", channels=["pc"])["id"]
    for kind in ("requirement_letter", "complexity_statement"):
        assert world.upload("impl", item_id, kind).status_code == 201
    world.headers("impl")
    return world.task_named(item_id, "intake")


def _state(item_id: int) -> dict[str, Any]:
    db.session.remove()
    state = {
        "version": db.session.execute(select(ProcessInstance.version)
                                      .where(ProcessInstance.item_id == item_id)).scalar(),
        "open": sorted(db.session.scalars(select(HumanTask.spec_name).where(
            HumanTask.item_id == item_id, HumanTask.status == "ready"))),
        "passes": db.session.execute(select(func.count(GatePass.id))).scalar(),
        "events": db.session.execute(select(func.count(AuditEvent.id))).scalar(),
    }
    db.session.remove()
    return state


@pytest.mark.parametrize("where", ["mid-transaction", "at-commit"])
def test_connection_killed_while_completing_a_task(world, app, where):
    task = _ready_intake(world)
    before = _state(task["item_id"])
    url = f"/api/v1/tasks/{task['id']}/complete"
    body = {"data": {"summary": "连接中断"}}
    if where == "mid-transaction":  # after the task row is taken, as the process state is written
        context = killed_at(app, lambda s: s.lstrip().upper().startswith("UPDATE PROCESS_INSTANCES"))
    else:
        context = killed_at(app, None, at_commit=True)
    with context as fired:
        r = world.post("impl", url, json=body)
    assert fired, "the connection was never terminated"
    _unavailable(r)
    assert _state(task["item_id"]) == before  # nothing of the completion was kept
    # The next request gets a live connection and does the work.
    r = world.post("impl", url, json=body)
    assert r.status_code == 200, r.get_json()
    after = _state(task["item_id"])
    assert after["version"] == before["version"] + 1 and after["open"] == ["confirm_difficulty"]


def test_connection_killed_while_reading(world, app):
    world.new_item("DBKILL-2")
    world.headers("pm")
    with killed_at(app, lambda s: "FROM work_items" in s) as fired:
        r = world.get("pm", "/api/v1/items")
    assert fired
    _unavailable(r)
    r = world.get("pm", "/api/v1/items")
    assert r.status_code == 200 and r.get_json()["total"] == 1


def test_connection_killed_under_a_web_page(world, app):
    world.new_item("DBKILL-3")
    browser = Browser(app, "pm")
    with killed_at(app, lambda s: "FROM work_items" in s) as fired:
        r = browser.get("/items")
    assert fired
    _unavailable(r)
    assert r.mimetype == "text/html" and "服务暂时不可用" in r.get_data(as_text=True)
    assert browser.get("/items").status_code == 200


def test_connections_killed_between_requests(world, app):
    """Every pooled connection dies while idle (a database restart): the next requests still succeed."""
    world.new_item("DBKILL-4")
    world.headers("pm")
    db.session.remove()
    with psycopg.connect(PG_ADMIN_DSN, autocommit=True) as admin:
        database = app.config["SQLALCHEMY_DATABASE_URI"].rsplit("/", 1)[1]
        pids = [row[0] for row in admin.execute(
            "SELECT pid FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()", (database,))]
    assert pids
    for pid in pids:
        _terminate(pid)
    for _ in range(3):
        r = world.get("pm", "/api/v1/items")
        assert r.status_code == 200 and r.get_json()["total"] == 1
    assert db.session.execute(select(func.count(WorkItem.id))).scalar() == 1

"""List endpoints and pages run a fixed number of SQL statements, however many rows they show (no N+1): counted
with before_cursor_execute on the test app's engine, for a short list and for a longer one. (The settlement
list is not here yet: its figures still cost a few queries per claim, see engine/usecases/settlement.py figures_of.)"""
from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import event

from api.extensions import db
from tests.test_web import Browser


@contextmanager
def statements() -> Iterator[list[str]]:
    seen: list[str] = []

    def count(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        seen.append(statement)

    engine = db.engine
    event.listen(engine, "before_cursor_execute", count)
    try:
        yield seen
    finally:
        event.remove(engine, "before_cursor_execute", count)


def cost(call: Callable[[], Any]) -> int:
    call()  # warm: caches and lazy setup are not what is measured
    with statements() as seen:
        r = call()
    assert r.status_code == 200, r.get_data(as_text=True)[:300]
    r.close()
    return len(seen)


def test_item_and_task_lists_and_pages_do_not_grow_with_the_rows(world, app):
    for i in range(2):
        world.new_item(f"NQ-A-{i}")
    pm = Browser(app, "pm")
    calls = [lambda: world.get("pm", "/api/v1/items"), lambda: world.get("pm", "/api/v1/tasks?scope=all"),
             lambda: pm.get("/inbox?scope=all"), lambda: pm.get("/items")]
    few = [cost(c) for c in calls]
    for i in range(6):
        world.new_item(f"NQ-B-{i}")
    many = [cost(c) for c in calls]
    assert many == few, f"statements with 2 items {few}, with 8 {many}"

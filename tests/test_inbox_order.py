"""The web inbox lists a queue due first, undated tasks last (the order the due-queue indexes of bench row 8 are
built in, so the first page is read from the index instead of sorting the whole queue)."""
from __future__ import annotations

from datetime import UTC, datetime, timedelta

from tests.test_web import Browser


def test_web_inbox_orders_due_first_undated_last(world, app):
    from api.extensions import db
    from storage.models import HumanTask, WorkItem

    for code in ("ORD-LATER", "ORD-SOON", "ORD-NONE"):
        world.new_item(code)
    now = datetime.now(UTC)
    due = {"ORD-LATER": now + timedelta(days=5), "ORD-SOON": now + timedelta(days=1), "ORD-NONE": None}
    for code, at in due.items():
        item = db.session.query(WorkItem).filter_by(code=code).one()
        for task in db.session.query(HumanTask).filter_by(item_id=item.id, status="ready"):
            task.due_at = at
    db.session.commit()
    page = Browser(app, "impl").get("/inbox?scope=group").get_data(as_text=True)
    positions = [page.index(code) for code in ("ORD-SOON", "ORD-LATER", "ORD-NONE")]
    assert positions == sorted(positions), positions
    # A filter counts its own total; without one the scope's count is the total.
    filtered = Browser(app, "impl").get("/inbox?scope=group&q=ORD-SOON").get_data(as_text=True)
    assert "ORD-SOON" in filtered and "ORD-LATER" not in filtered

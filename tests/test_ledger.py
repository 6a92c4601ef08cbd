"""The workload ledger is append-only: countable units, idempotent tallies, corrections by reversing entries."""
from __future__ import annotations

from decimal import Decimal

from sqlalchemy import func, select

from api.extensions import db
from engine.money.ledger import tally_item
from engine.trust import audit
from storage.models import AuditEvent, WorkItem, WorkloadEntry
from tests.settlement_helpers import completed_items, entry_ids, ledger_sum


def test_rework_is_not_a_new_unit_but_an_iteration_is(world):
    first = completed_items(1, prefix="U", channels=("pc", "mobile"))
    item = db.session.get(WorkItem, first[0])
    # The process ending again (a retried or reworked completion) does not count the unit twice.
    assert tally_item(db.session, audit.SYSTEM, item, item.completed_at) == []
    db.session.commit()
    assert len(entry_ids(first)) == 2
    # An iteration of the live item is a new work item and a new countable unit, same code.
    iteration = completed_items(1, prefix="U", channels=("pc",), mode="iteration")
    assert db.session.get(WorkItem, iteration[0]).code == item.code
    rows = db.session.execute(select(WorkloadEntry.item_id, WorkloadEntry.mode, WorkloadEntry.amount)
                              .order_by(WorkloadEntry.id)).all()
    assert [(r.mode, r.amount) for r in rows] == [("new", Decimal("45000.00")), ("new", Decimal("72000.00")),
                                                  ("iteration", Decimal("45000.00"))]


def test_reversal_is_a_new_entry_with_reason_and_user(world):
    items = completed_items(2, prefix="REV", channels=("pc",), difficulty="1.20")
    target = entry_ids(items)[0]
    before = ledger_sum()
    r = world.post("pm", f"/api/v1/workload/entries/{target}/reverse", json={"reason": "难度系数录入错误"})
    assert r.status_code == 201, r.get_json()
    reversal = db.session.get(WorkloadEntry, r.get_json()["id"])
    original = db.session.get(WorkloadEntry, target)
    assert original.amount == Decimal("54000.00")  # untouched
    assert (reversal.reverses_id, reversal.amount, reversal.units) == (target, Decimal("-54000.00"), Decimal("-1"))
    assert reversal.reason == "难度系数录入错误" and reversal.created_by_id is not None
    assert ledger_sum() == before - Decimal("54000.00")
    workload = world.get("auditor", "/api/v1/workload").get_json()
    assert len(workload["entries"]) == 3
    assert workload["totals"]["amount"] == float(ledger_sum()) == 54000.0
    event = db.session.execute(select(AuditEvent).where(AuditEvent.event_type == "ledger.reversed")).scalar_one()
    assert event.username == "pm" and event.detail["reason"] == "难度系数录入错误"

    # Never twice, never a reversal of a reversal, always with a reason, only by the PM.
    r = world.post("pm", f"/api/v1/workload/entries/{target}/reverse", json={"reason": "再冲一次"})
    assert r.status_code == 409 and r.get_json()["code"] == "already_reversed"
    r = world.post("pm", f"/api/v1/workload/entries/{reversal.id}/reverse", json={"reason": "冲销冲销"})
    assert r.status_code == 409 and r.get_json()["code"] == "is_reversal"
    r = world.post("pm", f"/api/v1/workload/entries/{entry_ids(items)[1]}/reverse", json={"reason": " "})
    assert r.status_code == 422
    assert world.post("auditor", f"/api/v1/workload/entries/{target}/reverse",
                      json={"reason": "审计调整"}).status_code == 403
    assert world.post("pm", "/api/v1/workload/entries/999999/reverse", json={"reason": "不存在"}).status_code == 404
    # A cancelled item's entries no longer count anywhere.
    db.session.get(WorkItem, items[1]).status = "cancelled"
    db.session.commit()
    workload = world.get("pm", "/api/v1/workload").get_json()
    assert {e["item_id"] for e in workload["entries"]} == {items[0]} and workload["totals"]["amount"] == 0.0


def test_cli_reverse(world, app, cli):
    items = completed_items(1, prefix="CLI")
    target = entry_ids(items)[0]
    db.session.commit()
    result = cli("ledger", "reverse", str(target), "--reason", "重复登记", "--user", "impl")
    assert result.exit_code == 1 and "role_required" in result.output
    result = cli("ledger", "reverse", str(target), "--reason", "重复登记", "--user", "pm")
    assert result.exit_code == 0, result.output
    assert f"entry {target} reversed" in result.output
    db.session.rollback()
    assert db.session.execute(select(func.count(WorkloadEntry.id))
                              .where(WorkloadEntry.reverses_id == target)).scalar() == 1
    assert ledger_sum() == 0

"""List endpoints and pages run a fixed number of SQL statements, however many rows they show (no N+1): counted
with before_cursor_execute on the test app's engine, for a short list and for a longer one."""
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


def _staged_contract(n: int, base: dict[str, Any], model: Any) -> None:
    """A contract with the seed's schedule and five claims: 6m and 9m approved, the annual one late (its 3 % is
    taken from the staged claims' gross too), the final one and an ad-hoc one being prepared; late monthly
    reports inside the annual period (each deducts from the stage claim that covers it)."""
    from datetime import UTC, date, datetime, timedelta
    from decimal import Decimal

    from storage.models import Contract, ContractTask, Settlement

    contract = Contract(code=f"NQ-{n}", name=f"合同 {n}", period_start=base["period_start"],
                        period_end=base["period_end"], award_amount=Decimal("100000.00"), settings=base["settings"])
    db.session.add(contract)
    db.session.flush()
    now = datetime.now(UTC)
    year = base["period_start"].year

    def claim(label: str, stage: str | None, start: date, end: date, **kw: Any) -> None:
        db.session.add(Settlement(contract_id=contract.id, label=label, stage=stage, period_start=start,
                                  period_end=end, definition_id=model.definition_id, state=model.state,
                                  status=kw.pop("status", model.status), current_task=model.current_task,
                                  current_lane=model.current_lane, created_at=now, **kw))

    claim("6m", "6m", date(year, 1, 1), date(year, 6, 30), status="approved", gross_amount=Decimal("1000.00"),
          net_amount=Decimal("1000.00"))
    claim("9m", "9m", date(year, 7, 1), date(year, 9, 30), status="approved", gross_amount=Decimal("500.00"),
          net_amount=Decimal("500.00"))
    claim("annual", "annual", date(year, 10, 1), date(year, 12, 31), due_at=now - timedelta(days=3))
    claim("final", "final", date(year, 1, 1), date(year, 12, 31))
    claim("ad hoc", None, date(year, 3, 1), date(year, 3, 31))
    for month in (10, 11):
        db.session.add(ContractTask(contract_id=contract.id, kind="monthly_report", key=f"{year}-{month:02d}",
                                    title="月度运营报告", period_start=date(year, month, 1),
                                    period_end=date(year, month, 28), late=True,
                                    data={"deduction": "12.50", "month_fee": "416.67", "rate": "0.03"}))
    db.session.commit()


def test_settlement_lists_do_not_grow_with_the_claims(world, app):
    """`GET /api/v1/settlements` and the web list: 50 claims (stage claims with late monthly reports, an annual
    claim whose penalty builds on the staged ones, the award check, frozen and live figures) cost the statements
    5 do; each row's figures are those of the claim's own page."""
    from sqlalchemy import select

    from storage.models import Contract, Settlement
    from tests.settlement_helpers import adhoc_contract

    seed = db.session.execute(select(Contract).where(Contract.code == "SH-YWTB-2025")).scalar_one()
    # The copies keep the seed's settlement schedule; the seed contract itself takes an ad-hoc claim.
    base = {"period_start": seed.period_start, "period_end": seed.period_end, "settings": dict(seed.settings)}
    adhoc_contract()
    r = world.post("pm", "/api/v1/settlements", json={"contract": "SH-YWTB-2025", "period_start": "2026-01-01",
                                                      "period_end": "2026-06-30", "label": "编制中的一份"})
    assert r.status_code == 201, r.get_json()
    model = db.session.get(Settlement, r.get_json()["id"])
    _staged_contract(0, base, model)
    pm = Browser(app, "pm")
    calls = [lambda: world.get("pm", "/api/v1/settlements?per_page=100"), lambda: pm.get("/settlements")]
    few = [cost(c) for c in calls]
    for n in range(1, 10):
        _staged_contract(n, base, db.session.get(Settlement, r.get_json()["id"]))
    many = [cost(c) for c in calls]
    assert many == few, f"statements with 6 claims {few}, with 51 {many}"

    listed = world.get("pm", "/api/v1/settlements?per_page=100").get_json()
    assert listed["total"] == 51
    annual = next(s for s in listed["settlements"] if s["contract"] == "NQ-3" and s["stage"] == "annual")
    # The annual claim is late: 3 % of the year's fee (the staged claims' 1500.00 plus its own 0), and the two
    # late monthly reports of its months deducted.
    assert annual["figures"]["penalty"] == 45.0 and annual["figures"]["other_deductions"] == 25.0
    for row in listed["settlements"]:
        if row["contract"] in ("NQ-3", "SH-YWTB-2025"):
            own = world.get("pm", f"/api/v1/settlements/{row['id']}").get_json()
            assert row["figures"] == own["figures"], row["id"]

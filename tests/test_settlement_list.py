"""The settlements list costs the same handful of statements for 5 or 50 approved claims (it used to run ~3 per
settlement: ~600 for 200), and shows the same figures as each settlement's own page."""
from __future__ import annotations

from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import event


def _approved_settlements(n: int, start: int) -> None:
    from api.extensions import db
    from storage.models import Contract, Settlement

    contract = db.session.query(Contract).filter_by(code="SH-YWTB-2025").one()
    model = db.session.query(Settlement).order_by(Settlement.id).first()
    for i in range(n):
        db.session.add(Settlement(contract_id=contract.id, label=f"已审定 {start + i}", period_start=date(2025, 1, 1),
                                  definition_id=model.definition_id, state=model.state,
                                  period_end=date(2025, 6, 30), status="approved", gross_amount=Decimal("1000.00"),
                                  net_amount=Decimal("970.00"), penalty_amount=Decimal("30.00"),
                                  created_at=datetime.now(UTC)))
    db.session.commit()


def _statements(browser: Any) -> tuple[int, str]:
    from api.extensions import db

    count = 0

    def seen(*_: Any) -> None:
        nonlocal count
        count += 1

    engine = db.engine
    event.listen(engine, "before_cursor_execute", seen)
    try:
        r = browser.get("/settlements")
        assert r.status_code == 200
        return count, r.get_data(as_text=True)
    finally:
        event.remove(engine, "before_cursor_execute", seen)


def test_settlements_list_statements_do_not_grow_with_approved_claims(world: Any) -> None:
    from tests.settlement_helpers import adhoc_contract
    from tests.test_web import Browser

    adhoc_contract()
    r = world.post("pm", "/api/v1/settlements", json={"contract": "SH-YWTB-2025", "period_start": "2026-01-01",
                                                      "period_end": "2026-06-30", "label": "编制中的一份"})
    assert r.status_code == 201, r.get_json()
    browser = Browser(world.app, "pm")
    browser.get("/settlements")
    _approved_settlements(5, 0)
    few, _ = _statements(browser)
    _approved_settlements(45, 5)
    many, page = _statements(browser)
    assert many - few <= 2, (few, many)
    assert page.count("970.00") == 50 and page.count("1,000.00") == 50


def _moving_settlements(n: int, start: int) -> None:
    """Claims still being prepared (draft, lines and figures live), as copies of the first claim's state."""
    from api.extensions import db
    from storage.models import Contract, Settlement

    contract = db.session.query(Contract).filter_by(code="SH-YWTB-2025").one()
    model = db.session.query(Settlement).order_by(Settlement.id).first()
    for i in range(n):
        db.session.add(Settlement(contract_id=contract.id, label=f"编制中 {start + i}", period_start=date(2024, 1, 1),
                                  definition_id=model.definition_id, state=model.state, status=model.status,
                                  current_task=model.current_task, current_lane=model.current_lane,
                                  period_end=date(2024, 6, 30), created_at=datetime.now(UTC)))
    db.session.commit()


def _api_statements(world: Any) -> tuple[int, dict[str, Any]]:
    from api.extensions import db

    count = 0

    def seen(*_: Any) -> None:
        nonlocal count
        count += 1

    event.listen(db.engine, "before_cursor_execute", seen)
    try:
        r = world.get("pm", "/api/v1/settlements?per_page=100")
        assert r.status_code == 200, r.get_json()
        return count, r.get_json()
    finally:
        event.remove(db.engine, "before_cursor_execute", seen)


def test_settlement_lists_statements_do_not_grow_with_moving_claims(world: Any) -> None:
    """Claims still moving have live figures: the web list and `GET /api/v1/settlements` batch them (gross sums
    and the award check's approved total once per list), and give each claim the figures of its own page."""
    from api.extensions import db
    from storage.models import Contract
    from tests.settlement_helpers import adhoc_contract
    from tests.test_web import Browser

    adhoc_contract()
    contract = db.session.query(Contract).filter_by(code="SH-YWTB-2025").one()
    contract.award_amount = Decimal("5000.00")  # the award check (settled total against 110 %) runs for each claim
    db.session.commit()
    r = world.post("pm", "/api/v1/settlements", json={"contract": "SH-YWTB-2025", "period_start": "2026-01-01",
                                                      "period_end": "2026-06-30", "label": "编制中的一份"})
    assert r.status_code == 201, r.get_json()
    _approved_settlements(2, 0)
    browser = Browser(world.app, "pm")
    browser.get("/settlements")
    _moving_settlements(3, 0)
    web_few, _ = _statements(browser)
    api_few, _ = _api_statements(world)
    _moving_settlements(20, 3)
    web_many, _ = _statements(browser)
    api_many, listed = _api_statements(world)
    assert web_many - web_few <= 2, (web_few, web_many)
    assert api_many - api_few <= 2, (api_few, api_many)
    assert listed["total"] == 26
    for row in listed["settlements"]:
        own = world.get("pm", f"/api/v1/settlements/{row['id']}").get_json()
        assert row["figures"] == own["figures"], row["id"]

"""Settlement (审量结算) through its BPMN over HTTP: revision rounds, totals, the lock, penalties and deductions."""
from __future__ import annotations

import io
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

import openpyxl
import pytest
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError

from api.extensions import db
from engine.contract.calendar import TZ, WorkCalendar
from engine.errors import Invalid
from engine.usecases.settlement import SEED_000_BANDS, deduction_rate, is_late, settlement_deadline
from storage.models import AuditEvent, Contract, Settlement, SettlementLine, WorkItem, WorkloadEntry
from tests.settlement_helpers import adhoc_contract, completed_items, drive_to_approved, entry_ids, ledger_sum

TODAY = datetime.now(TZ).date()
CURRENT = {"contract": "SH-YWTB-2025", "period_start": "2026-01-01", "period_end": TODAY.isoformat(),
           "label": "2026 年度结算"}


@pytest.fixture
def sworld(world):
    adhoc_contract()
    world.user("buyer2", "buyer")
    return world


def open_settlement(world, body=None):
    adhoc_contract()  # these tests open ad-hoc periods (today's dates); stage claims: test_contract_settlement.py
    r = world.post("pm", "/api/v1/settlements", json=body or CURRENT)
    assert r.status_code == 201, r.get_json()
    return r.get_json()


@pytest.mark.usefixtures("cache_mode")
def test_claim_revised_reviewed_and_approved_with_numbers_adding_up(sworld):
    w = sworld
    a = completed_items(3, prefix="A", channels=("pc", "mobile"))
    b = completed_items(2, prefix="B", line="2", channels=("kiosk",), department="DB", difficulty="1.50")
    wrong = entry_ids(a)[0]
    r = w.post("pm", f"/api/v1/workload/entries/{wrong}/reverse", json={"reason": "渠道登记错误"})
    assert r.status_code == 201, r.get_json()
    assert r.get_json()["amount"] == -45000.0 and r.get_json()["reverses"] == wrong

    s = open_settlement(w)
    sid = s["id"]
    assert s["status"] == "draft" and s["current_lane"] == "pm"
    assert s["actions"] == ["submit", "add_lines", "remove_lines"]
    assert len(s["lines"]) == 6 + 2 + 1
    api_total = w.get("pm", "/api/v1/workload").get_json()["totals"]["amount"]
    assert s["figures"]["gross"] == api_total == float(ledger_sum()) == 3 * (45000 + 72000) - 45000 + 2 * 80000 * 1.5
    assert s["figures"]["late"] is False and s["figures"]["penalty"] == 0
    assert s["figures"]["award_limit"] == 201_641_000.0 and s["figures"]["exceeds_award_limit"] is False

    # Auditor cannot act before submission; the PM submits.
    r = w.post("auditor", f"/api/v1/settlements/{sid}/accept", json={})
    assert r.status_code == 409 and r.get_json()["code"] == "settlement_wrong_stage"
    assert w.post("auditor", f"/api/v1/settlements/{sid}/submit", json={}).status_code == 403
    r = w.post("pm", f"/api/v1/settlements/{sid}/submit", json={"note": "第一次申报"})
    assert r.status_code == 200 and r.get_json()["status"] == "audit"
    # Lines are frozen while the auditor reviews.
    r = w.post("pm", f"/api/v1/settlements/{sid}/lines/remove", json={"entry_ids": [wrong], "reason": "x" * 3})
    assert r.status_code == 409 and r.get_json()["code"] == "settlement_wrong_stage"

    # The auditor comments on a line and returns the claim.
    disputed = entry_ids(b)[0]
    r = w.post("auditor", f"/api/v1/settlements/{sid}/comments", json={"entry_id": disputed, "text": "缺少上线截图"})
    assert r.status_code == 201
    r = w.post("auditor", f"/api/v1/settlements/{sid}/return", json={})
    assert r.status_code == 200 and r.get_json()["status"] == "revising" and r.get_json()["round"] == 2

    # The PM removes the disputed line and adds work completed since, each with a reason, then resubmits.
    r = w.post("pm", f"/api/v1/settlements/{sid}/lines/remove", json={"entry_ids": [disputed], "reason": "待补材料"})
    assert r.status_code == 200 and len(r.get_json()["lines"]) == 8
    late_item = completed_items(1, prefix="C", channels=("pc",))
    r = w.post("pm", f"/api/v1/settlements/{sid}/lines", json={"entry_ids": entry_ids(late_item), "reason": ""})
    assert r.status_code == 422
    r = w.post("pm", f"/api/v1/settlements/{sid}/lines", json={"entry_ids": entry_ids(late_item),
                                                                "reason": "补充申报本期完成事项"})
    assert r.status_code == 200, r.get_json()
    detail = r.get_json()
    assert {n["kind"] for n in detail["notes"]} >= {"opened", "submitted", "comment", "returned", "removed", "added"}
    assert [c["text"] for ln in detail["lines"] for c in ln["comments"]] == []  # the commented line left
    assert w.post("pm", f"/api/v1/settlements/{sid}/submit", json={}).get_json()["status"] == "audit"
    assert w.post("auditor", f"/api/v1/settlements/{sid}/accept", json={}).get_json()["status"] == "first_review"
    r = w.post("buyer", f"/api/v1/settlements/{sid}/first-review", json={"decision": "approve", "comment": "同意"})
    assert r.get_json()["status"] == "final_approval"
    # The first reviewer is not the approver.
    r = w.post("buyer", f"/api/v1/settlements/{sid}/final-approval", json={"decision": "approve"})
    assert r.status_code == 403 and r.get_json()["code"] == "separation_of_duties"
    r = w.post("buyer2", f"/api/v1/settlements/{sid}/final-approval", json={"decision": "approve"})
    assert r.status_code == 200, r.get_json()
    final = w.get("auditor", f"/api/v1/settlements/{sid}").get_json()
    assert final["status"] == "approved" and final["locked"] and final["figures"]["frozen"]
    assert final["approved_by"] == "buyer2" and final["actions"] == []

    # Sum of its lines = settlement total = claim sheet = filtered exports; the unclaimed line is still open.
    line_sum = sum(ln["amount"] for ln in final["lines"])
    assert final["figures"]["gross"] == pytest.approx(line_sum) == float(ledger_sum()) - 120000.0
    counts = w.get("pm", f"/api/v1/exports/counts?settlement={sid}").get_json()["counts"]
    assert sum(c["amount"] for c in counts) == pytest.approx(line_sum)
    book = openpyxl.load_workbook(io.BytesIO(w.get("buyer", f"/api/v1/settlements/{sid}/claim.xlsx").data),
                                  read_only=True)
    summary = {row[0]: row[1] for row in book["结算申报汇总"].iter_rows(values_only=True) if row and row[0]}
    assert summary["申报金额（元）"] == pytest.approx(line_sum) and summary["应付金额（元）"] == pytest.approx(line_sum)
    total_row = [row for row in book["结算申报明细"].iter_rows(values_only=True) if row[0] == "合计"]
    assert total_row[0][11] == pytest.approx(line_sum)
    book.close()
    listed = w.get("buyer", "/api/v1/settlements?status=approved").get_json()
    assert listed["total"] == 1 and listed["settlements"][0]["id"] == sid
    # Other roles do not see settlements at all.
    assert w.get("impl", f"/api/v1/settlements/{sid}").status_code == 403


def _refused(r, code="settlement_locked"):
    assert r.status_code == 409, r.get_json()
    assert r.get_json()["code"] == code


def test_approved_settlement_refuses_every_change_via_api_and_cli(sworld, app, cli):
    w = sworld
    items = completed_items(2, prefix="L", channels=("pc",))
    sid = open_settlement(w)["id"]
    drive_to_approved(w, sid)
    spare = completed_items(1, prefix="SPARE")
    claimed = entry_ids(items)
    before = db.session.execute(select(func.count(SettlementLine.id))).scalar()
    events_before = db.session.execute(select(func.count(AuditEvent.id))).scalar()

    base = f"/api/v1/settlements/{sid}"
    _refused(w.post("pm", f"{base}/submit", json={}))
    _refused(w.post("pm", f"{base}/lines", json={"entry_ids": entry_ids(spare), "reason": "追加"}))
    _refused(w.post("pm", f"{base}/lines/remove", json={"entry_ids": claimed[:1], "reason": "撤回"}))
    _refused(w.post("auditor", f"{base}/comments", json={"text": "再看看", "entry_id": claimed[0]}))
    _refused(w.post("auditor", f"{base}/accept", json={}))
    _refused(w.post("auditor", f"{base}/return", json={"comment": "退回"}))
    _refused(w.post("buyer", f"{base}/first-review", json={"decision": "return", "comment": "重审"}))
    _refused(w.post("buyer2", f"{base}/final-approval", json={"decision": "return", "comment": "撤销"}))
    _refused(w.post("pm", f"/api/v1/workload/entries/{claimed[0]}/reverse", json={"reason": "事后更正"}))

    # The command line refuses too.
    db.session.commit()
    result = cli("ledger", "reverse", str(claimed[1]), "--reason", "事后更正", "--user", "pm")
    assert result.exit_code == 1 and "settlement_locked" in result.output, result.output
    db.session.rollback()

    refused = db.session.execute(select(AuditEvent).where(AuditEvent.outcome == "refused")
                                 .order_by(AuditEvent.id)).scalars().all()
    assert len(refused) == 10
    assert {e.event_type for e in refused} >= {"settlement.submit", "settlement.add_lines", "ledger.reverse",
                                               "settlement.final_return"}
    assert all(e.target_id == str(sid) for e in refused)
    assert refused[-1].username == "pm" and refused[-1].request_id == "cli"
    assert db.session.execute(select(func.count(SettlementLine.id))).scalar() == before
    assert db.session.execute(select(func.count(WorkloadEntry.id)).where(
        WorkloadEntry.reverses_id.is_not(None))).scalar() == 0
    assert db.session.execute(select(func.count(AuditEvent.id))).scalar() == events_before + 10
    s = w.get("pm", base).get_json()
    assert s["status"] == "approved" and s["figures"]["gross"] == 90000.0


def test_an_entry_is_claimed_at_most_once(sworld):
    w = sworld
    items = completed_items(2, prefix="ONCE")
    first = open_settlement(w)
    assert len(first["lines"]) == 2
    second = open_settlement(w, dict(CURRENT, label="重复申报"))
    assert second["lines"] == [] and second["figures"]["gross"] == 0
    r = w.post("pm", f"/api/v1/settlements/{second['id']}/lines",
               json={"entry_ids": entry_ids(items)[:1], "reason": "再申报一次"})
    assert r.status_code == 409 and r.get_json()["code"] == "entry_already_claimed"
    # The database itself refuses a second claim, whatever the code path.
    db.session.add(SettlementLine(settlement_id=second["id"], entry_id=entry_ids(items)[0]))
    with pytest.raises(IntegrityError):
        db.session.flush()
    db.session.rollback()
    # Removing frees the entry for another settlement.
    r = w.post("pm", f"/api/v1/settlements/{first['id']}/lines/remove",
               json={"entry_ids": entry_ids(items)[:1], "reason": "转入下期"})
    assert r.status_code == 200
    r = w.post("pm", f"/api/v1/settlements/{second['id']}/lines",
               json={"entry_ids": entry_ids(items)[:1], "reason": "转入下期"})
    assert r.status_code == 200 and len(r.get_json()["lines"]) == 1


def test_cancelled_items_are_never_billable(sworld):
    w = sworld
    keep = completed_items(1, prefix="KEEP")
    gone = completed_items(1, prefix="GONE")
    later = completed_items(1, prefix="LATER")
    db.session.get(WorkItem, gone[0]).status = "cancelled"
    db.session.commit()
    s = open_settlement(w)
    assert {ln["item_id"] for ln in s["lines"]} == {keep[0], later[0]}
    # An item cancelled after it was claimed leaves the claim at submission, with a note.
    db.session.get(WorkItem, later[0]).status = "cancelled"
    db.session.commit()
    r = w.post("pm", f"/api/v1/settlements/{s['id']}/submit", json={})
    body = w.get("pm", f"/api/v1/settlements/{s['id']}").get_json()
    assert r.status_code == 200 and {ln["item_id"] for ln in body["lines"]} == {keep[0]}
    assert any(n["kind"] == "removed" and n["text"].startswith("事项已取消") for n in body["notes"])
    assert body["figures"]["gross"] == 45000.0
    r = w.post("pm", f"/api/v1/settlements/{s['id']}/lines", json={"entry_ids": entry_ids(gone), "reason": "x"})
    assert r.status_code in (409, 422)
    workload = w.get("pm", "/api/v1/workload").get_json()
    assert {e["item_id"] for e in workload["entries"]} == {keep[0]}
    assert workload["totals"]["amount"] == 45000.0
    # An item cancelled the ordinary way (while active) is never tallied in the first place.
    live = w.new_item("SH-CANCEL-1")["id"]
    assert w.post("pm", f"/api/v1/items/{live}/cancel", json={"reason": "需求撤销"}).status_code == 200
    assert w.post("pm", f"/api/v1/items/{live}/cancel", json={"reason": "需求撤销"}).status_code == 409
    assert db.session.execute(select(func.count(WorkloadEntry.id))
                              .where(WorkloadEntry.item_id == live)).scalar() == 0


def test_roles_and_stages_are_enforced(sworld):
    w = sworld
    completed_items(1, prefix="R")
    assert w.post("auditor", "/api/v1/settlements", json=CURRENT).status_code == 403
    sid = open_settlement(w)["id"]
    assert w.post("buyer", f"/api/v1/settlements/{sid}/first-review",
                  json={"decision": "approve"}).get_json()["code"] == "settlement_wrong_stage"
    w.post("pm", f"/api/v1/settlements/{sid}/submit", json={})
    r = w.post("auditor", f"/api/v1/settlements/{sid}/return", json={})
    assert r.status_code == 422 and r.get_json()["code"] == "comment_required"
    assert w.post("pm", f"/api/v1/settlements/{sid}/accept", json={}).status_code == 403
    r = w.post("auditor", f"/api/v1/settlements/{sid}/comments", json={"entry_id": 999999, "text": "?"})
    assert r.status_code == 422 and r.get_json()["code"] == "not_a_line"
    r = w.post("pm", "/api/v1/settlements", json=dict(CURRENT, period_end="2025-12-31"))
    assert r.status_code == 422 and r.get_json()["code"] == "invalid_period"


# ---------------------------------------------------------------- penalty and deduction

@pytest.mark.parametrize(("score", "rate"), [
    ("100", "0"), ("90.01", "0"), ("90", "0.05"), ("85", "0.05"), ("80.01", "0.05"), ("80", "0.20"),
    ("60.5", "0.20"), ("60", "0.50"), ("40", "0.50"),
])
def test_seed_000_deduction_bands_own_their_upper_boundary(score, rate):
    assert deduction_rate(Decimal(score), SEED_000_BANDS) == Decimal(rate)


@pytest.mark.parametrize("score", ["39.99", "0", "100.01", "-1"])
def test_scores_without_a_band_are_refused(score):
    with pytest.raises(Invalid):
        deduction_rate(Decimal(score), SEED_000_BANDS)


def test_late_means_after_the_end_of_the_nth_working_day():
    cal = WorkCalendar()
    # 2025-06-30 is a Monday; 20 working days later (no holidays in July 2025) is Monday 2025-07-28.
    due, warnings = settlement_deadline(cal, date(2025, 6, 30), 20)
    assert due.astimezone(TZ).date() == date(2025, 7, 28) and not warnings
    assert not is_late(due, due)
    assert is_late(due + timedelta(seconds=1), due)
    # Across the National Day holiday (2025-10-01..08; Saturday 2025-10-11 is a make-up workday).
    due, _ = settlement_deadline(cal, date(2025, 9, 30), 5)
    assert due.astimezone(TZ).date() == date(2025, 10, 14)


@pytest.mark.parametrize(("score", "deduction"), [(90, "0.05"), (80, "0.20"), (60, "0.50")])
def test_late_claim_with_assessment_deduction(sworld, score, deduction):
    w = sworld
    contract = db.session.execute(select(Contract).where(Contract.code == "SH-YWTB-2025")).scalar_one()
    contract.settings = dict(contract.settings, deduction_bands="seed_000")
    db.session.commit()
    at = datetime(2026, 6, 15, 10, 0, tzinfo=UTC)
    completed_items(2, prefix="H1", channels=("pc", "mobile"), at=at)
    s = open_settlement(w, {"contract": "SH-YWTB-2025", "period_start": "2026-01-01", "period_end": "2026-06-30",
                            "label": "2026 上半年（6个月）"})
    gross = 2 * (45000 + 72000)
    assert s["figures"]["gross"] == gross
    sid = s["id"]
    w.post("pm", f"/api/v1/settlements/{sid}/submit", json={})
    w.post("auditor", f"/api/v1/settlements/{sid}/accept", json={})
    w.post("buyer", f"/api/v1/settlements/{sid}/first-review", json={"decision": "approve"})
    # With bands configured, final approval needs the assessment score.
    r = w.post("buyer2", f"/api/v1/settlements/{sid}/final-approval", json={"decision": "approve"})
    assert r.status_code == 422 and r.get_json()["code"] == "assessment_score_required"
    w.post("buyer2", f"/api/v1/settlements/{sid}/final-approval", json={"decision": "return", "comment": "请补考核分"})
    w.post("pm", f"/api/v1/settlements/{sid}/submit", json={})
    w.post("auditor", f"/api/v1/settlements/{sid}/accept", json={})
    final = None
    r = w.post("buyer", f"/api/v1/settlements/{sid}/first-review",
               json={"decision": "approve", "assessment_score": score})
    assert r.status_code == 200, r.get_json()
    final = w.post("buyer2", f"/api/v1/settlements/{sid}/final-approval", json={"decision": "approve"}).get_json()
    fig = final["figures"]
    assert fig["late"] is True and fig["penalty_rate"] == 0.03
    assert fig["penalty"] == round(gross * 0.03, 2)
    assert fig["deduction_rate"] == float(deduction) and fig["deduction"] == round(gross * float(deduction), 2)
    assert fig["net"] == round(gross - fig["penalty"] - fig["deduction"], 2)
    frozen = db.session.get(Settlement, sid)
    db.session.refresh(frozen)
    assert frozen.net_amount == Decimal(str(fig["net"])).quantize(Decimal("0.01"))


def test_web_pages_and_the_lock_through_the_web(sworld, app):
    from tests.test_web import Browser

    w = sworld
    completed_items(2, prefix="WEB", channels=("pc",))
    pm = Browser(app, "pm")
    r = pm.post("/settlements", {"contract": "SH-YWTB-2025", "period_start": "2026-01-01",
                                 "period_end": TODAY.isoformat(), "label": "网页结算"})
    assert r.status_code == 302, r.get_data(as_text=True)
    sid = int(r.headers["Location"].rstrip("/").split("/")[-1])
    page = pm.get(f"/settlements/{sid}").get_data(as_text=True)
    assert "网页结算" in page and "提交结算申报" in page and "90,000.00" in page
    assert pm.post(f"/settlements/{sid}/submit", {"note": "网页提交"}).status_code == 302
    auditor = Browser(app, "auditor")
    assert auditor.post(f"/settlements/{sid}/audit", {"op": "accept", "text": "通过"}).status_code == 302
    buyer = Browser(app, "buyer")
    assert buyer.post(f"/settlements/{sid}/review", {"stage": "first", "decision": "approve"}).status_code == 302
    buyer2 = Browser(app, "buyer2")
    # Final approval locks the figures: without the tick that they were checked, nothing happens.
    page = buyer2.get(f"/settlements/{sid}").get_data(as_text=True)
    assert "审定并锁定" in page and "90,000.00" in page[page.index('id="final-confirm"'):]
    buyer2.post(f"/settlements/{sid}/review", {"stage": "final", "decision": "approve"})
    assert w.get("pm", f"/api/v1/settlements/{sid}").get_json()["status"] == "final_approval"
    assert "请核对金额并勾选确认" in buyer2.get(f"/settlements/{sid}").get_data(as_text=True)
    assert buyer2.post(f"/settlements/{sid}/review", {"stage": "final", "decision": "approve",
                                                      "confirm": "1"}).status_code == 302
    assert w.get("pm", f"/api/v1/settlements/{sid}").get_json()["status"] == "approved"

    # After approval every web change is refused with a message, and audited.
    pm.get(f"/settlements/{sid}")
    pm.post(f"/settlements/{sid}/submit", {})
    pm.post(f"/settlements/{sid}/lines", {"op": "remove", "entry_ids": "1", "reason": "撤回"})
    auditor.get(f"/settlements/{sid}")
    auditor.post(f"/settlements/{sid}/audit", {"op": "comment", "text": "再看看"})
    buyer2.get(f"/settlements/{sid}")
    buyer2.post(f"/settlements/{sid}/review", {"stage": "final", "decision": "return", "comment": "撤销"})
    page = pm.get(f"/settlements/{sid}").get_data(as_text=True)
    assert "结算已审定（锁定），不能再修改；本次操作已记录。" in page and 'id="locked"' in page
    refused = db.session.execute(select(func.count(AuditEvent.id)).where(AuditEvent.outcome == "refused")).scalar()
    assert refused == 4
    assert w.get("pm", f"/api/v1/settlements/{sid}").get_json()["figures"]["gross"] == 90000.0

    # The ledger, the list and the exports render; downloads come through the web session.
    assert "WEB-0000" in pm.get("/ledger").get_data(as_text=True)
    assert "网页结算" in pm.get("/settlements").get_data(as_text=True)
    assert "工作量统计明细表" in pm.get("/exports?contract=SH-YWTB-2025").get_data(as_text=True)
    r = pm.get("/exports/workload.csv")
    assert r.status_code == 200 and r.data.startswith(b"\xef\xbb\xbf")
    r = pm.get(f"/settlements/{sid}/claim.xlsx")
    assert r.status_code == 200
    assert Browser(app, "impl").get(f"/settlements/{sid}").status_code == 403


def test_entries_of_a_claim_under_review_cannot_be_reversed(sworld, app, cli):
    """Unclaimed entries and those of a claim the PM holds (draft, or returned for revision) may be reversed;
    those of a submitted claim (third-party review, first review, final approval) are refused with 409
    entry_under_review until the claim comes back and the PM takes the line out — over the API, the web
    page and the command line alike."""
    w = sworld
    items = completed_items(6, prefix="UR")
    free_item = completed_items(1, prefix="FREE", at=datetime(2025, 6, 1, tzinfo=UTC))  # outside the period
    entries = entry_ids(items)
    sid = open_settlement(w)["id"]

    def reverse(entry, user="pm"):
        return w.post(user, f"/api/v1/workload/entries/{entry}/reverse", json={"reason": "数量登记错误"})

    assert reverse(entry_ids(free_item)[0]).status_code == 201  # unclaimed
    assert reverse(entries[0]).status_code == 201  # draft
    w.post("pm", f"/api/v1/settlements/{sid}/submit", json={})
    for stage, step in (("audit", None), ("first_review", ("auditor", "accept", {})),
                        ("final_approval", ("buyer", "first-review", {"decision": "approve"}))):
        if step:
            r = w.post(step[0], f"/api/v1/settlements/{sid}/{step[1]}", json=step[2])
            assert r.status_code == 200, r.get_json()
        r = reverse(entries[1])
        assert r.status_code == 409, r.get_json()
        body = r.get_json()
        assert (body["code"], body["settlement_id"], body["settlement_status"]) == ("entry_under_review", sid, stage)
    assert db.session.execute(select(func.count(WorkloadEntry.id))
                              .where(WorkloadEntry.reverses_id == entries[1])).scalar() == 0

    # The web ledger page and the command line refuse it too, and say why.
    from tests.test_web import Browser

    browser = Browser(app, "pm")
    browser.get("/ledger")
    r = browser.post(f"/ledger/{entries[2]}/reverse", {"reason": "数量登记错误"}, follow_redirects=True)
    assert "请填写冲销原因并勾选确认" in r.get_data(as_text=True)  # irreversible: confirmed first
    r = browser.post(f"/ledger/{entries[2]}/reverse", {"reason": "数量登记错误", "confirm": "1"},
                     follow_redirects=True)
    assert "该分录所在的结算申报正在审核中" in r.get_data(as_text=True)
    db.session.commit()
    result = cli("ledger", "reverse", str(entries[3]), "--reason", "事后更正", "--user", "pm")
    assert result.exit_code == 1 and "entry_under_review" in result.output, result.output
    db.session.rollback()
    assert db.session.execute(select(func.count(WorkloadEntry.id))
                              .where(WorkloadEntry.reverses_id.in_(entries[1:4]))).scalar() == 0

    # Returned for revision, the claim is the PM's again: the line can be reversed, or removed and reversed.
    r = w.post("buyer2", f"/api/v1/settlements/{sid}/final-approval", json={"decision": "return", "comment": "核减"})
    assert r.status_code == 200 and r.get_json()["status"] == "revising"
    assert reverse(entries[1]).status_code == 201
    r = w.post("pm", f"/api/v1/settlements/{sid}/lines/remove", json={"entry_ids": [entries[2]], "reason": "核减"})
    assert r.status_code == 200
    assert reverse(entries[2]).status_code == 201
    # Approved, the claim is locked for good.
    drive_to_approved(w, sid)
    r = reverse(entries[4])
    assert r.status_code == 409 and r.get_json()["code"] == "settlement_locked"


def test_a_task_that_is_closed_cannot_be_released_or_handed_over(world):
    """Releasing or handing over a completed task is refused (409 task_not_ready), and its holder stays."""
    item_id = world.new_item("CLOSED-1")["id"]
    task = world.complete_task_as("impl", item_id, "intake", {"summary": "需求概述"})
    for url, body in (("unclaim", {}), ("handover", {"to": "impl2"})):
        r = world.post("pm", f"/api/v1/tasks/{task['id']}/{url}", json=body)
        assert r.status_code == 409 and r.get_json()["code"] == "task_not_ready", r.get_json()
    row = world.get("pm", f"/api/v1/items/{item_id}").get_json()["tasks"]
    assert next(t for t in row if t["id"] == task["id"])["assignee"] == "impl"

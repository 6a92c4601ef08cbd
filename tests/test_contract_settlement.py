"""Settlement as the contract runs it (issue 17): stages, carried entries, clocks, payments, grades, bands, audit
and masking — on SQLite and PostgreSQL, with seed 001's figures where the seed gives them."""
from __future__ import annotations

import dataclasses
import hashlib
import io
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import openpyxl
import pypdf
import pytest
from sqlalchemy import select, update

from api.extensions import db
from api.serializers import iso
from bpmn import CATALOG_DIR
from engine.contract import schedule
from engine.contract.calendar import TZ
from engine.contract.catalog import CatalogError, out_of_period_mode, parse_catalog
from engine.money.payments import compute
from engine.usecases.tasks import work_calendar
from storage.models import AuditEvent, Contract, ContractTask, HumanTask, Settlement, User, WorkItem
from tests.settlement_helpers import CONTRACT, adhoc_contract, completed_items, drive_to_approved, entry_ids

D = Decimal


def at(y: int, m: int, d: int) -> datetime:
    return datetime(y, m, d, 4, 0, tzinfo=UTC)  # 12:00 Beijing


@pytest.fixture
def cw(world):
    world.user("buyer2", "buyer")
    return world


def contract() -> Contract:
    return db.session.execute(select(Contract).where(Contract.code == CONTRACT)).scalar_one()


def set_settings(**changes):
    c = contract()
    c.settings = dict(c.settings or {}, **changes)
    db.session.commit()


def open_stage(w, stage, expect=201):
    r = w.post("pm", "/api/v1/settlements", json={"contract": CONTRACT, "stage": stage})
    assert r.status_code == expect, r.get_json()
    return r.get_json()


# ---------------------------------------------------------------- 1. stages

def test_stage_claims_take_their_period_refuse_other_stages_and_carry_with_a_reason(cw):
    w = cw
    six = completed_items(2, prefix="S6", at=at(2025, 3, 10))
    nine = completed_items(1, prefix="S9", at=at(2025, 8, 5))
    r = w.post("pm", "/api/v1/settlements", json={"contract": CONTRACT, "period_start": "2025-01-01",
                                                  "period_end": "2025-06-30"})
    assert r.status_code == 422 and r.get_json()["code"] == "stage_required"
    assert r.get_json()["stages"] == ["6m", "9m", "annual", "final"]

    s6 = open_stage(w, "6m")
    assert (s6["stage"], s6["period_start"], s6["period_end"]) == ("6m", "2025-01-01", "2025-06-30")
    assert s6["label"] == "6个月阶段性结算"
    assert sorted(ln["id"] for ln in s6["lines"]) == entry_ids(six)
    expected_due, _ = schedule.working_deadline(work_calendar(db.session), schedule.after_day(
        datetime(2025, 6, 30).date()), 20)
    assert s6["due_at"] == iso(expected_due)
    assert s6["deadlines"][0]["clock"] == "materials" and s6["deadlines"][0]["state"] == "overdue"
    # One claim per stage: periods never overlap.
    assert open_stage(w, "6m", 409)["code"] == "stage_already_open"
    r = w.post("pm", "/api/v1/settlements", json={"contract": CONTRACT, "stage": "9m", "period_start": "2025-06-01"})
    assert r.status_code == 422 and r.get_json()["code"] == "invalid_period"
    assert open_stage(w, "7m", 422)["code"] == "unknown_stage"

    missed = completed_items(1, prefix="L6", at=at(2025, 5, 20))   # a 6-month entry the 6m claim did not gather
    later = completed_items(1, prefix="AN", at=at(2025, 11, 3))    # an annual-stage entry
    s9 = open_stage(w, "9m")
    assert (s9["period_start"], s9["period_end"]) == ("2025-07-01", "2025-09-30")
    assert [ln["id"] for ln in s9["lines"]] == entry_ids(nine)
    sid = s9["id"]
    r = w.post("pm", f"/api/v1/settlements/{sid}/lines", json={"entry_ids": entry_ids(missed), "reason": "补报"})
    assert r.status_code == 422 and r.get_json()["code"] == "entry_outside_stage"
    r = w.post("pm", f"/api/v1/settlements/{sid}/lines",
               json={"entry_ids": entry_ids(later), "reason": "提前申报", "carry": True})
    assert r.status_code == 422 and r.get_json()["code"] == "entry_outside_stage"
    r = w.post("pm", f"/api/v1/settlements/{sid}/lines",
               json={"entry_ids": entry_ids(missed), "reason": "6个月结算时佐证未齐，结转至本期", "carry": True})
    assert r.status_code == 200, r.get_json()
    # The auditor sees the carried line with its reason.
    seen = w.get("auditor", f"/api/v1/settlements/{sid}").get_json()
    assert [(c["id"], c["carried"], c["added_reason"]) for c in seen["carried"]] == [
        (entry_ids(missed)[0], True, "6个月结算时佐证未齐，结转至本期")]
    assert any(n["kind"] == "carried" for n in seen["notes"])
    assert [(x["stage"], x["period_start"], x["period_end"]) for x in seen["stages"]] == [
        ("6m", "2025-01-01", "2025-06-30"), ("9m", "2025-07-01", "2025-09-30"),
        ("annual", "2025-10-01", "2025-12-31"), ("final", "2025-01-01", "2025-12-31")]

    # Outside the contract's service period: refused where the contract's one out_of_period rule says so.
    beyond = completed_items(1, prefix="OUT", at=at(2026, 1, 6))
    s_an = open_stage(w, "annual")
    assert [ln["id"] for ln in s_an["lines"]] == entry_ids(later)
    set_settings(out_of_period="refuse")
    r = w.post("pm", f"/api/v1/settlements/{s_an['id']}/lines",
               json={"entry_ids": entry_ids(beyond), "reason": "次年", "carry": True})
    assert r.status_code == 422 and r.get_json()["code"] == "out_of_period"
    assert r.get_json()["entries"] == entry_ids(beyond)


def test_flagged_entries_go_to_the_final_claim_or_are_carried_and_show_the_flag(cw, app):
    from tests.test_web import Browser

    w = cw
    assert contract().settings["out_of_period"] == "flag"      # the shipped default: flag, not refuse
    inside = completed_items(1, prefix="IN", at=at(2025, 2, 10))
    early = completed_items(1, prefix="EARLY", at=at(2025, 3, 3))
    beyond = completed_items(1, prefix="OUT", at=at(2026, 1, 6))   # tallied after the service period
    # Work registered outside the period (the item's flag) is out of period even when tallied inside it.
    item = db.session.get(WorkItem, early[0])
    item.out_of_period = True
    db.session.commit()
    s6 = open_stage(w, "6m")
    assert [ln["id"] for ln in s6["lines"]] == entry_ids(inside)   # a stage claim never gathers flagged work
    assert all(ln["out_of_period"] is False for ln in s6["lines"])
    lines = f"/api/v1/settlements/{s6['id']}/lines"
    r = w.post("pm", lines, json={"entry_ids": entry_ids(early), "reason": "补报"})
    assert r.status_code == 422 and r.get_json()["code"] == "entry_outside_stage"
    assert r.get_json()["entries"] == entry_ids(early)
    r = w.post("pm", lines, json={"entry_ids": entry_ids(beyond), "reason": "补报"})
    assert r.status_code == 422 and r.get_json()["code"] == "entry_outside_stage"
    r = w.post("pm", lines, json={"entry_ids": entry_ids(early), "reason": "服务期前登记，经确认结转", "carry": True})
    assert r.status_code == 200, r.get_json()
    seen = w.get("auditor", f"/api/v1/settlements/{s6['id']}").get_json()
    flagged = {ln["id"]: ln for ln in seen["lines"] if ln["out_of_period"]}
    assert list(flagged) == entry_ids(early)
    assert flagged[entry_ids(early)[0]]["carried"] is True
    assert flagged[entry_ids(early)[0]]["outside_service_period"] is True   # the pre-rename alias
    assert "服务期外" in Browser(app, "pm").get(f"/settlements/{s6['id']}").get_data(as_text=True)
    # The final claim takes a flagged entry as it is (it belongs to no stage), not carried.
    final = open_stage(w, "final")
    assert final["lines"] == []
    r = w.post("pm", f"/api/v1/settlements/{final['id']}/lines", json={"entry_ids": entry_ids(beyond),
                                                                       "reason": "服务期满后上线"})
    assert r.status_code == 200, r.get_json()
    seen = w.get("auditor", f"/api/v1/settlements/{final['id']}").get_json()
    assert [(ln["id"], ln["out_of_period"], ln["carried"]) for ln in seen["lines"]] == [
        (entry_ids(beyond)[0], True, False)]


def test_registration_and_settlement_read_the_one_out_of_period_setting(cw):
    w = cw
    beyond = completed_items(1, prefix="OUT", at=at(2026, 1, 6))   # registered while the rule was flag
    set_settings(out_of_period="refuse")
    # Registration outside the period (the contract runs in 2025; today is later): refused with the same code.
    r = w.post("pm", "/api/v1/items", json={"contract": CONTRACT, "service_line": "1", "name": "期外事项",
                                            "code": "OOP-1", "department": "DA", "channels": ["pc"],
                                            "mode": "new", "difficulty": 1.0})
    assert r.status_code == 422 and r.get_json()["code"] == "out_of_period"
    set_settings(out_of_period="flag")
    r = w.post("pm", "/api/v1/items", json={"contract": CONTRACT, "service_line": "1", "name": "期外事项",
                                            "code": "OOP-1", "department": "DA", "channels": ["pc"],
                                            "mode": "new", "difficulty": 1.0})
    assert r.status_code == 201 and r.get_json()["out_of_period"] is True
    # A contract stored before the rename, with only the settlement's old key: both paths read it.
    c = contract()
    c.settings = {k: v for k, v in c.settings.items() if k != "out_of_period"} | {"outside_service_period": "refuse"}
    db.session.commit()
    r = w.post("pm", "/api/v1/items", json={"contract": CONTRACT, "service_line": "1", "name": "期外事项",
                                            "code": "OOP-2", "department": "DA", "channels": ["pc"],
                                            "mode": "new", "difficulty": 1.0})
    assert r.status_code == 422 and r.get_json()["code"] == "out_of_period"
    final = open_stage(w, "final")
    r = w.post("pm", f"/api/v1/settlements/{final['id']}/lines", json={"entry_ids": entry_ids(beyond),
                                                                       "reason": "服务期满后上线"})
    assert r.status_code == 422 and r.get_json()["code"] == "out_of_period"


def test_an_ad_hoc_claim_gathers_no_out_of_period_work_where_the_contract_refuses_it(cw):
    w = cw
    adhoc_contract()
    inside = completed_items(1, prefix="IN", at=at(2025, 12, 10))
    beyond = completed_items(1, prefix="OUT", at=at(2026, 1, 6))
    flagged = completed_items(1, prefix="FLG", at=at(2025, 12, 11))
    item = db.session.get(WorkItem, flagged[0])
    item.out_of_period = True
    db.session.commit()
    body = {"contract": CONTRACT, "period_start": "2025-12-01", "period_end": "2026-01-31"}
    set_settings(out_of_period="refuse")
    r = w.post("pm", "/api/v1/settlements", json=body)
    assert r.status_code == 201, r.get_json()
    assert [ln["id"] for ln in r.get_json()["lines"]] == entry_ids(inside)
    r = w.post("pm", f"/api/v1/settlements/{r.get_json()['id']}/lines",
               json={"entry_ids": entry_ids(beyond), "reason": "次年"})
    assert r.status_code == 422 and r.get_json()["code"] == "out_of_period"
    # Flag (the default): an ad-hoc period gathers what it covers, and its lines show the flag.
    set_settings(out_of_period="flag")
    r = w.post("pm", "/api/v1/settlements", json=dict(body, period_start="2026-01-01"))
    assert r.status_code == 201, r.get_json()
    assert [(ln["id"], ln["out_of_period"]) for ln in r.get_json()["lines"]] == [(entry_ids(beyond)[0], True)]


def test_a_catalogue_with_the_old_setting_name_loads_with_a_warning():
    text = (CATALOG_DIR / "shanghai.toml").read_text(encoding="utf-8")
    assert "outside_service_period" not in text
    old = text.replace('out_of_period = "flag"\n', "").replace(
        "[contract.settings]\n", '[contract.settings]\noutside_service_period = "refuse"\n')
    parsed = parse_catalog(old, "old.toml")
    assert parsed["contract"]["settings"]["out_of_period"] == "refuse"
    assert "outside_service_period" not in parsed["contract"]["settings"]
    assert len(parsed["warnings"]) == 1 and "out_of_period = 'refuse'" in parsed["warnings"][0]
    both = text.replace("[contract.settings]\n", '[contract.settings]\noutside_service_period = "refuse"\n')
    parsed = parse_catalog(both, "both.toml")
    assert parsed["contract"]["settings"]["out_of_period"] == "flag"
    assert "out_of_period = 'flag' applies" in parsed["warnings"][0]
    assert parse_catalog(text, "new.toml")["warnings"] == []
    with pytest.raises(CatalogError, match="outside_service_period"):
        parse_catalog(text.replace("[contract.settings]\n", '[contract.settings]\noutside_service_period = "x"\n'),
                      "bad.toml")
    assert out_of_period_mode({"outside_service_period": "refuse"}) == "refuse"
    assert out_of_period_mode({"out_of_period": "flag", "outside_service_period": "refuse"}) == "flag"
    assert out_of_period_mode({}) == "flag"


def test_annual_shows_the_approved_staged_claims_and_the_cumulative_amount(cw):
    w = cw
    completed_items(1, prefix="A6", at=at(2025, 2, 10))
    completed_items(1, prefix="A9", at=at(2025, 7, 10))
    completed_items(1, prefix="AA", at=at(2025, 10, 10))
    s6 = drive_to_approved(w, open_stage(w, "6m")["id"])
    s9 = drive_to_approved(w, open_stage(w, "9m")["id"])
    annual = open_stage(w, "annual")
    by = {x["stage"]: x for x in annual["stages"]}
    net6, net9 = s6["figures"]["net"], s9["figures"]["net"]
    assert by["6m"]["approved"] == net6 and by["9m"]["approved"] == net9
    assert by["9m"]["cumulative_approved"] == round(net6 + net9, 2)
    assert by["annual"]["this"] is True and by["annual"]["approved"] is None
    assert isinstance(annual["on_time"], list)   # the period's on-time rate per department, for the evaluation
    assert annual["figures"]["gross"] == 45000.0   # what is new in the annual stage
    # Late (its 20 working days passed): 3 % of the year's fee — the staged claims' gross and the new.
    assert annual["figures"]["late"] is True and annual["figures"]["penalty"] == 4050.0
    assert s6["figures"]["penalty"] == 1350.0       # a staged claim's 3 % is of its own fee


def test_the_claim_sheet_lists_every_stage_as_the_claim_json_does(cw):
    w = cw
    completed_items(1, prefix="X6", at=at(2025, 2, 10))
    completed_items(2, prefix="X9", at=at(2025, 7, 10))
    completed_items(1, prefix="XA", at=at(2025, 10, 10))
    drive_to_approved(w, open_stage(w, "6m")["id"])
    s9 = open_stage(w, "9m")                      # open, not yet approved: claimed but no approved amount
    annual = open_stage(w, "annual")
    seen = w.get("auditor", f"/api/v1/settlements/{annual['id']}").get_json()["stages"]
    r = w.get("auditor", f"/api/v1/settlements/{annual['id']}/claim.xlsx")
    assert r.status_code == 200
    book = openpyxl.load_workbook(io.BytesIO(r.data), read_only=True)
    rows = list(book["各阶段结算"].iter_rows(values_only=True))
    assert rows[0][:9] == ("结算阶段", "名称", "期间起", "期间止", "结算单号", "申报状态", "申报金额（元）",
                           "审定金额（元）", "累计审定金额（元）")
    assert len(rows) == 1 + len(seen) == 5
    for row, st in zip(rows[1:], seen, strict=True):
        assert row[0:5] == (st["stage"], st["name"], st["period_start"], st["period_end"],
                            st["settlement_id"] if st["settlement_id"] is not None else None)
        for value, key in ((row[6], "claimed"), (row[7], "approved"), (row[8], "cumulative_approved")):
            assert (value if value not in ("", None) else None) == st[key], (st["stage"], key)
        assert (row[9] == "是") is st["this"]
    by = {st["stage"]: st for st in seen}
    assert by["6m"]["status"] == "approved" and by["6m"]["approved"] is not None
    assert by["9m"]["settlement_id"] == s9["id"] and by["9m"]["claimed"] == s9["figures"]["gross"] == 90000.0
    assert by["9m"]["approved"] is None and by["final"]["settlement_id"] is None
    assert rows[1][5] == "已审定（锁定）" and rows[4][5] == "未开启"


def test_an_overlapping_schedule_is_refused_when_loaded():
    text = (CATALOG_DIR / "shanghai.toml").read_text(encoding="utf-8").replace(
        '{ stage = "9m", name = "9个月阶段性结算", months = [7, 9] }',
        '{ stage = "9m", name = "9个月阶段性结算", months = [6, 9] }')
    with pytest.raises(CatalogError, match="overlaps"):
        parse_catalog(text, "overlap.toml")


# ---------------------------------------------------------------- 2. clocks

def test_a_late_revision_costs_three_percent(cw):
    w = cw
    adhoc_contract()
    completed_items(2, prefix="RV")
    today = datetime.now(TZ).date()
    s = w.post("pm", "/api/v1/settlements", json={"contract": CONTRACT, "period_start": "2026-01-01",
                                                  "period_end": today.isoformat()}).get_json()
    sid = s["id"]
    assert w.post("pm", f"/api/v1/settlements/{sid}/submit", json={}).status_code == 200
    r = w.post("auditor", f"/api/v1/settlements/{sid}/return", json={"comment": "请补充佐证"})
    assert r.status_code == 200
    body = w.get("pm", f"/api/v1/settlements/{sid}").get_json()
    revision = next(d for d in body["deadlines"] if d["clock"] == "revision")
    returned_at = db.session.get(Settlement, sid).updated_at
    due, _ = schedule.working_deadline(work_calendar(db.session), returned_at, 15)
    assert revision == {"clock": "revision", "name": "修改完善", "due_at": iso(due), "state": "open"}
    assert body["figures"]["late"] is False and body["figures"]["penalty"] == 0
    # Fifteen working days pass without the revision.
    db.session.execute(update(Settlement).where(Settlement.id == sid)
                       .values(revision_due_at=datetime.now(UTC) - timedelta(minutes=1)))
    db.session.commit()
    assert w.get("pm", f"/api/v1/settlements/{sid}").get_json()["deadlines"][-1]["state"] == "overdue"
    r = w.post("pm", f"/api/v1/settlements/{sid}/submit", json={"note": "修改稿"})
    assert r.status_code == 200
    fig = w.get("auditor", f"/api/v1/settlements/{sid}").get_json()["figures"]
    assert fig["submission_late"] is False and fig["revision_late"] is True and fig["late"] is True
    assert fig["penalty_rate"] == 0.03 and fig["penalty"] == round(fig["gross"] * 0.03, 2) == 2700.0
    assert fig["net"] == fig["gross"] - 2700.0


# ---------------------------------------------------------------- 3. payments

SEED_001_PLAN = [
    {"number": 1, "name": "第一笔预付服务费", "amount": 91655000},
    {"number": 2, "name": "第二笔进度服务费", "after": "9m", "cap": 0.70},
    {"number": 3, "name": "第三笔进度服务费", "after": "annual", "cap": 0.80},
    {"number": 4, "name": "第四笔服务费尾款", "after": "final"},
]


def test_seed_001_payment_plan_computed_exactly():
    award = D("183310000")
    plan = compute(SEED_001_PLAN, award, {"6m": D("60000000"), "9m": D("140000000"), "annual": D("175000000"),
                                          "final": D("180000000")}, {})
    assert [(i.number, i.cap, i.target, i.due, i.capped) for i in plan] == [
        (1, None, D("91655000.00"), D("91655000.00"), D("0.00")),
        (2, D("128317000.00"), D("140000000.00"), D("36662000.00"), D("11683000.00")),   # 70 % cap
        (3, D("146648000.00"), D("175000000.00"), D("18331000.00"), D("28352000.00")),   # 80 % cap
        (4, None, D("180000000.00"), D("33352000.00"), D("0.00")),                        # the balance
    ]
    # Under the caps: the second is the 9-month amount less the advance; nothing yet after it.
    plan = compute(SEED_001_PLAN, award, {"9m": D("120000000")}, {1: D("91655000")})
    assert [(i.due, i.paid, i.outstanding, i.state) for i in plan] == [
        (D("91655000.00"), D("91655000.00"), D("0.00"), "paid"),
        (D("28345000.00"), D("0.00"), D("28345000.00"), "due"),
        (D("0.00"), D("0.00"), D("0.00"), "waiting"), (D("0.00"), D("0.00"), D("0.00"), "waiting")]
    # A final amount below what was paid: nothing more is due.
    plan = compute(SEED_001_PLAN, award, {"9m": D("140000000"), "annual": D("175000000"), "final": D("140000000")},
                   {})
    assert plan[3].due == D("0.00") and plan[3].state == "nothing_due"


def test_payments_api_and_schedule_with_seed_001_figures(cw):
    w = cw
    assert float(contract().award_amount) == 183_310_000.0
    r = w.get("buyer", f"/api/v1/contracts/{CONTRACT}/payments")
    assert r.status_code == 200
    body = r.get_json()
    assert [(p["number"], p["due"], p["state"]) for p in body["payments"]] == [
        (1, 91655000.0, "due"), (2, 0.0, "waiting"), (3, 0.0, "waiting"), (4, 0.0, "waiting")]
    r = w.post("buyer", f"/api/v1/contracts/{CONTRACT}/payments",
               json={"amount": 91655000, "paid_on": "2025-01-20", "invoice_number": "INV-001"})
    assert r.status_code == 201, r.get_json()
    assert r.get_json()["payments"][0]["paid"] == 91655000.0 and r.get_json()["payments"][0]["state"] == "paid"
    assert w.post("pm", f"/api/v1/contracts/{CONTRACT}/payments",
                  json={"amount": 1, "paid_on": "2025-01-20", "invoice_number": "X"}).status_code == 403

    completed_items(1, prefix="P6", at=at(2025, 2, 10))
    completed_items(1, prefix="P9", at=at(2025, 7, 10))
    for stage in ("6m", "9m", "annual", "final"):
        drive_to_approved(w, open_stage(w, stage)["id"])
    # The approved amounts at the seed's scale (the real claims here are small).
    for stage, net in (("6m", "60000000"), ("9m", "80000000"), ("annual", "35000000"), ("final", "5000000")):
        db.session.execute(update(Settlement).where(Settlement.stage == stage).values(net_amount=D(net)))
    db.session.commit()
    body = w.get("auditor", f"/api/v1/contracts/{CONTRACT}/payments").get_json()
    assert body["approved_cumulative"] == {"6m": 60e6, "9m": 140e6, "annual": 175e6, "final": 180e6}
    assert [(p["number"], p["cap"], p["due"], p["capped"], p["paid"]) for p in body["payments"]] == [
        (1, None, 91655000.0, 0.0, 91655000.0), (2, 128317000.0, 36662000.0, 11683000.0, 0.0),
        (3, 146648000.0, 18331000.0, 28352000.0, 0.0), (4, None, 33352000.0, 0.0, 0.0)]
    r = w.post("buyer", f"/api/v1/contracts/{CONTRACT}/payments",
               json={"amount": 40000000, "paid_on": "2025-10-20", "invoice_number": "INV-002", "number": 2})
    assert r.status_code == 409 and r.get_json()["code"] == "payment_exceeds_due"
    r = w.post("buyer", f"/api/v1/contracts/{CONTRACT}/payments",
               json={"amount": 36662000, "paid_on": "2025-10-20", "invoice_number": "INV-002"})
    assert r.status_code == 201 and r.get_json()["payments"][1]["state"] == "paid"

    r = w.get("buyer", f"/api/v1/contracts/{CONTRACT}/payments.xlsx")
    assert r.status_code == 200
    sheet = openpyxl.load_workbook(io.BytesIO(r.data))["支付计划"]
    rows = [[c.value for c in row] for row in sheet.iter_rows(min_row=4, max_row=7)]
    assert [(x[0], x[5], x[6], x[7], x[8], x[10]) for x in rows] == [
        (1, "—", 0, 91655000, 91655000, "已付清"), (2, 128317000, 11683000, 36662000, 36662000, "已付清"),
        (3, 146648000, 28352000, 18331000, 0, "应付"), (4, "—", 0, 33352000, 0, "应付")]


def test_final_approval_beyond_award_plus_ten_percent_is_refused(cw):
    w = cw
    c = contract()
    c.award_amount = D("100000")           # limit 110,000; three items are 135,000 gross
    db.session.commit()
    completed_items(3, prefix="OV", at=at(2025, 3, 3))
    sid = open_stage(w, "6m")["id"]
    w.post("pm", f"/api/v1/settlements/{sid}/submit", json={})
    w.post("auditor", f"/api/v1/settlements/{sid}/accept", json={})
    w.post("buyer", f"/api/v1/settlements/{sid}/first-review", json={"decision": "approve"})
    r = w.post("buyer2", f"/api/v1/settlements/{sid}/final-approval", json={"decision": "approve"})
    assert r.status_code == 409 and r.get_json()["code"] == "over_award"
    body = r.get_json()
    # Late first submission: 135,000 − 3 % = 130,950.
    assert (body["award_limit"], body["settled_total"], body["award"]) == ("110000.00", "130950.00", "100000.00")
    assert db.session.get(Settlement, sid).status == "final_approval"


# ---------------------------------------------------------------- 4. grades and bands

@pytest.mark.parametrize(("score", "grade"), [
    ("100", "优秀"), ("90", "优秀"), ("89.99", "良好"), ("80", "良好"), ("79.99", "一般"), ("70", "一般"),
    ("69.99", "合格"), ("60", "合格"), ("59.99", "不合格"), ("0", "不合格")])
def test_grades_at_every_boundary(score, grade):
    assert schedule.grade_for(D(score)) == grade


def test_a_failing_grade_opens_a_rectification_due_in_twenty_working_days(cw):
    w = cw
    completed_items(1, prefix="GR", at=at(2025, 3, 3))
    sid = open_stage(w, "6m")["id"]
    w.post("pm", f"/api/v1/settlements/{sid}/submit", json={})
    w.post("auditor", f"/api/v1/settlements/{sid}/accept", json={})
    r = w.post("buyer", f"/api/v1/settlements/{sid}/first-review",
               json={"decision": "approve", "assessment_score": 59.5})
    assert r.status_code == 200 and r.get_json()["grade"] == "不合格"
    task = db.session.execute(select(ContractTask).where(ContractTask.settlement_id == sid)).scalar_one()
    assert task.kind == "rectification" and task.status == "open"
    created = db.session.execute(select(AuditEvent.at).where(
        AuditEvent.event_type == "settlement.rectification_opened")).scalar_one()
    due, _ = schedule.working_deadline(work_calendar(db.session), created, 20)
    assert task.due_at == due
    body = w.get("pm", f"/api/v1/settlements/{sid}").get_json()
    assert body["rectifications"][0]["due_at"] == iso(due)


def test_seed_000_bands_apply_per_quarter(cw):
    w = cw
    set_settings(settlement_schedule="quarterly", deduction_bands="seed_000")
    completed_items(2, prefix="Q1", at=at(2025, 2, 10))
    completed_items(2, prefix="Q2", at=at(2025, 5, 10))
    completed_items(2, prefix="Q3", at=at(2025, 8, 10))
    results = {}
    for quarter, score in (("q1", 95), ("q2", 85), ("q3", 60)):
        s = open_stage(w, quarter)
        assert len(s["lines"]) == 2
        results[quarter] = drive_to_approved(w, s["id"], score=score)["figures"]
    # Each quarter is late (its 20 working days passed long ago): 3 % off the 90,000 gross, then its band.
    assert [(q, f["deduction_rate"], f["deduction"], f["net"]) for q, f in results.items()] == [
        ("q1", 0.0, 0.0, 87300.0), ("q2", 0.05, 4500.0, 82800.0), ("q3", 0.5, 45000.0, 42300.0)]


# ---------------------------------------------------------------- 5. audit and masking

def test_an_export_and_a_denied_request_are_audit_events_listed_for_the_auditor(cw):
    w = cw
    completed_items(1, prefix="AU", at=at(2025, 3, 3))
    sid = open_stage(w, "6m")["id"]
    r = w.get("auditor", f"/api/v1/settlements/{sid}/claim.xlsx")
    assert r.status_code == 200
    assert w.get("pm", "/api/v1/audit").status_code == 403
    r = w.get("auditor", "/api/v1/audit?event=export&user=auditor")
    assert r.status_code == 200
    events = r.get_json()["events"]
    assert len(events) == 1 and events[0]["event"] == "export.downloaded"
    assert events[0]["target_id"] == "settlements.settlements_claim_xlsx"
    denied = w.get("admin", "/api/v1/audit?event=access.denied").get_json()["events"]
    assert denied[0]["user"] == "pm" and denied[0]["detail"]["path"] == "/api/v1/audit"
    assert denied[0]["outcome"] == "refused"
    paged = w.get("admin", "/api/v1/audit?per_page=2&page=1").get_json()
    assert len(paged["events"]) == 2 and paged["total"] > 2
    # Exporting the trail is itself an event, with its filter and row count.
    r = w.get("auditor", "/api/v1/audit.xlsx?event=access.denied")
    assert r.status_code == 200
    last = db.session.execute(select(AuditEvent).order_by(AuditEvent.id.desc()).limit(1)).scalar_one()
    assert (last.event_type, last.username, last.detail["filter"], last.detail["rows"]) == (
        "export.downloaded", "auditor", {"event": "access.denied"}, 1)


def test_a_citizens_id_number_is_masked_in_the_auditors_export(cw):
    w = cw
    w.new_item("SH-MASK-1", attributes={"id_number": "310101199001011234", "phone": "13812345678",
                                        "citizen_name": "张三丰", "note": "样本"})

    def export(user):
        r = w.get(user, f"/api/v1/exports/items.xlsx?contract={CONTRACT}")
        assert r.status_code == 200
        rows = list(openpyxl.load_workbook(io.BytesIO(r.data))["事项清单"].iter_rows(values_only=True))
        return dict(zip(rows[0], rows[1], strict=True))

    seen = export("auditor")
    assert (seen["id_number"], seen["phone"], seen["citizen_name"], seen["note"]) == (
        "310101********1234", "138****5678", "张**", "样本")
    clear = export("pm")   # the contract clears the PM (unmasked_roles)
    assert clear["id_number"] == "310101199001011234"


def test_on_time_rate_against_a_response_tier(cw):
    w = cw
    items = [w.new_item(f"SH-RT-{i}", department=dept)["id"] for i, dept in enumerate(("DA", "DA", "DB"))]
    tasks = [db.session.execute(select(HumanTask).where(HumanTask.item_id == i).order_by(HumanTask.id)
                                .limit(1)).scalar_one() for i in items]
    spec = tasks[0].spec_name
    set_settings(response_tiers={"demand": 5, "problem": 15}, task_tiers={spec: "demand"})
    now = datetime.now(UTC)
    impl = db.session.execute(select(User).where(User.username == "impl")).scalar_one()
    # Answered in 4 minutes (on time), in 6 minutes (late: the tier is 5), and one still open after an hour.
    for task, minutes in ((tasks[0], 4), (tasks[1], 6)):
        task.created_at = now - timedelta(hours=2)
        task.completed_at = task.created_at + timedelta(minutes=minutes)
        task.status = "completed"
        task.completed_by_id = impl.id
    tasks[2].created_at = now - timedelta(hours=1)
    db.session.commit()
    r = w.get("pm", f"/api/v1/contracts/{CONTRACT}/performance?by=department&from=2026-01-01")
    assert r.status_code == 200, r.get_json()
    rows = {x["key"]: x for x in r.get_json()["rows"]}
    assert (rows["DA"]["on_time"], rows["DA"]["late"], rows["DA"]["rate"]) == (1, 1, 0.5)
    assert (rows["DB"]["open_overdue"], rows["DB"]["overdue"], rows["DB"]["rate"]) == (1, 1, 0.0)
    by_impl = w.get("pm", f"/api/v1/contracts/{CONTRACT}/performance?by=implementer&from=2026-01-01").get_json()
    assert {x["key"]: x["rate"] for x in by_impl["rows"]}["impl"] == 0.5


# ---------------------------------------------------------------- monthly operations report

def test_monthly_report_drafted_from_data_and_one_working_day_late_costs_three_percent_of_the_month(cw, app):
    from engine.evidence.sheets import pdf_text
    from engine.usecases import monthly_report as mr
    from engine.usecases.tasks import Ctx

    w = cw
    completed_items(2, prefix="MR3", at=at(2025, 3, 12))          # March's fee: 2 × 45,000
    completed_items(1, prefix="MR4", at=at(2025, 4, 2))           # April's: not March's
    r = w.get("pm", f"/api/v1/contracts/{CONTRACT}/monthly-reports")
    assert r.status_code == 200
    reports = {x["month"]: x for x in r.get_json()["reports"]}
    assert list(reports) == [f"2025-{m:02d}" for m in range(1, 13)]
    march = reports["2025-03"]
    # Due: the 10th working day after March (4 April 2025 is 清明, a holiday) → 15 April, 23:59:59 Beijing.
    assert march["due_at"] == "2025-04-15T15:59:59Z" and march["status"] == "open"
    body = w.get("auditor", f"/api/v1/monthly-reports/{march['id']}").get_json()
    assert body["draft"]["month_fee"] == 90000.0 and body["draft"]["totals"]["entries"] == 2
    r = w.get("pm", f"/api/v1/monthly-reports/{march['id']}/report.xlsx")
    sheet = openpyxl.load_workbook(io.BytesIO(r.data))["概况"]
    facts = {row[0]: row[1] for row in sheet.iter_rows(values_only=True) if row[0]}
    assert facts["本月结算费用（元）"] == 90000 and facts["本月计量分录"] == 2
    pdf = w.get("pm", f"/api/v1/monthly-reports/{march['id']}/report.pdf")
    assert pdf.status_code == 200 and pdf.data.startswith(b"%PDF")
    # The PDF says what the XLSX says, in Chinese, with the font embedded (engine/evidence/pdf.py).
    reader = pypdf.PdfReader(io.BytesIO(pdf.data))
    text = pdf_text(pdf.data)
    for heading in ("月度运营报告（2025-03）", "本月结算费用（元）", "本月计量分录", "运营情况说明", "按服务类别与部门",
                    "按时处理率", "目标进度", "服务类别", "需求部门", "金额（元）"):
        assert heading in text, heading
    assert "90,000.00" in text and f"{facts['本月受理事项']}" in text
    fonts = {str(f["/BaseFont"]) for page in reader.pages for f in page["/Resources"]["/Font"].values()}
    assert fonts and all("STSong" not in f for f in fonts)
    descendant = next(iter(reader.pages[0]["/Resources"]["/Font"].values()))["/DescendantFonts"][0]
    assert any(k in descendant["/FontDescriptor"] for k in ("/FontFile2", "/FontFile3"))
    settings = app.config["ITEMGATE"]
    app.config["ITEMGATE"] = dataclasses.replace(settings, cjk_font="/nonexistent/font.ttc")
    try:
        r = w.get("pm", f"/api/v1/monthly-reports/{march['id']}/report.pdf")
    finally:
        app.config["ITEMGATE"] = settings
    assert r.status_code == 503 and r.get_json()["code"] == "cjk_font_missing"

    assert w.post("pm", f"/api/v1/monthly-reports/{march['id']}/submit").get_json()["code"] == "narrative_required"
    r = w.post("pm", f"/api/v1/monthly-reports/{march['id']}/narrative", json={"narrative": "三月运营情况良好。"})
    assert r.status_code == 200
    r = w.post("pm", f"/api/v1/monthly-reports/{march['id']}/attachments",
               data={"file": (io.BytesIO(b"%PDF-1.4 annex"), "附件.pdf")}, content_type="multipart/form-data")
    assert r.status_code == 201, r.get_json()
    # Submitted on 16 April, 10:00 Beijing: one working day late.
    submitted = datetime(2025, 4, 16, 2, 0, tzinfo=UTC)
    report = mr.load(db.session, march["id"])
    assert work_calendar(db.session).working_days_between(report.due_at, submitted) == 1
    mr.submit(Ctx(session=db.session, user=db.session.execute(select(User).where(User.username == "pm"))
                  .scalar_one(), now=submitted, store=app.extensions["itemgate_store"],
                  cjk_font=app.config["ITEMGATE"].cjk_font), report)
    db.session.commit()
    got = w.get("auditor", f"/api/v1/monthly-reports/{march['id']}").get_json()
    assert (got["late"], got["month_fee"], got["deduction_rate"], got["deduction"]) == (True, "90000.00", "0.03",
                                                                                        "2700.00")
    # The submission keeps the report as drafted then, hashed in the store; the auditor downloads exactly that.
    [sub] = got["submissions"]
    assert sub["round"] == 1 and sub["by"] == "pm" and set(sub["files"]) == {"xlsx", "pdf"}
    completed_items(1, prefix="MR3L", at=at(2025, 3, 20))   # March's data changes after the submission
    for fmt in ("xlsx", "pdf"):
        r = w.get("auditor", f"/api/v1/monthly-reports/{march['id']}/report.{fmt}")
        assert r.status_code == 200 and hashlib.sha256(r.data).hexdigest() == sub["files"][fmt]["sha256"]
    kept = openpyxl.load_workbook(io.BytesIO(w.get("auditor", f"/api/v1/monthly-reports/{march['id']}/report.xlsx")
                                              .data))["概况"]
    assert {row[0]: row[1] for row in kept.iter_rows(values_only=True) if row[0]}["本月计量分录"] == 2
    today = openpyxl.load_workbook(io.BytesIO(w.get(
        "auditor", f"/api/v1/monthly-reports/{march['id']}/report.xlsx?draft=1").data))["概况"]
    assert {row[0]: row[1] for row in today.iter_rows(values_only=True) if row[0]}["本月计量分录"] == 3
    assert got["attachments"][0]["filename"] == "附件.pdf" and got["status"] == "submitted"
    r = w.post("auditor", f"/api/v1/monthly-reports/{march['id']}/review", json={"decision": "accept"})
    assert r.status_code == 200 and r.get_json()["status"] == "accepted"
    # The 3 % is a deduction on the stage claim that covers March (the 6-month stage).
    s6 = open_stage(w, "6m")
    fig = s6["figures"]
    assert fig["other_deductions"] == 2700.0
    assert fig["monthly_report_deductions"][0]["month"] == "2025-03"
    assert fig["net"] == round(fig["gross"] - fig["penalty"] - fig["deduction"] - 2700.0, 2)


# ---------------------------------------------------------------- web pages

def test_web_payment_schedule_claim_page_and_dashboard_show_the_money_rules(cw, app):
    from tests.test_web import Browser

    w = cw
    missed = completed_items(1, prefix="WB6", at=at(2025, 4, 3))
    completed_items(1, prefix="WB9", at=at(2025, 8, 3))
    s9 = open_stage(w, "9m")
    r = w.post("pm", f"/api/v1/settlements/{s9['id']}/lines",
               json={"entry_ids": entry_ids(missed), "reason": "上期漏报", "carry": True})
    assert r.status_code == 200
    pm = Browser(app, "pm")
    page = pm.get(f"/settlements/{s9['id']}").get_data(as_text=True)
    assert "结转" in page and "上期漏报" in page and 'data-stage="9m"' in page and 'data-clock="materials"' in page
    dash = pm.get("/dashboard").get_data(as_text=True)
    assert 'id="clocks"' in dash and 'data-kind="settlement_materials"' in dash and 'data-kind="monthly_report"' in dash
    clocks = w.get("pm", f"/api/v1/contracts/{CONTRACT}/deadlines").get_json()["deadlines"]
    assert [(c["kind"], c["settlement_id"], c["state"]) for c in clocks if c["kind"].startswith("settlement")] == [
        ("settlement_materials", s9["id"], "overdue")]
    buyer = Browser(app, "buyer")
    r = buyer.get(f"/contracts/{CONTRACT}/payments")
    assert r.status_code == 200
    html = r.get_data(as_text=True)
    assert 'data-number="1"' in html and "91,655,000.00" in html and "登记付款" in html
    r = buyer.post(f"/contracts/{CONTRACT}/payments", {"amount": "91655000", "paid_on": "2025-01-20",
                                                      "invoice_number": "INV-W1"})
    assert r.status_code == 302
    assert w.get("auditor", f"/api/v1/contracts/{CONTRACT}/payments").get_json()["payments"][0]["paid"] == 91655000.0
    assert pm.get(f"/contracts/{CONTRACT}/payments").status_code == 200
    assert Browser(app, "impl").get(f"/contracts/{CONTRACT}/payments").status_code == 403


def test_item_pages_mask_personal_data_for_roles_that_do_not_need_it(cw):
    w = cw
    item = w.new_item("SH-MASK-2", attributes={"id_number": "310101199001011234", "phone": "13812345678"})
    assert item["attributes"]["id_number"] == "310101199001011234"     # the PM registered it and sees it
    seen = w.get("auditor", f"/api/v1/items/{item['id']}").get_json()
    assert seen["attributes"] == {"id_number": "310101********1234", "phone": "138****5678"}


def test_monthly_report_steps_are_for_their_roles(cw):
    from engine.errors import Forbidden
    from engine.usecases import monthly_report as mr
    from engine.usecases.tasks import Ctx

    w = cw
    report = w.get("pm", f"/api/v1/contracts/{CONTRACT}/monthly-reports").get_json()["reports"][0]
    assert w.post("auditor", f"/api/v1/monthly-reports/{report['id']}/narrative",
                  json={"narrative": "x"}).status_code == 403
    assert w.post("pm", f"/api/v1/monthly-reports/{report['id']}/review",
                  json={"decision": "accept"}).status_code == 403
    auditor = db.session.execute(select(User).where(User.username == "auditor")).scalar_one()
    with pytest.raises(Forbidden, match="draft, write and submit"):
        mr.write(Ctx(session=db.session, user=auditor), mr.load(db.session, report["id"]), "x")

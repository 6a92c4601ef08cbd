"""The demo's monthly reports (issue 17): months already past are submitted and accepted on time, each kept with
its drafted files in the object store, so a fresh demo's PM inbox is not full of late reports."""
from __future__ import annotations

import hashlib
from datetime import UTC, datetime

from sqlalchemy import select

from api.demo import DEMO_PASSWORD, load_demo
from api.extensions import db
from engine.contract.calendar import TZ
from engine.usecases.settlement import clock_state
from storage.models import Contract, ContractTask, HumanTask, WorkItem

SH = "SH-YWTB-2025"


def test_the_demo_accepts_past_monthly_reports_on_time_and_their_files_download(app, store):
    lines: list[str] = []
    load_demo(app, store, echo=lines.append)
    now = datetime.now(UTC)
    today = now.astimezone(TZ).date()
    contract = db.session.execute(select(Contract).where(Contract.code == SH)).scalar_one()
    assert contract.period_start <= today <= contract.period_end
    reports = list(db.session.scalars(select(ContractTask).where(
        ContractTask.contract_id == contract.id, ContractTask.kind == "monthly_report")
        .order_by(ContractTask.period_start)))
    # Only the moved period's months exist (the reports are made after the period is moved, not before).
    assert [r.period_start for r in reports][0] == contract.period_start
    assert all(contract.period_start <= r.period_start <= contract.period_end for r in reports)
    ended = [r for r in reports if r.period_end < today]
    past, rest = ended[:-1], [r for r in reports if r not in ended[:-1]]
    for r in past:
        assert r.status == "accepted" and r.late is False, r.key
        assert r.period_end < r.submitted_at.astimezone(TZ).date() and r.submitted_at <= r.due_at, r.key
        assert clock_state(r.due_at, r.submitted_at, now) == "on_time"
        assert [v["decision"] for v in r.data["reviews"]] == ["accept"]
    assert all(r.status == "open" and r.submitted_at is None for r in rest)
    if past:
        assert any("past months submitted and accepted on time" in line for line in lines)
    # Each ended month's report runs as a work item; a past month's is completed, the last ended month's waits in
    # the PM's inbox (its PM step open, due on the report's deadline), and no other report asks for anything.
    assert all(r.item_id is not None for r in ended) and all(r.item_id is None for r in rest if r not in ended)
    for r in past:
        assert db.session.get(WorkItem, r.item_id).status == "completed", r.key
    waiting = list(db.session.scalars(select(HumanTask).join(WorkItem, WorkItem.id == HumanTask.item_id).where(
        WorkItem.contract_id == contract.id, WorkItem.service_line_id.is_(None), HumanTask.status == "ready")))
    assert [(t.form, t.role, t.due_at) for t in waiting] == [("monthly_report", "pm", r.due_at) for r in ended[-1:]]
    overdue = [r.key for r in reports if r.status == "open" and clock_state(r.due_at, None, now) == "overdue"]
    assert set(overdue) <= {r.key for r in ended[-1:]}

    # The auditor downloads a past report: the files stored at its submission, checked against their hashes.
    client = app.test_client()
    token = client.post("/api/v1/auth/token", json={"username": "auditor", "password": DEMO_PASSWORD}).get_json()
    auth = {"Authorization": f"Bearer {token['token']}"}
    for r in past[:2]:
        got = client.get(f"/api/v1/monthly-reports/{r.id}", headers=auth).get_json()
        [sub] = got["submissions"]
        assert sub["by"] == "pm" and "xlsx" in sub["files"]
        for fmt, kept in sub["files"].items():
            res = client.get(f"/api/v1/monthly-reports/{r.id}/report.{fmt}", headers=auth)
            assert res.status_code == 200, (r.key, fmt)
            assert len(res.data) == kept["size"] and hashlib.sha256(res.data).hexdigest() == kept["sha256"]
            stored = r.data["submissions"][0]["files"][fmt]
            assert store.hash_object(stored["key"], stored["version_id"]) == (kept["size"], kept["sha256"])
    # The web page links the submitted files, and serves the same bytes.
    from tests.test_web import Browser

    if past:
        web = Browser(app, "auditor", DEMO_PASSWORD)
        page = web.get("/monthly-reports").get_data(as_text=True)
        assert f'/monthly-reports/{past[0].id}/report.xlsx' in page
        # A report accepted on time is not shown as overdue once its deadline has passed.
        row = page.split(f'data-month="{past[0].key}"', 1)[1].split("</tr>", 1)[0]
        assert "已逾期" not in row and "逾期" not in row, row
        res = web.get(f"/monthly-reports/{past[0].id}/report.xlsx")
        assert res.status_code == 200
        assert hashlib.sha256(res.data).hexdigest() == past[0].data["submissions"][0]["files"]["xlsx"]["sha256"]
        # The download is audited with the rows the submitted report holds (counted when it was drafted).
        from storage.models import AuditEvent

        event = db.session.scalars(select(AuditEvent).where(AuditEvent.event_type == "export.downloaded")
                                   .order_by(AuditEvent.id.desc())).first()
        kept_rows = past[0].data["submissions"][0]["rows"]
        assert isinstance(kept_rows, int) and event is not None and event.detail["rows"] == kept_rows
        assert web.get(f"/monthly-reports/{past[0].id}/report.doc").status_code == 404
    # Loading the demo again changes nothing: the accepted reports stay as they are.
    load_demo(app, store, echo=lambda _line: None)
    db.session.expire_all()
    assert [r.status for r in db.session.scalars(select(ContractTask).where(
        ContractTask.contract_id == contract.id, ContractTask.kind == "monthly_report")
        .order_by(ContractTask.period_start))][:len(past)] == ["accepted"] * len(past)

"""Monthly operation reports (月度运营报告, seed 001 §十(三)2) reach the inbox of the role that must act, with due
dates: the PM for months without a report and for returned ones (revise in 10 working days), the third party for
submitted ones. Both databases."""
from __future__ import annotations

import io

from api.demo import demo_pdf
from tests.test_web import Browser

REPORT = demo_pdf("2025-03 月度运营报告")


def submit(browser: Browser, month: str, body: bytes = REPORT) -> object:
    return browser.post("/monthly-reports", {"contract": "SH-YWTB-2025", "month": month,
                                             "file": (io.BytesIO(body), "月报.pdf")},
                        content_type="multipart/form-data")


def test_reports_move_between_pm_and_third_party_inboxes(world, app):
    from api.extensions import db
    from storage.models import MonthlyReport

    pm, auditor = Browser(app, "pm"), Browser(app, "auditor")
    inbox = pm.get("/inbox").get_data(as_text=True)
    assert 'id="report-steps"' in inbox and 'data-month="2025-03" data-step="submit"' in inbox
    assert 'id="report-steps"' not in auditor.get("/inbox").get_data(as_text=True)
    # A month that has not ended cannot be reported; a file is required.
    assert submit(pm, "2099-01").status_code == 422
    r = pm.post("/monthly-reports", {"contract": "SH-YWTB-2025", "month": "2025-03"})
    assert r.status_code == 422 and "请上传月度运营报告文件。" in r.get_data(as_text=True)
    assert submit(pm, "2025-03").status_code == 302
    report = db.session.query(MonthlyReport).one()
    assert report.status == "submitted" and report.due_at is not None
    assert 'data-month="2025-03" data-step="submit"' not in pm.get("/inbox").get_data(as_text=True)
    inbox = auditor.get("/inbox").get_data(as_text=True)
    assert 'data-month="2025-03" data-step="review"' in inbox
    assert auditor.get(f"/monthly-reports/{report.id}/file").data == REPORT
    # Returned without a comment is refused; with one, it waits for the PM's revision, due in 10 working days.
    auditor.post(f"/monthly-reports/{report.id}/review", {"decision": "return", "comment": ""})
    db.session.expire_all()
    assert db.session.get(MonthlyReport, report.id).status == "submitted"
    auditor.post(f"/monthly-reports/{report.id}/review", {"decision": "return", "comment": "缺少工单统计"})
    db.session.expire_all()
    returned = db.session.get(MonthlyReport, report.id)
    assert returned.status == "returned" and returned.revision_due_at is not None
    assert 'data-month="2025-03" data-step="revise"' in pm.get("/inbox").get_data(as_text=True)
    assert submit(pm, "2025-03", demo_pdf("2025-03 修改版")).status_code == 302
    auditor.post(f"/monthly-reports/{report.id}/review", {"decision": "accept", "comment": ""})
    db.session.expire_all()
    done = db.session.get(MonthlyReport, report.id)
    assert done.status == "accepted" and done.round == 2
    assert 'data-step="review"' not in auditor.get("/inbox").get_data(as_text=True)
    assert 'data-month="2025-03"' not in pm.get("/inbox").get_data(as_text=True)
    # An accepted report is not submitted again; the implementer has no report page.
    again = submit(pm, "2025-03")
    assert again.status_code == 422 and "不能重复提交" in again.get_data(as_text=True)
    assert Browser(app, "impl").get("/monthly-reports").status_code == 403

"""Monthly operations reports (月度运营报告, engine/usecases/monthly_report.py) reach the inbox of the role
whose move it is,
with due dates: the PM for ended months without a submitted report and for returned ones, the third party for
submitted ones; the web page lets each act. Both databases."""
from __future__ import annotations

from sqlalchemy import select

from tests.test_web import Browser


def _report_id(month: str) -> int:
    from api.extensions import db
    from storage.models import ContractTask

    return int(db.session.execute(select(ContractTask.id).where(ContractTask.kind == "monthly_report",
                                                               ContractTask.key == month)).scalar_one())


def test_monthly_reports_move_between_the_pm_and_the_third_party(world, app):
    pm, auditor = Browser(app, "pm"), Browser(app, "auditor")
    inbox = pm.get("/inbox").get_data(as_text=True)
    assert 'id="report-steps"' in inbox and 'data-month="2025-03" data-step="write"' in inbox
    assert 'id="report-steps"' not in auditor.get("/inbox").get_data(as_text=True)
    page = pm.get("/monthly-reports?month=2025-03").get_data(as_text=True)
    assert 'data-month="2025-03" data-status="open"' in page
    report_id = _report_id("2025-03")
    # Submitting without a narrative is refused, in Chinese.
    r = pm.post(f"/monthly-reports/{report_id}/submit", {"narrative": ""})
    assert "请先填写报告正文。" in pm.get(r.headers["Location"]).get_data(as_text=True)
    pm.post(f"/monthly-reports/{report_id}/submit", {"narrative": "三月接入事项 12 项，完成 9 项。"})
    assert 'data-month="2025-03" data-step="write"' not in pm.get("/inbox").get_data(as_text=True)
    assert 'data-month="2025-03" data-step="review"' in auditor.get("/inbox").get_data(as_text=True)
    r = auditor.post(f"/monthly-reports/{report_id}/review", {"decision": "return", "comment": ""})
    assert "退回时必须填写审核意见。" in auditor.get(r.headers["Location"]).get_data(as_text=True)
    auditor.post(f"/monthly-reports/{report_id}/review", {"decision": "return", "comment": "缺少工单统计"})
    inbox = pm.get("/inbox").get_data(as_text=True)
    assert 'data-month="2025-03" data-step="revise"' in inbox
    pm.post(f"/monthly-reports/{report_id}/submit", {"narrative": "三月接入事项 12 项，完成 9 项；工单 40 张。"})
    auditor.post(f"/monthly-reports/{report_id}/review", {"decision": "accept", "comment": ""})
    assert 'data-month="2025-03"' not in pm.get("/inbox").get_data(as_text=True)
    assert 'data-month="2025-03"' not in auditor.get("/inbox").get_data(as_text=True)
    assert Browser(app, "impl").get("/monthly-reports").status_code == 403
    assert auditor.post(f"/monthly-reports/{report_id}/submit", {"narrative": "x"}).status_code == 403

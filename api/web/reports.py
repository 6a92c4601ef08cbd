"""Web page for monthly operations reports (月度运营报告, engine/usecases/monthly_report.py): the PM writes
and submits or
revises a month's report; the third party accepts it or returns it with comments. The inbox links here."""
from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from flask import current_app, redirect, render_template, request, url_for
from sqlalchemy import select

from api.extensions import db
from api.web.auth import me, web_ctx
from api.web.i18n import _
from api.web.views import act_and_flash, bp, refusal
from engine.contract.calendar import TZ
from engine.trust.policy import may
from engine.usecases import monthly_report as mr
from storage.models import Contract
from storage.unit_of_work import unit_of_work

_TEXT = {"narrative_required": "请先填写报告正文。", "comment_required": "退回时必须填写审核意见。",
         "report_wrong_stage": "该报告当前不能执行此操作。"}


@bp.get("/monthly-reports")
def monthly_reports() -> Any:
    user = me()
    reports = []
    with unit_of_work(db.session):
        for contract in db.session.scalars(select(Contract).order_by(Contract.code)):
            reports += mr.ensure_reports(db.session, contract)  # one row per month, as the REST list makes them
    now = datetime.now(UTC)
    focus = request.args.get("month") or ""
    return render_template("web/monthly_reports.html", reports=reports, statuses=mr.STATUS_NAMES, now=now,
                           today=now.astimezone(TZ).date(),
                           contracts={c.id: c.code for c in db.session.scalars(select(Contract))},
                           may_prepare=may(user, "report.prepare"), may_review=may(user, "report.review"),
                           focus=focus)


def _act(action: Any, done: str, month: str) -> Any:
    act_and_flash(action, done, lambda err: _(_TEXT[err.code]) if err.code in _TEXT else refusal(err))
    return redirect(url_for("web.monthly_reports", month=month))


@bp.post("/monthly-reports/<int:report_id>/submit")
def monthly_report_submit(report_id: int) -> Any:
    report = mr.load(db.session, report_id)
    narrative = (request.form.get("narrative") or "").strip()[:20_000]
    context = web_ctx()

    def go() -> None:
        mr.submit(context, report, narrative or None)

    return _act(go, _("已提交 {m} 月度运营报告", m=report.key), report.key)


@bp.post("/monthly-reports/<int:report_id>/review")
def monthly_report_review(report_id: int) -> Any:
    report = mr.load(db.session, report_id)
    decision = request.form.get("decision", "")
    comment = (request.form.get("comment") or "").strip()[:4000] or None
    return _act(lambda: mr.review(web_ctx(), report, decision, comment), _("审核意见已提交"), report.key)


@bp.get("/monthly-reports/<int:report_id>/report.<fmt>")
def monthly_report_file(report_id: int, fmt: str) -> Any:
    """A report's file: as submitted (stored, hash-checked) once submitted, else drafted from today's data."""
    from io import BytesIO

    from flask import g

    from api.downloads import file_response

    report = mr.load(db.session, report_id)
    body, g.export_rows = mr.report_file(db.session, current_app.extensions.get("itemgate_store"), report, fmt,
                                         current_app.config["ITEMGATE"].cjk_font, datetime.now(UTC))
    return file_response(BytesIO(body), mr.FILE_TYPES[fmt], f"月度运营报告-{report.key}.{fmt}",
                         f"monthly-report-{report.key}.{fmt}")

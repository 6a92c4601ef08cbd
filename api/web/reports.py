"""Web page for monthly operation reports (月度运营报告): the PM submits or revises, the third party reviews."""
from __future__ import annotations

import os
from datetime import UTC, date, datetime
from typing import Any

from flask import Response, current_app, flash, g, redirect, render_template, request, url_for
from sqlalchemy import select

from api.downloads import content_disposition
from api.extensions import db
from api.web.auth import me, web_ctx
from api.web.i18n import _, form_message
from api.web.pm import field_text
from api.web.views import bp, refusal
from engine import audit
from engine.access import authorize
from engine.errors import DomainError, FormInvalid, NotFound, ObjectMissing, ServiceUnavailable
from engine.monthly_reports import load_report, report_steps, review_report, submit_report
from engine.policy import may
from storage.artefact_store import StoreUnavailable
from storage.models import Contract, MonthlyReport

REPORT_STATUS = {"submitted": "待审核", "returned": "已退回", "accepted": "已通过"}


def _page(errors: dict[str, list[str]] | None = None, values: dict[str, Any] | None = None,
          status: int = 200) -> Any:
    user = me()
    reports = list(db.session.scalars(select(MonthlyReport).order_by(MonthlyReport.month.desc(),
                                                                     MonthlyReport.id.desc()).limit(100)))
    return render_template(
        "web/monthly_reports.html", reports=reports, steps=report_steps(db.session, user),
        contracts=list(db.session.scalars(select(Contract).order_by(Contract.code))), statuses=REPORT_STATUS,
        may_submit=may(user, "report.submit"), may_review=may(user, "report.review"), errors=errors or {},
        values=values or {"contract": request.args.get("contract", ""), "month": request.args.get("month", "")},
        now=datetime.now(UTC)), status


@bp.get("/monthly-reports")
def monthly_reports() -> Any:
    authorize(me(), "report.read")
    return _page()


def _length(stream: Any) -> int:
    position = stream.tell()
    stream.seek(0, os.SEEK_END)
    size = stream.tell()
    stream.seek(position)
    return int(size)


@bp.post("/monthly-reports")
def monthly_report_submit() -> Any:
    values = {k: (request.form.get(k) or "").strip()[:64] for k in ("contract", "month")}
    errors: dict[str, list[str]] = {}
    month: date | None = None
    try:
        month = date.fromisoformat(values["month"][:7] + "-01")
    except ValueError:
        errors["month"] = [_("请选择月份。")]
    upload = request.files.get("file")
    if upload is None or not upload.filename:
        errors["file"] = [_("请上传月度运营报告文件。")]
    if errors:
        return _page(errors, values, 422)
    assert upload is not None and month is not None
    context = web_ctx()
    try:
        report = submit_report(context, context.store, values["contract"], month, upload.filename, upload.stream,
                               _length(upload.stream), current_app.config["ITEMGATE"].max_upload_bytes)
        db.session.commit()
    except FormInvalid as err:
        db.session.rollback()
        found = {k: [form_message(field_text(m)) for m in v] for k, v in (err.extra.get("errors") or {}).items()}
        return _page(found, values, 422)
    except NotFound:
        raise
    except DomainError as err:
        db.session.rollback()
        return _page({"file": [refusal(err)]}, values, 422)
    flash(_("已提交 {m} 月度运营报告", m=f"{report.month:%Y-%m}"), "ok")
    return redirect(url_for("web.monthly_reports"))


@bp.get("/monthly-reports/<int:report_id>/file")
def monthly_report_file(report_id: int) -> Any:
    user = me()
    report = load_report(db.session, user, report_id)
    store = current_app.extensions.get("itemgate_store")
    if store is None:
        raise ServiceUnavailable("no evidence store is configured")
    try:
        stream = store.iter_content(report.key, report.version_id).prefetch()
    except KeyError as exc:
        raise ObjectMissing(f"the file of monthly report {report.id} is missing") from exc
    except StoreUnavailable as exc:
        raise ServiceUnavailable("the object store is unavailable") from exc
    response = Response(stream, mimetype=report.media_type.split(";")[0])
    response.headers["Content-Disposition"] = content_disposition(report.filename, False)
    response.headers["Content-Length"] = str(report.size)
    response.headers["X-Content-Type-Options"] = "nosniff"
    try:
        audit.record(db.session, audit.Actor.of(user, g.get("request_id")), "report.downloaded",
                     target_type="monthly_report", target_id=report.id)
        db.session.commit()
    except BaseException:
        response.close()
        raise
    return response


@bp.post("/monthly-reports/<int:report_id>/review")
def monthly_report_review(report_id: int) -> Any:
    load_report(db.session, me(), report_id)
    try:
        review_report(web_ctx(), report_id, request.form.get("decision", ""), request.form.get("comment"))
        db.session.commit()
        flash(_("审核意见已提交"), "ok")
    except NotFound:
        raise
    except DomainError as err:
        db.session.rollback()
        problems = [form_message(field_text(m)) for msgs in (err.extra.get("errors") or {}).values() for m in msgs]
        flash(_("操作未执行：") + " ".join(problems) if problems else refusal(err), "error")
    return redirect(url_for("web.monthly_reports"))

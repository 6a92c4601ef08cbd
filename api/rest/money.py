"""REST API v1: the contract's payment plan, the audit trail of the money (list and export), the item register.

Exports here and elsewhere are audit events (api/audit_hooks.py); masked fields follow the contract settings.
"""
from __future__ import annotations

import io
from datetime import date, datetime, time, timedelta
from typing import Any

from flask import Response, g
from flask_smorest import Blueprint
from marshmallow import Schema, fields, validate
from sqlalchemy import func, select

from api.auth import current_user
from api.downloads import file_response
from api.extensions import db
from api.rest.core import ctx
from engine.contract.calendar import TZ
from engine.contract.catalog import contract_named
from engine.money import payments
from engine.money.exports import XLSX
from engine.money.money_reports import audit_xlsx_file, payments_xlsx_file
from engine.money.performance import GROUPS
from engine.trust import audit, masking
from engine.trust.access import authorize
from storage.models import LINE_WORK, AuditEvent, Contract, WorkItem
from storage.unit_of_work import unit_of_work

# Dates a request may name: far enough either way for any contract, near enough to convert to UTC.
DAYS = validate.Range(min=date(1990, 1, 1), max=date(2200, 12, 31))

blp = Blueprint("money", __name__, url_prefix="/api/v1",
                description="Payment plans, the audit trail and the item register (with masking)")


def _contract(code: str) -> Contract:
    return contract_named(db.session, code)


def payments_json(contract: Contract) -> dict[str, Any]:
    plan = payments.schedule_for(db.session, contract)
    return {"contract": contract.code,
            "award": None if contract.award_amount is None else float(contract.award_amount),
            "award_limit": None if contract.award_amount is None else float(contract.award_amount * 11 / 10),
            "approved_cumulative": {k: float(v) for k, v in payments.approved_cumulative(db.session,
                                                                                          contract).items()},
            "payments": [payments.instalment_json(i) for i in plan],
            "totals": {"due": float(sum(i.due for i in plan)), "paid": float(sum(i.paid for i in plan)),
                       "outstanding": float(sum(i.outstanding for i in plan)),
                       "capped": float(max((i.capped for i in plan), default=0))}}


@blp.route("/contracts/<code>/payments", methods=["GET"])
@blp.response(200)
def payments_get(code: str) -> dict[str, Any]:
    authorize(current_user(), "payment.read")
    return payments_json(_contract(code))


class PaymentBody(Schema):
    amount = fields.Decimal(required=True, places=2, allow_nan=False,
                            validate=validate.Range(min=0.01, max=10**13))
    paid_on = fields.Date(required=True, validate=DAYS)
    invoice_number = fields.String(required=True, validate=validate.Length(min=1, max=64))
    number = fields.Integer(load_default=None, validate=validate.Range(min=1, max=100))


@blp.route("/contracts/<code>/payments", methods=["POST"])
@blp.arguments(PaymentBody)
@blp.response(201)
def payments_post(body: dict[str, Any], code: str) -> dict[str, Any]:
    with unit_of_work(db.session):
        user = current_user()
        authorize(user, "payment.record")
        contract = _contract(code)
        payments.record_payment(db.session, audit.Actor.of(user, g.get("request_id")), user, contract, body["amount"],
                                body["paid_on"], body["invoice_number"], datetime.now(TZ), body["number"])
    return payments_json(contract)


@blp.route("/contracts/<code>/payments.xlsx", methods=["GET"])
def payments_xlsx(code: str) -> Response:
    authorize(current_user(), "payment.read")
    contract = _contract(code)
    plan = payments.schedule_for(db.session, contract)
    g.export_rows = len(plan)
    return file_response(payments_xlsx_file(contract, plan), XLSX, f"支付计划-{contract.code}.xlsx",
                         f"payments-{contract.code}.xlsx")


# ---------------------------------------------------------------- the audit trail

class AuditQuery(Schema):
    event = fields.String(load_default=None, validate=validate.Length(max=64))
    user = fields.String(load_default=None, validate=validate.Length(max=64))
    date_from = fields.Date(load_default=None, data_key="from", validate=DAYS)
    date_to = fields.Date(load_default=None, data_key="to", validate=DAYS)
    page = fields.Integer(load_default=1, validate=validate.Range(min=1, max=1_000_000))
    per_page = fields.Integer(load_default=50, validate=validate.Range(min=1, max=500))


def _audit_query(args: dict[str, Any]) -> Any:
    query = select(AuditEvent)
    if args["event"]:
        # "export" matches export.* too: a prefix ending in a dot or a whole type.
        query = query.where((AuditEvent.event_type == args["event"])
                            | AuditEvent.event_type.startswith(args["event"].rstrip(".") + ".", autoescape=True))
    if args["user"]:
        query = query.where(AuditEvent.username == args["user"])
    if args["date_from"]:
        query = query.where(AuditEvent.at >= datetime.combine(args["date_from"], time(0), TZ))
    if args["date_to"]:
        query = query.where(AuditEvent.at < datetime.combine(args["date_to"] + timedelta(days=1), time(0), TZ))
    return query


def _mask_fields(role: str | None) -> set[str]:
    """Fields masked in the audit trail for this role: the union over contracts that do not clear the role."""
    contracts = db.session.scalars(select(Contract.settings)).all()
    return masking.masked_fields(s for s in contracts if masking.needs_masking(role, s or {}))


def audit_json(e: AuditEvent, fields_: set[str]) -> dict[str, Any]:
    return {"id": e.id, "at": e.at.isoformat(), "user": e.username, "role": e.role, "event": e.event_type,
            "target_type": e.target_type, "target_id": e.target_id, "outcome": e.outcome,
            "request_id": e.request_id, "detail": masking.mask(e.detail, fields_)}


@blp.route("/audit", methods=["GET"])
@blp.arguments(AuditQuery, location="query")
@blp.response(200)
def audit_list(args: dict[str, Any]) -> dict[str, Any]:
    user = current_user()
    authorize(user, "audit.read")
    query = _audit_query(args)
    total = db.session.execute(select(func.count()).select_from(query.subquery())).scalar()
    rows = db.session.scalars(query.order_by(AuditEvent.id.desc())
                              .offset((args["page"] - 1) * args["per_page"]).limit(args["per_page"]))
    fields_ = _mask_fields(user.role)
    return {"events": [audit_json(e, fields_) for e in rows], "total": total, "page": args["page"],
            "per_page": args["per_page"]}


@blp.route("/audit.xlsx", methods=["GET"])
@blp.arguments(AuditQuery, location="query")
def audit_export(args: dict[str, Any]) -> Response:
    user = current_user()
    authorize(user, "audit.read")
    query = _audit_query(args).order_by(AuditEvent.id)
    g.export_rows = db.session.execute(select(func.count()).select_from(query.subquery())).scalar()
    fields_ = _mask_fields(user.role)
    out = audit_xlsx_file(db.session.scalars(query.execution_options(yield_per=1000)),
                          lambda e: masking.mask(e.detail, fields_))
    return file_response(out, XLSX, "审计日志.xlsx", "audit.xlsx")


# ---------------------------------------------------------------- the item register, masked

class ItemsExportArgs(Schema):
    contract = fields.String(required=True, validate=validate.Length(min=1, max=64))


@blp.route("/exports/items.xlsx", methods=["GET"])
@blp.arguments(ItemsExportArgs, location="query")
def exports_items_xlsx(args: dict[str, Any]) -> Response:
    """事项清单: each item with its registered attributes (form fields); personal data masked for roles the
    contract does not clear."""
    user = current_user()
    authorize(user, "workload.read")
    contract = _contract(args["contract"])
    items = list(db.session.scalars(select(WorkItem).where(WorkItem.contract_id == contract.id,
                                                           LINE_WORK)
                                    .order_by(WorkItem.id)))
    g.export_rows = len(items)
    from engine.money.money_reports import items_xlsx_file

    rows = [(item, masking.for_role(item.attributes or {}, user.role, contract.settings or {})) for item in items]
    return file_response(items_xlsx_file(rows), XLSX, f"事项清单-{contract.code}.xlsx", f"items-{contract.code}.xlsx")


# ---------------------------------------------------------------- on-time rate (按时处理率)

class PerformanceArgs(Schema):
    by = fields.String(load_default="department", validate=validate.OneOf(list(GROUPS)))
    date_from = fields.Date(load_default=None, data_key="from", validate=DAYS)
    date_to = fields.Date(load_default=None, data_key="to", validate=DAYS)


@blp.route("/contracts/<code>/performance", methods=["GET"])
@blp.arguments(PerformanceArgs, location="query")
@blp.response(200)
def performance_get(args: dict[str, Any], code: str) -> dict[str, Any]:
    """On-time rate and overdue figures per department, implementer or stage, against the contract's
    response-time tiers (or each task's own deadline)."""
    authorize(current_user(), "workload.read")
    contract = _contract(code)
    start = args["date_from"] or contract.period_start or datetime(2000, 1, 1).date()
    end = args["date_to"] or datetime.now(TZ).date()
    from engine.money.performance import on_time_rates

    rows = on_time_rates(db.session, contract, start, end, args["by"], datetime.now(TZ))
    return {"contract": contract.code, "from": start.isoformat(), "to": end.isoformat(), "by": args["by"],
            "tiers": (contract.settings or {}).get("response_tiers") or {}, "rows": rows}


# ---------------------------------------------------------------- monthly operations reports (月度运营报告)

def _report_json(report: Any) -> dict[str, Any]:
    from api.serializers import iso
    from engine.usecases import monthly_report as mr

    out = mr.report_json(report, datetime.now(TZ))
    for k in ("due_at", "submitted_at", "revision_due_at"):
        out[k] = iso(out[k])
    return out


class ReportListArgs(Schema):
    status = fields.String(load_default=None, validate=validate.Length(max=16))


@blp.route("/contracts/<code>/monthly-reports", methods=["GET"])
@blp.arguments(ReportListArgs, location="query")
@blp.response(200)
def monthly_reports_list(args: dict[str, Any], code: str) -> dict[str, Any]:
    """One report work item per month of the service period, with its clock and any late deduction."""
    from engine.usecases import monthly_report as mr

    with unit_of_work(db.session):
        authorize(current_user(), "report.read")
        reports = mr.ensure_reports(db.session, _contract(code))
    rows = [_report_json(r) for r in reports if args["status"] in (None, r.status)]
    return {"contract": code, "reports": rows}


@blp.route("/monthly-reports/<int:report_id>", methods=["GET"])
@blp.response(200)
def monthly_report_get(report_id: int) -> dict[str, Any]:
    from engine.usecases import monthly_report as mr

    authorize(current_user(), "report.read")
    report = mr.load(db.session, report_id)
    return dict(_report_json(report), draft=mr.draft(db.session, report, datetime.now(TZ)))


@blp.route("/monthly-reports/<int:report_id>/report.<fmt>", methods=["GET"])
def monthly_report_file(report_id: int, fmt: str) -> Response:
    """The report as submitted (stored, hash-checked; `?round=N` for an earlier submission), or drafted from
    today's data before it was submitted or with `?draft=1`."""
    from flask import current_app, request

    from engine.usecases import monthly_report as mr

    authorize(current_user(), "report.read")
    report = mr.load(db.session, report_id)
    body, g.export_rows = mr.report_file(
        db.session, current_app.extensions.get("itemgate_store"), report, fmt,
        current_app.config["ITEMGATE"].cjk_font, datetime.now(TZ), request.args.get("round", type=int),
        draft_now=bool(request.args.get("draft")))
    return file_response(io.BytesIO(body), mr.FILE_TYPES[fmt], f"月度运营报告-{report.key}.{fmt}",
                         f"monthly-report-{report.key}.{fmt}")


class NarrativeBody(Schema):
    narrative = fields.String(required=True, validate=validate.Length(min=1, max=20000))


@blp.route("/monthly-reports/<int:report_id>/narrative", methods=["POST"])
@blp.arguments(NarrativeBody)
@blp.response(200)
def monthly_report_narrative(body: dict[str, Any], report_id: int) -> dict[str, Any]:
    from engine.usecases import monthly_report as mr

    with unit_of_work(db.session):
        authorize(current_user(), "report.prepare")
        report = mr.write(ctx(), mr.load(db.session, report_id), body["narrative"])
    return _report_json(report)


@blp.route("/monthly-reports/<int:report_id>/attachments", methods=["POST"])
@blp.response(201)
def monthly_report_attach(report_id: int) -> dict[str, Any]:
    """multipart/form-data with `file` (≤ 64 MiB)."""
    from flask import request

    from engine.errors import Invalid
    from engine.usecases import monthly_report as mr

    with unit_of_work(db.session):
        authorize(current_user(), "report.prepare")
        upload = request.files.get("file")
        if upload is None or not upload.filename:
            raise Invalid("send the attachment as multipart field 'file'", code="file_required")
        body = upload.read((64 << 20) + 1)
        if len(body) > 64 << 20:
            raise Invalid("the attachment is larger than 64 MiB", code="too_large")
        report = mr.load(db.session, report_id)
        entry = mr.attach(ctx(), report, upload.filename, body, upload.mimetype or "application/octet-stream")
    return {k: entry[k] for k in ("filename", "sha256", "size", "at", "by")}


@blp.route("/monthly-reports/<int:report_id>/submit", methods=["POST"])
@blp.response(200)
def monthly_report_submit(report_id: int) -> dict[str, Any]:
    from engine.usecases import monthly_report as mr

    with unit_of_work(db.session):
        authorize(current_user(), "report.prepare")
        report = mr.submit(ctx(), mr.load(db.session, report_id))
    return _report_json(report)


class ReportReviewBody(Schema):
    decision = fields.String(required=True, validate=validate.OneOf(["accept", "return"]))
    comment = fields.String(load_default=None, validate=validate.Length(max=4000))


@blp.route("/monthly-reports/<int:report_id>/review", methods=["POST"])
@blp.arguments(ReportReviewBody)
@blp.response(200)
def monthly_report_review(body: dict[str, Any], report_id: int) -> dict[str, Any]:
    from engine.usecases import monthly_report as mr

    with unit_of_work(db.session):
        authorize(current_user(), "report.review")
        report = mr.review(ctx(), mr.load(db.session, report_id), body["decision"], body["comment"])
    return _report_json(report)


@blp.route("/contracts/<code>/deadlines", methods=["GET"])
@blp.response(200)
def deadlines_get(code: str) -> dict[str, Any]:
    """Every running contract clock (settlement materials and revisions, monthly reports, rectifications), due
    first, with its state — what the PM dashboard shows."""
    from api.serializers import iso
    from engine.usecases.clocks import running_clocks

    authorize(current_user(), "settlement.read")
    contract = _contract(code)
    clocks = running_clocks(db.session, datetime.now(TZ), contract.code)
    return {"contract": contract.code, "deadlines": [dict(c, due_at=iso(c["due_at"])) for c in clocks]}

"""REST API v1: settlements (审量结算), ledger corrections, evidence bundles and the count/progress exports."""
from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any, TypeVar

from flask import Response, current_app, stream_with_context
from flask_smorest import Blueprint
from marshmallow import Schema, fields, validate
from sqlalchemy import func, select
from sqlalchemy.orm import selectinload

from api.auth import current_user
from api.downloads import attachment, file_response, send_export
from api.extensions import db
from api.limits import id_field
from api.rest.core import ctx
from api.serializers import entry_json, iso, money, num
from engine.errors import NotFound, ServiceUnavailable
from engine.money import ledger
from engine.money.bundle import stream_bundle
from engine.money.exports import EXPORTS, XLSX, export_named
from engine.money.reports import (
    WorkloadFilter,
    claim_xlsx_file,
    monthly_counts,
    progress,
)
from engine.trust.access import authorize
from engine.usecases import settlement as st
from engine.usecases.tasks import Ctx
from storage.models import Contract, Settlement, SettlementNote, User, WorkloadEntry
from storage.unit_of_work import unit_of_work

blp = Blueprint("settlements", __name__, url_prefix="/api/v1",
                description="Settlements, ledger corrections, evidence bundles and count exports")
T = TypeVar("T")


def run_change(fn: Callable[[Ctx], T]) -> T:
    """One transaction per use case; a refused change to a locked settlement is rolled back and audited."""
    context = ctx()
    try:
        with unit_of_work(db.session):
            result = fn(context)
        return result
    except ledger.SettlementLocked as exc:
        db.session.rollback()
        with unit_of_work(db.session):
            ledger.record_refusal(db.session, context.actor, exc)
        raise


# ---------------------------------------------------------------- JSON shapes

def _usernames(settlements: list[Settlement]) -> dict[int, str]:
    ids = {i for s in settlements for i in (s.approved_by_id, s.first_reviewed_by_id, s.created_by_id) if i}
    if not ids:
        return {}
    return {uid: name for uid, name in db.session.execute(select(User.id, User.username).where(User.id.in_(ids)))}


def settlement_json(s: Settlement, user: User, with_lines: bool = False, *, fig: st.Figures | None = None,
                    users: dict[int, str] | None = None) -> dict[str, Any]:
    """One settlement; a list passes `fig` and `users` it loaded for all its rows at once."""
    fig = fig if fig is not None else st.figures(db.session, s, ctx().now)
    users = users if users is not None else _usernames([s])
    out: dict[str, Any] = {
        "id": s.id, "contract": s.contract.code, "label": s.label, "period_start": s.period_start.isoformat(),
        "period_end": s.period_end.isoformat(), "status": s.status, "status_name": st.STATUS_NAMES.get(s.status),
        "locked": s.status == "approved", "current_task": s.current_task, "current_lane": s.current_lane,
        "round": s.round, "version": s.version, "due_at": iso(s.due_at),
        "first_submitted_at": iso(s.first_submitted_at),
        "approved_at": iso(s.approved_at), "approved_by": users.get(s.approved_by_id or 0),
        "first_reviewed_by": users.get(s.first_reviewed_by_id or 0), "created_by": users.get(s.created_by_id or 0),
        "created_at": iso(s.created_at), "assessment_score": num(s.assessment_score),
        "figures": {"gross": money(fig.gross), "entries": fig.entries, "due_at": iso(fig.due_at), "late": fig.late,
                    "penalty_rate": num(fig.penalty_rate), "penalty": money(fig.penalty),
                    "assessment_score": num(fig.score), "deduction_rate": num(fig.deduction_rate),
                    "deduction": money(fig.deduction), "net": money(fig.net), "frozen": fig.frozen,
                    "award_limit": None if fig.award_limit is None else money(fig.award_limit),
                    "exceeds_award_limit": fig.exceeds_award_limit,
                    "settled_total": None if fig.settled_total is None else money(fig.settled_total),
                    "submission_late": fig.submission_late, "revision_late": fig.revision_late,
                    "other_deductions": money(fig.other_deductions),
                    "monthly_report_deductions": [dict(d, amount=money(d["amount"]))
                                                  for d in fig.other_detail or []],
                    "grade": fig.grade},
        "stage": s.stage, "grade": fig.grade,
        # Every clock of the claim and its state (seed 001 §十(三)): materials, revision.
        "deadlines": [dict(d, due_at=iso(d["due_at"])) for d in st.deadlines(s, fig, ctx().now)],
        "actions": st.allowed_actions(user, s),
        # The audit anchor the final approval was made under (docs/TRUST.md, Audit anchors).
        "anchor": s.anchor,
    }
    if with_lines:
        notes = list(db.session.scalars(select(SettlementNote).where(SettlementNote.settlement_id == s.id)
                                        .order_by(SettlementNote.id)))
        comments: dict[int, list[dict[str, Any]]] = {}
        for n in notes:
            if n.entry_id is not None and n.kind == "comment":
                comments.setdefault(n.entry_id, []).append(note_json(n))
        out["lines"] = [dict(entry_json(entry), item_status=item.status, added_reason=line.added_reason,
                             carried=line.carried, comments=comments.get(entry.id, []),
                             out_of_period=st.entry_out_of_period(s.contract, entry),
                             # The pre-rename name of the same flag (docs/SETTLEMENT.md); kept for clients.
                             outside_service_period=st.entry_out_of_period(s.contract, entry))
                        for line, entry, item in db.session.execute(st.line_entries(s.id)).all()]
        out["notes"] = [note_json(n) for n in notes]
        out["carried"] = [ln for ln in out["lines"] if ln["carried"]]
        out["stages"] = st.stage_summary(db.session, s)
        out["rectifications"] = [{"id": t.id, "title": t.title, "status": t.status, "due_at": iso(t.due_at)}
                                 for t in st.rectifications(db.session, s)]
        # For the evaluation: the on-time rate (按时处理率) of the claim's period, per department.
        from engine.money.performance import on_time_rates

        out["on_time"] = on_time_rates(db.session, s.contract, s.period_start, s.period_end, "department",
                                       ctx().now)
    return out


def note_json(n: SettlementNote) -> dict[str, Any]:
    return {"id": n.id, "round": n.round, "kind": n.kind, "entry_id": n.entry_id, "text": n.text,
            "user": n.user.username if n.user else None, "at": iso(n.at)}


def _load(settlement_id: int) -> Settlement:
    return st.load_settlement_for(db.session, current_user(), settlement_id)


# ---------------------------------------------------------------- settlements

class OpenSettlement(Schema):
    contract = fields.String(required=True, validate=validate.Length(min=1, max=64))
    # A contract with a settlement schedule is settled by stage (6m, 9m, annual, final; q1…q4); the period
    # comes from the schedule. A contract without one takes an ad-hoc period.
    stage = fields.String(load_default=None, validate=validate.Length(min=1, max=16))
    period_start = fields.Date(load_default=None)
    period_end = fields.Date(load_default=None)
    label = fields.String(load_default=None, validate=validate.Length(min=1, max=100))


@blp.route("/settlements", methods=["POST"])
@blp.arguments(OpenSettlement)
@blp.response(201)
def settlements_open(body: dict[str, Any]) -> dict[str, Any]:
    authorize(current_user(), "settlement.prepare")
    s = run_change(lambda c: st.open_settlement(c, body["contract"], body["period_start"], body["period_end"],
                                                body["label"], body["stage"]))
    return settlement_json(s, current_user(), with_lines=True)


class SettlementQuery(Schema):
    contract = fields.String(load_default=None)
    status = fields.String(load_default=None)
    page = fields.Integer(load_default=1, validate=validate.Range(min=1, max=1_000_000))
    per_page = fields.Integer(load_default=50, validate=validate.Range(min=1, max=200))


@blp.route("/settlements", methods=["GET"])
@blp.arguments(SettlementQuery, location="query")
@blp.response(200)
def settlements_list(args: dict[str, Any]) -> dict[str, Any]:
    user = current_user()
    authorize(user, "settlement.read")
    query = select(Settlement).join(Contract, Contract.id == Settlement.contract_id)
    if args["contract"]:
        query = query.where(Contract.code == args["contract"])
    if args["status"]:
        query = query.where(Settlement.status == args["status"])
    total = db.session.execute(select(func.count()).select_from(query.subquery())).scalar()
    rows = list(db.session.scalars(query.options(selectinload(Settlement.contract)).order_by(Settlement.id.desc())
                                   .offset((args["page"] - 1) * args["per_page"]).limit(args["per_page"])))
    figures = st.figures_of(db.session, rows, ctx().now)
    users = _usernames(rows)
    return {"settlements": [settlement_json(s, user, fig=figures[s.id], users=users) for s in rows],
            "total": total}


@blp.route("/settlements/<int:settlement_id>", methods=["GET"])
@blp.response(200)
def settlements_get(settlement_id: int) -> dict[str, Any]:
    authorize(current_user(), "settlement.read")
    return settlement_json(_load(settlement_id), current_user(), with_lines=True)


class NoteBody(Schema):
    note = fields.String(load_default=None, validate=validate.Length(max=4000))


@blp.route("/settlements/<int:settlement_id>/submit", methods=["POST"])
@blp.arguments(NoteBody)
@blp.response(200)
def settlements_submit(body: dict[str, Any], settlement_id: int) -> dict[str, Any]:
    s = run_change(lambda c: st.submit(c, _load(settlement_id), body["note"]))
    return settlement_json(s, current_user(), with_lines=True)


class LinesBody(Schema):
    entry_ids = fields.List(id_field(), required=True,
                            validate=validate.Length(min=1, max=10000))
    reason = fields.String(required=True, validate=validate.Length(min=2, max=4000))
    # Entries of an earlier stage are carried into this one explicitly; the reason shows to the auditor.
    carry = fields.Boolean(load_default=False)


@blp.route("/settlements/<int:settlement_id>/lines", methods=["POST"])
@blp.arguments(LinesBody)
@blp.response(200)
def settlements_add_lines(body: dict[str, Any], settlement_id: int) -> dict[str, Any]:
    def add(c: Ctx) -> Settlement:
        s = _load(settlement_id)
        st.add_lines(c, s, body["entry_ids"], body["reason"], body["carry"])
        return s

    return settlement_json(run_change(add), current_user(), with_lines=True)


@blp.route("/settlements/<int:settlement_id>/lines/remove", methods=["POST"])
@blp.arguments(LinesBody)
@blp.response(200)
def settlements_remove_lines(body: dict[str, Any], settlement_id: int) -> dict[str, Any]:
    def remove(c: Ctx) -> Settlement:
        s = _load(settlement_id)
        st.remove_lines(c, s, body["entry_ids"], body["reason"])
        return s

    return settlement_json(run_change(remove), current_user(), with_lines=True)


class CommentBody(Schema):
    text = fields.String(required=True, validate=validate.Length(min=1, max=4000))
    entry_id = id_field(load_default=None)


@blp.route("/settlements/<int:settlement_id>/comments", methods=["POST"])
@blp.arguments(CommentBody)
@blp.response(201)
def settlements_comment(body: dict[str, Any], settlement_id: int) -> dict[str, Any]:
    note = run_change(lambda c: st.comment(c, _load(settlement_id), body["text"], body["entry_id"]))
    return note_json(note)


class DecisionBody(Schema):
    comment = fields.String(load_default=None, validate=validate.Length(max=4000))


@blp.route("/settlements/<int:settlement_id>/accept", methods=["POST"])
@blp.arguments(DecisionBody)
@blp.response(200)
def settlements_accept(body: dict[str, Any], settlement_id: int) -> dict[str, Any]:
    s = run_change(lambda c: st.audit_decision(c, _load(settlement_id), "accept", body["comment"]))
    return settlement_json(s, current_user())


@blp.route("/settlements/<int:settlement_id>/return", methods=["POST"])
@blp.arguments(DecisionBody)
@blp.response(200)
def settlements_return(body: dict[str, Any], settlement_id: int) -> dict[str, Any]:
    s = run_change(lambda c: st.audit_decision(c, _load(settlement_id), "return", body["comment"]))
    return settlement_json(s, current_user())


class ReviewBody(Schema):
    decision = fields.String(required=True, validate=validate.OneOf(["approve", "return"]))
    comment = fields.String(load_default=None, validate=validate.Length(max=4000))


class FirstReviewBody(ReviewBody):
    assessment_score = fields.Decimal(load_default=None, places=2, allow_nan=False,
                                      validate=validate.Range(min=0, max=100))


@blp.route("/settlements/<int:settlement_id>/first-review", methods=["POST"])
@blp.arguments(FirstReviewBody)
@blp.response(200)
def settlements_first_review(body: dict[str, Any], settlement_id: int) -> dict[str, Any]:
    s = run_change(lambda c: st.first_review(c, _load(settlement_id), body["decision"], body["comment"],
                                             body["assessment_score"]))
    return settlement_json(s, current_user())


@blp.route("/settlements/<int:settlement_id>/final-approval", methods=["POST"])
@blp.arguments(ReviewBody)
@blp.response(200)
def settlements_final_approval(body: dict[str, Any], settlement_id: int) -> dict[str, Any]:
    s = run_change(lambda c: st.final_approval(c, _load(settlement_id), body["decision"], body["comment"]))
    return settlement_json(s, current_user())


@blp.route("/settlements/<int:settlement_id>/claim.xlsx", methods=["GET"])
def settlements_claim_xlsx(settlement_id: int) -> Response:
    authorize(current_user(), "settlement.read")
    s = _load(settlement_id)
    out = claim_xlsx_file(db.session, s, st.figures(db.session, s, ctx().now),
                          st.stage_summary(db.session, s))
    return file_response(out, XLSX, f"结算申报表-{s.id}.xlsx", f"settlement-{s.id}-claim.xlsx")


def _store() -> Any:
    store = current_app.extensions.get("itemgate_store")
    if store is None:
        raise ServiceUnavailable("the evidence store is not configured")
    return store


def zip_response(chunks: Iterator[bytes], name: str, ascii_name: str) -> Response:
    response = Response(stream_with_context(chunks), mimetype="application/zip")
    response.headers["Content-Disposition"] = attachment(name, ascii_name)
    return response


@blp.route("/settlements/<int:settlement_id>/evidence.zip", methods=["GET"])
def settlements_evidence_zip(settlement_id: int) -> Response:
    authorize(current_user(), "settlement.read")
    s = _load(settlement_id)
    fig = st.figures(db.session, s, ctx().now)
    facts = [("合同", s.contract.code), ("结算期", s.label), ("状态", st.STATUS_NAMES.get(s.status, s.status)),
             ("结算申报金额（元）", fig.gross), ("应付金额（元）", fig.net)]
    f = WorkloadFilter(settlement_id=s.id, include_cancelled=s.status == "approved")
    chunks = stream_bundle(db.session, _store(), f, f"结算 #{s.id} {s.label}", facts)
    return zip_response(chunks, f"佐证材料-结算{s.id}.zip", f"settlement-{s.id}-evidence.zip")


# ---------------------------------------------------------------- exports with filters

class ExportArgs(Schema):
    contract = fields.String(load_default=None)
    date_from = fields.Date(load_default=None, data_key="from")
    date_to = fields.Date(load_default=None, data_key="to")
    department = fields.String(load_default=None)
    service_line = fields.String(load_default=None)
    settlement = id_field(load_default=None, data_key="settlement")


def export_filter(args: dict[str, Any]) -> WorkloadFilter:
    return WorkloadFilter(contract=args["contract"], date_from=args["date_from"], date_to=args["date_to"],
                          department=args["department"], service_line=args["service_line"],
                          settlement_id=args["settlement"])


@blp.route("/exports/evidence.zip", methods=["GET"])
@blp.arguments(ExportArgs, location="query")
def exports_evidence_zip(args: dict[str, Any]) -> Response:
    described = ", ".join(f"{k}={v}" for k, v in args.items() if v is not None) or "全部"
    return send_export(current_user(), EXPORTS["evidence_zip"], export_filter(args), described,
                       [("筛选条件", described)])


@blp.route("/exports/counts", methods=["GET"])
@blp.arguments(ExportArgs, location="query")
@blp.response(200)
def exports_counts(args: dict[str, Any]) -> dict[str, Any]:
    authorize(current_user(), "workload.read")
    f = export_filter(args)
    rows = monthly_counts(db.session, f)
    return {"counts": [dict(c, units=num(c["units"]), amount=money(c["amount"])) for c in rows],
            "progress": progress(db.session, f)}


@blp.route("/exports/counts.csv", methods=["GET"])
@blp.arguments(ExportArgs, location="query")
def exports_counts_csv(args: dict[str, Any]) -> Response:
    return send_export(current_user(), EXPORTS["counts_csv"], export_filter(args))


@blp.route("/exports/counts.xlsx", methods=["GET"])
@blp.arguments(ExportArgs, location="query")
def exports_counts_xlsx(args: dict[str, Any]) -> Response:
    return send_export(current_user(), EXPORTS["counts_xlsx"], export_filter(args))


@blp.route("/exports/<string:export_name>", methods=["GET"])
@blp.arguments(ExportArgs, location="query")
def exports_file(args: dict[str, Any], export_name: str) -> Response:
    """Any registered export by its file name (the routes above document the shipped ones)."""
    spec = export_named(export_name)
    if spec is None:
        raise NotFound(f"no export {export_name!r}")
    described = ", ".join(f"{k}={v}" for k, v in args.items() if v is not None) or "全部"
    return send_export(current_user(), spec, export_filter(args), described, [("筛选条件", described)])


# ---------------------------------------------------------------- ledger corrections

class ReverseBody(Schema):
    reason = fields.String(required=True, validate=validate.Length(min=2, max=4000))


@blp.route("/workload/entries/<int:entry_id>/reverse", methods=["POST"])
@blp.arguments(ReverseBody)
@blp.response(201)
def ledger_reverse(body: dict[str, Any], entry_id: int) -> dict[str, Any]:
    authorize(current_user(), "ledger.correct")
    reversal = run_change(lambda c: ledger.reverse_entry(c.session, c.actor, current_user(), entry_id,
                                                         body["reason"], c.now))
    return entry_json(db.session.get(WorkloadEntry, reversal.id) or reversal)

"""Web pages for the ledger, settlements (state, review trail, each role's actions) and exports."""
from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import UTC, date, datetime, time
from typing import Any

from flask import (
    Blueprint,
    Response,
    current_app,
    flash,
    redirect,
    render_template,
    request,
    stream_with_context,
    url_for,
)
from sqlalchemy import select
from sqlalchemy.orm import selectinload

from api.background import start_job
from api.downloads import attachment, file_response, send_export
from api.extensions import db
from api.limits import row_id
from api.web.auth import me, web_ctx
from api.web.i18n import _
from api.web.views import PER_PAGE, _count, _page, refusal
from engine.contract.catalog import contract_named
from engine.errors import DomainError, NotFound, ServiceUnavailable
from engine.money import ledger
from engine.money.bundle import stream_bundle
from engine.money.exports import EXPORTS, XLSX, export_named
from engine.money.reports import (
    NOTE_NAMES,
    WorkloadFilter,
    claim_xlsx_file,
    count_and_totals,
    entries_query,
    progress,
    totals,
)
from engine.trust.policy import may
from engine.usecases import jobs
from engine.usecases import settlement as st
from engine.usecases.tasks import Ctx
from storage.artefact_store import ObjectMissing, StoreUnavailable
from storage.models import (
    Contract,
    Department,
    ServiceLine,
    Settlement,
    SettlementNote,
    User,
    WorkItem,
    WorkloadEntry,
    utcnow,
)
from storage.unit_of_work import unit_of_work

bp = Blueprint("settle_web", __name__)
CLOCK_NAMES = {"open": "未到期", "overdue": "已超时", "on_time": "按时完成", "late": "逾期完成"}
LOCKED = "结算已审定（锁定），不能再修改；本次操作已记录。"


def _filter_args() -> tuple[WorkloadFilter, dict[str, Any]]:
    args = {k: (request.args.get(k) or "").strip()[:64] for k in ("contract", "from", "to", "department",
                                                                  "service_line")}

    def day(value: str) -> date | None:
        try:
            return date.fromisoformat(value) if value else None
        except ValueError:
            return None

    f = WorkloadFilter(contract=args["contract"] or None, date_from=day(args["from"]), date_to=day(args["to"]),
                       department=args["department"] or None, service_line=args["service_line"] or None)
    return f, args


def _options() -> dict[str, Any]:
    return {"contracts": list(db.session.scalars(select(Contract).order_by(Contract.code))),
            "lines": sorted({(sl.code, sl.name) for sl in db.session.scalars(select(ServiceLine))}),
            "departments": list(db.session.scalars(select(Department).order_by(Department.code)))}


# ---------------------------------------------------------------- ledger

@bp.get("/ledger")
def ledger_page() -> Any:
    f, args = _filter_args()
    query = entries_query(f)
    total, sums = count_and_totals(db.session, f)
    page = _page()
    rows = db.session.execute(query.offset((page - 1) * PER_PAGE).limit(PER_PAGE)).all()
    return render_template("web/ledger.html", rows=rows, args=args, page=page, total=total,
                           pages=max(1, -(-total // PER_PAGE)), totals=sums, me=me(),
                           **_options())


@bp.post("/ledger/<int:entry_id>/reverse")
def ledger_reverse(entry_id: int) -> Any:
    reason = (request.form.get("reason") or "").strip()[:4000]
    if request.form.get("confirm") != "1" or len(reason) < 2:
        flash(_("冲销不可撤销：请填写冲销原因并勾选确认。"), "error")
        return redirect(url_for("settle_web.ledger_page"))
    _change(lambda c: ledger.reverse_entry(c.session, c.actor, me(), entry_id, reason, c.now), _("已冲销该分录"))
    return redirect(url_for("settle_web.ledger_page"))


# ---------------------------------------------------------------- settlements

@bp.get("/settlements")
def settlements() -> Any:
    rows = list(db.session.scalars(select(Settlement).options(selectinload(Settlement.contract))
                                   .order_by(Settlement.id.desc()).limit(200)))
    figures = st.figures_of(db.session, rows, web_ctx().now)
    return render_template("web/settlements.html", rows=rows, figures=figures, me=me(),
                           status_names=st.STATUS_NAMES, **_options())


@bp.post("/settlements")
def settlements_open() -> Any:
    form = request.form
    stage = (form.get("stage") or "").strip()[:16] or None
    start: date | None = None
    end: date | None = None
    try:
        if form.get("period_start") or form.get("period_end") or stage is None:
            start = date.fromisoformat(form.get("period_start", ""))
            end = date.fromisoformat(form.get("period_end", ""))
    except ValueError:
        flash(_("请填写有效的结算期间。"), "error")
        return redirect(url_for("settle_web.settlements"))
    opened = _change(lambda c: st.open_settlement(c, form.get("contract", ""), start, end,
                                                  (form.get("label") or "").strip() or None, stage),
                     _("已开启结算"))
    if opened is None:
        return redirect(url_for("settle_web.settlements"))
    return redirect(url_for("settle_web.settlement", settlement_id=opened.id))


PICK_LIMIT = 200


def _claimable(s: Settlement) -> tuple[Sequence[Any], int, dict[str, str]]:
    """Entries the PM may add to this claim (unsettled, live items, same contract), filtered by line,
    department, month and item; at most PICK_LIMIT shown, with how many match."""
    args = {k: (request.args.get(k) or "").strip()[:64] for k in ("pick_line", "pick_dept", "pick_month", "pick_q")}
    ids = st.unsettled_entries(s.contract_id).subquery()
    query = (select(WorkloadEntry, WorkItem, ServiceLine, Department)
             .join(WorkItem, WorkItem.id == WorkloadEntry.item_id)
             .join(ServiceLine, ServiceLine.id == WorkloadEntry.service_line_id)
             .join(Department, Department.id == WorkloadEntry.department_id)
             .where(WorkloadEntry.id.in_(select(ids.c.id))))
    if args["pick_line"]:
        query = query.where(ServiceLine.code == args["pick_line"])
    if args["pick_dept"]:
        query = query.where(Department.code == args["pick_dept"])
    if args["pick_month"]:
        try:
            first = date.fromisoformat(args["pick_month"] + "-01")
        except ValueError:
            args["pick_month"] = ""
        else:
            after = date(first.year + (first.month == 12), first.month % 12 + 1, 1)
            query = query.where(WorkloadEntry.tallied_at >= datetime.combine(first, time(), UTC),
                                WorkloadEntry.tallied_at < datetime.combine(after, time(), UTC))
    if args["pick_q"]:
        like = f"%{args['pick_q']}%"
        query = query.where(WorkItem.code.like(like) | WorkItem.name.like(like))
    total = _count(query)
    rows = db.session.execute(query.order_by(WorkloadEntry.id).limit(PICK_LIMIT)).all()
    return rows, total, args


@bp.get("/settlements/<int:settlement_id>")
def settlement(settlement_id: int) -> Any:
    s = st.load_settlement_for(db.session, me(), settlement_id)
    lines = db.session.execute(st.line_entries(s.id)).all()
    notes = list(db.session.scalars(select(SettlementNote).where(SettlementNote.settlement_id == s.id)
                                    .order_by(SettlementNote.id)))
    actions = st.allowed_actions(me(), s)
    claimable, claimable_total, pick = _claimable(s) if "submit" in actions else ([], 0, {})
    options = _options() if "submit" in actions else {"lines": [], "departments": []}
    users = {u.id: u for u in db.session.scalars(select(User).where(User.id.in_(
        {n.user_id for n in notes if n.user_id})))} if notes else {}
    fig = st.figures(db.session, s, web_ctx().now)
    return render_template("web/settlement.html", s=s, lines=lines, notes=notes, me=me(), users=users, fig=fig,
                           actions=actions, status_names=st.STATUS_NAMES, note_kinds=NOTE_NAMES,
                           claimable=claimable, claimable_total=claimable_total, pick=pick, pick_limit=PICK_LIMIT,
                           lines_options=options["lines"], departments=options["departments"],
                           deadlines=st.deadlines(s, fig, web_ctx().now), stages=st.stage_summary(db.session, s),
                           clock_names=CLOCK_NAMES, rectifications=st.rectifications(db.session, s),
                           out_of_period={e.id for _line, e, _item in lines
                                          if st.entry_out_of_period(s.contract, e)})


def _change(fn: Callable[[Ctx], Any], done: str) -> Any:
    """Run one use case; a refused change to a locked settlement is rolled back, audited and explained."""
    context = web_ctx()
    try:
        with unit_of_work(db.session):
            result = fn(context)
        flash(done, "ok")
        return result
    except ledger.SettlementLocked as err:
        db.session.rollback()
        with unit_of_work(db.session):
            ledger.record_refusal(db.session, context.actor, err)
        flash(_(LOCKED), "error")
    except NotFound:
        raise
    except DomainError as err:
        db.session.rollback()
        flash(settlement_refusal(err), "error")
    return None


# Settlement refusals in people's language (the engine's detail is English, for logs and API clients).
SETTLEMENT_REFUSALS = {
    "assessment_score_required": "初审通过前请填写考核得分。",
    "bad_contract_settings": "合同的考核扣款设置有误，请联系系统管理员。",
    "comment_required": "请填写意见。",
    "entry_already_claimed": "所选分录已被其他结算申报认领。",
    "invalid_decision": "请选择审核结论。",
    "invalid_period": "结算期间的结束日期早于开始日期。",
    "invalid_score": "考核得分必须在 0–100 之间。",
    "is_reversal": "冲销分录不能再被冲销。",
    "item_cancelled": "所选分录所属事项已取消，不能计入结算。",
    "no_deduction_band": "合同未规定该得分对应的扣款比例。",
    "not_a_line": "该分录不在本结算申报中。",
    "reason_required": "请填写原因。",
    "settlement_wrong_stage": "结算申报当前所处环节不允许此操作，请刷新页面。",
    "unknown_contract": "找不到该合同。",
    "unknown_entry": "找不到所选分录。",
    "wrong_contract": "所选分录属于其他合同。",
    "entry_outside_stage": "所选分录不属于本结算阶段；前期的分录或服务期外的分录请勾选“从前期结转”并写明原因"
                           "（服务期外的分录也可在最终结算中申报）。",
    "out_of_period": "所选分录在合同服务期之外，合同约定不予结算。",
    "stage_required": "本合同按阶段结算，请选择结算阶段。",
    "no_schedule": "本合同未约定结算阶段，请填写结算期间。",
    "stage_already_open": "该结算阶段已开启。",
    "stage_not_begun": "该结算阶段尚未开始。",
    "over_award": "结算总额超过合同金额允许的上限。",
}


def settlement_refusal(err: DomainError) -> str:
    if err.code in SETTLEMENT_REFUSALS:
        return _(SETTLEMENT_REFUSALS[err.code])
    return refusal(err)


def _back(settlement_id: int) -> Any:
    return redirect(url_for("settle_web.settlement", settlement_id=settlement_id))


def _ids(text: str) -> list[int]:
    return [i for i in (row_id(p) for p in text.replace(",", " ").split()) if i is not None][:10000]


@bp.post("/settlements/<int:settlement_id>/submit")
def settlement_submit(settlement_id: int) -> Any:
    note = (request.form.get("note") or "").strip()[:4000] or None
    _change(lambda c: st.submit(c, st.load_settlement_for(c.session, me(), settlement_id), note), _("已提交结算申报"))
    return _back(settlement_id)


@bp.post("/settlements/<int:settlement_id>/lines")
def settlement_lines(settlement_id: int) -> Any:
    # Lines are ticked in lists (entry_id, repeated); a typed list (entry_ids) is still understood.
    picked = [i for i in (row_id(v) for v in request.form.getlist("entry_id")) if i is not None][:10000]
    ids = picked or _ids(request.form.get("entry_ids", ""))
    reason = (request.form.get("reason") or "").strip()[:4000]
    carry = request.form.get("carry") == "1"
    if not ids:
        flash(_("请勾选要增加或移除的分录。"), "error")
        return _back(settlement_id)

    def run(c: Ctx) -> Any:
        s = st.load_settlement_for(c.session, me(), settlement_id)
        if request.form.get("op") == "add":
            return st.add_lines(c, s, ids, reason, carry)
        return st.remove_lines(c, s, ids, reason)

    _change(run, _("已修改申报明细"))
    return _back(settlement_id)


@bp.post("/settlements/<int:settlement_id>/audit")
def settlement_audit(settlement_id: int) -> Any:
    op, text = request.form.get("op", ""), (request.form.get("text") or "").strip()[:4000]
    entry = row_id(request.form.get("entry_id"))

    def run(c: Ctx) -> Any:
        s = st.load_settlement_for(c.session, me(), settlement_id)
        if op == "comment":
            return st.comment(c, s, text, entry)
        return st.audit_decision(c, s, "accept" if op == "accept" else "return", text or None)

    _change(run, _("已保存审核意见"))
    return _back(settlement_id)


@bp.post("/settlements/<int:settlement_id>/review")
def settlement_review(settlement_id: int) -> Any:
    form = request.form
    decision, text = form.get("decision", ""), (form.get("comment") or "").strip()[:4000] or None

    if form.get("stage") == "final" and decision == "approve" and form.get("confirm") != "1":
        # Approval locks the figures for good: the approver ticks that they checked them.
        flash(_("审定后结算结果将锁定、不可再修改：请核对金额并勾选确认。"), "error")
        return _back(settlement_id)

    def run(c: Ctx) -> Any:
        s = st.load_settlement_for(c.session, me(), settlement_id)
        if form.get("stage") == "final":
            return st.final_approval(c, s, decision, text)
        return st.first_review(c, s, decision, text, form.get("assessment_score") or None)

    _change(run, _("已记录审核结论"))
    return _back(settlement_id)


@bp.get("/settlements/<int:settlement_id>/claim.xlsx")
def settlement_claim(settlement_id: int) -> Any:
    s = st.load_settlement_for(db.session, me(), settlement_id)
    out = claim_xlsx_file(db.session, s, st.figures(db.session, s, web_ctx().now),
                          st.stage_summary(db.session, s))
    return file_response(out, XLSX, f"结算申报表-{s.id}.xlsx", f"settlement-{s.id}-claim.xlsx")


@bp.get("/settlements/<int:settlement_id>/evidence.zip")
def settlement_evidence(settlement_id: int) -> Any:
    s = st.load_settlement_for(db.session, me(), settlement_id)
    f = WorkloadFilter(settlement_id=s.id, include_cancelled=s.status == "approved")
    chunks = stream_bundle(db.session, current_app.extensions["itemgate_store"], f, f"结算 #{s.id} {s.label}")
    response = Response(stream_with_context(chunks), mimetype="application/zip")
    response.headers["Content-Disposition"] = attachment(f"佐证材料-结算{s.id}.zip", f"settlement-{s.id}-evidence.zip")
    return response


# ---------------------------------------------------------------- exports

@bp.get("/exports")
def exports() -> Any:
    f, args = _filter_args()
    query = "&".join(f"{k}={v}" for k, v in args.items() if v)
    user = me()
    downloads = [e for e in EXPORTS.values() if e.on_web and may(user, e.action)]
    return render_template("web/exports.html", args=args, query=query, progress=progress(db.session, f),
                           totals=totals(db.session, f), downloads=downloads, **_options())


@bp.get("/exports/<string:export_name>")
def export_file(export_name: str) -> Any:
    spec = export_named(export_name)
    if spec is None or not spec.on_web:
        raise NotFound(f"no export {export_name!r}")
    f, args = _filter_args()
    described = ", ".join(f"{k}={v}" for k, v in args.items() if v) or "全部"
    return send_export(me(), spec, f, described)


# ---------------------------------------------------------------- background export jobs

@bp.post("/exports/jobs")
def export_job_create() -> Any:
    form = request.form
    params = {k: (form.get(k) or "").strip()[:64] for k in jobs.FILTER_KEYS}
    try:
        with unit_of_work(db.session):
            job = jobs.create_job(db.session, me(), form.get("kind", ""), params)
    except NotFound:
        raise
    except DomainError as err:
        flash(refusal(err) if err.code == "role_required" else err.detail, "error")
        given: dict[str, Any] = {k: v for k, v in params.items() if v}
        return redirect(url_for("settle_web.exports", **given))
    start_job(current_app._get_current_object(), job.id)  # type: ignore[attr-defined]
    flash(_("已开始后台生成"), "ok")
    return redirect(url_for("settle_web.export_job", job_id=job.id))


@bp.get("/exports/jobs/<int:job_id>")
def export_job(job_id: int) -> Any:
    job = jobs.load_job_for(db.session, me(), job_id)
    if job.kind not in EXPORTS:  # an import job shares the queue; it has its own page
        return redirect(url_for("web.items_import_job", job_id=job_id))
    status, error = jobs.shown(job, utcnow())
    return render_template("web/export_job.html", job=job, status=status, error=error, me=me(),
                           kind=EXPORTS[job.kind], running=status in ("queued", "running"))


@bp.get("/exports/jobs/<int:job_id>/download")
def export_job_download(job_id: int) -> Any:
    job = jobs.load_job_for(db.session, me(), job_id)
    if jobs.shown(job, utcnow())[0] != "done" or not job.key:
        raise NotFound(f"export job {job_id} has no result yet")
    store = current_app.extensions.get("itemgate_store")
    if store is None:
        raise ServiceUnavailable("no object store is configured")
    try:
        stream = store.iter_content(job.key, job.version_id)
    except StoreUnavailable as exc:
        raise ServiceUnavailable("the object store is unavailable") from exc
    except ObjectMissing as exc:
        raise NotFound(f"the result of export job {job_id} is gone") from exc
    spec = EXPORTS[job.kind]
    response = Response(stream, mimetype=spec.content_type.split(";")[0])
    response.headers["Content-Type"] = spec.content_type
    response.headers["Content-Disposition"] = attachment(spec.name, f"job-{job.id}-{spec.ascii_name}")
    if job.size is not None:
        response.headers["Content-Length"] = str(job.size)
    return response


# ---------------------------------------------------------------- payment schedule (支付计划)

@bp.get("/contracts/<code>/payments")
def payments_page(code: str) -> Any:
    from engine.money import payments as pay

    contract = contract_named(db.session, code)
    plan = pay.schedule_for(db.session, contract)
    from engine.money.money_reports import STATE_NAMES

    return render_template("web/payments.html", contract=contract, plan=plan, me=me(), state_names=STATE_NAMES,
                           cumulative=pay.approved_cumulative(db.session, contract),
                           may_record=may(me(), "payment.record"))


@bp.post("/contracts/<code>/payments")
def payments_record(code: str) -> Any:
    from decimal import Decimal, InvalidOperation

    from engine.money import payments as pay

    contract = contract_named(db.session, code)
    form = request.form
    try:
        amount = Decimal(form.get("amount", ""))
        paid_on = date.fromisoformat(form.get("paid_on", ""))
    except (InvalidOperation, ValueError):
        flash(_("请填写有效的金额和付款日期。"), "error")
        return redirect(url_for("settle_web.payments_page", code=code))
    _change(lambda c: pay.record_payment(c.session, c.actor, me(), contract, amount, paid_on,
                                         (form.get("invoice_number") or "").strip(), c.now), _("已登记付款"))
    return redirect(url_for("settle_web.payments_page", code=code))


@bp.get("/contracts/<code>/payments.xlsx")
def payments_xlsx(code: str) -> Any:
    from flask import g

    from engine.money import payments as pay
    from engine.money.money_reports import payments_xlsx_file

    contract = contract_named(db.session, code)
    plan = pay.schedule_for(db.session, contract)
    g.export_rows = len(plan)
    return file_response(payments_xlsx_file(contract, plan), XLSX, f"支付计划-{contract.code}.xlsx",
                         f"payments-{contract.code}.xlsx")

"""Settlement (审量结算): claims run by the `settlement` BPMN, with penalties, deductions and a final lock."""
from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from typing import Any

from sqlalchemy import exists, func, insert, select, update
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlalchemy.orm import Session
from sqlalchemy.orm.attributes import set_committed_value

from engine import anchors, audit, spiff
from engine.calendar import TZ, WorkCalendar
from engine.errors import Conflict, DomainError, Forbidden, Invalid, NotFound, ServiceUnavailable
from engine.ledger import SettlementLocked
from engine.policy import authorize, may
from engine.workflow import Ctx, current_definition, model_of, run_and_step, work_calendar
from storage.artefact_store import StoreUnavailable
from storage.models import (
    Contract,
    Settlement,
    SettlementLine,
    SettlementNote,
    User,
    WorkItem,
    WorkloadEntry,
)

PROCESS_ID = "settlement"
CENT = Decimal("0.01")
# The one task during which the PM may add or remove entries (before the first submission and after a return).
EDITABLE_TASK = "prepare_claim"
TASK_STATUS = {"audit_review": "audit", "first_review": "first_review", "final_approval": "final_approval"}
STATUS_NAMES = {"draft": "编制中", "revising": "修改中", "audit": "第三方审核", "first_review": "采购单位初审",
                "final_approval": "采购单位审定", "approved": "已审定（锁定）"}

# Seed 000 (郑州) quarterly deduction bands. The seed writes 【40-60 分（含）】, 【60-80 分（含）】,
# 【80-90 分（含）】, 【90-100 分】: "（含）" follows the upper figure, so each band owns its upper
# boundary — 90 → 5 %, 80 → 20 %, 60 → 50 % — and only scores above 90 go undeducted. The lowest band
# is also closed at the bottom (40 → 50 %); below 40 the seed sets no band, so a human must decide.
SEED_000_BANDS: tuple[tuple[Decimal, Decimal, Decimal], ...] = (
    (Decimal("90"), Decimal("100"), Decimal("0")),
    (Decimal("80"), Decimal("90"), Decimal("0.05")),
    (Decimal("60"), Decimal("80"), Decimal("0.20")),
    (Decimal("40"), Decimal("60"), Decimal("0.50")),
)


# ---------------------------------------------------------------- pure rules

def bands_for(settings: dict[str, Any]) -> tuple[tuple[Decimal, Decimal, Decimal], ...] | None:
    """The contract's deduction bands: "seed_000", or a list of {"above", "upto", "rate"}; None when unset."""
    raw = settings.get("deduction_bands")
    if not raw:
        return None
    if raw == "seed_000":
        return SEED_000_BANDS
    try:
        bands = tuple((Decimal(str(b["above"])), Decimal(str(b["upto"])), Decimal(str(b["rate"]))) for b in raw)
    except (KeyError, TypeError, InvalidOperation) as exc:
        raise Invalid(f"contract deduction_bands are malformed: {exc}", code="bad_contract_settings") from exc
    return tuple(sorted(bands, reverse=True))


def deduction_rate(score: Decimal, bands: tuple[tuple[Decimal, Decimal, Decimal], ...]) -> Decimal:
    """Rate for an assessment score: band (above, upto] owns its upper bound; the lowest is closed below too."""
    if not Decimal("0") <= score <= Decimal("100"):
        raise Invalid(f"assessment score {score} is outside 0–100", code="invalid_score")
    for above, upto, rate in bands:
        if above < score <= upto:
            return rate
    lowest = min(bands)
    if score == lowest[0]:
        return lowest[2]
    raise Invalid(f"no deduction band covers score {score}; the contract sets none below {lowest[0]}",
                  code="no_deduction_band")


def settlement_deadline(calendar: WorkCalendar, period_end: date, working_days: int) -> tuple[datetime, list[str]]:
    """The last moment to submit: the end of the Nth working day after the period's last day."""
    start = datetime.combine(period_end, time(12, 0), TZ)
    deadline = calendar.add_working_days(start, working_days, end_of_day=time(23, 59, 59))
    return deadline.due_at, list(deadline.warnings)


def is_late(submitted_at: datetime, due_at: datetime | None) -> bool:
    return due_at is not None and submitted_at > due_at


def money(value: Decimal) -> Decimal:
    return value.quantize(CENT, rounding=ROUND_HALF_UP)


@dataclass
class Figures:
    """What a settlement is worth: gross claim, late penalty, assessment deduction and the net payable."""

    gross: Decimal
    entries: int
    due_at: datetime | None
    late: bool | None
    penalty_rate: Decimal
    penalty: Decimal
    score: Decimal | None
    deduction_rate: Decimal | None
    deduction: Decimal
    net: Decimal
    frozen: bool
    # Seed 001: the settled total may exceed the award by at most 10 %; shown, not enforced (a human decides).
    award_limit: Decimal | None = None
    exceeds_award_limit: bool | None = None


# ---------------------------------------------------------------- loading and guards

def load_settlement_for(session: Session, user: User, settlement_id: int) -> Settlement:
    """The settlement, if the user's role may see settlements; otherwise 404."""
    settlement = session.get(Settlement, settlement_id) if may(user, "settlement.read") else None
    if settlement is None:
        raise NotFound(f"settlement {settlement_id} not found")
    return settlement


def guard_unlocked(settlement: Settlement, attempted: str, **context: Any) -> None:
    if settlement.status == "approved":
        raise SettlementLocked(f"settlement {settlement.id} is approved (审定) and can no longer change",
                               settlement_id=settlement.id, attempted=attempted, **context)


def _note(ctx: Ctx, settlement: Settlement, kind: str, text: str | None = None,
          entry_id: int | None = None) -> SettlementNote:
    note = SettlementNote(settlement_id=settlement.id, round=settlement.round, kind=kind, entry_id=entry_id,
                          text=text, user_id=ctx.user.id if ctx.user else None, at=ctx.now)
    ctx.session.add(note)
    return note


def _cas(ctx: Ctx, settlement: Settlement, **values: Any) -> None:
    """Compare-and-set on the version (and on "not approved"): a concurrent change or approval wins, we get 409."""
    expected = settlement.version
    values.update(version=expected + 1, updated_at=ctx.now)
    try:
        result = ctx.session.execute(
            update(Settlement)
            .where(Settlement.id == settlement.id, Settlement.version == expected, Settlement.status != "approved")
            .values(**values).execution_options(synchronize_session=False))
    except OperationalError as exc:  # SQLite: another writer holds the database
        if "locked" in str(exc).lower():
            raise Conflict("the settlement changed while you were working; reload and try again",
                           code="version_conflict") from exc
        raise
    if int(getattr(result, "rowcount", 0)) != 1:
        status = ctx.session.execute(select(Settlement.status).where(Settlement.id == settlement.id)).scalar()
        if status == "approved":
            raise SettlementLocked(f"settlement {settlement.id} was approved meanwhile and can no longer change",
                                   settlement_id=settlement.id, attempted="settlement.change")
        raise Conflict("the settlement changed while you were working; reload and try again",
                       code="version_conflict")
    for key, value in values.items():
        set_committed_value(settlement, key, value)


# ---------------------------------------------------------------- gathering entries

def _period_bounds(start: date, end: date) -> tuple[datetime, datetime]:
    return datetime.combine(start, time(0), TZ), datetime.combine(end + timedelta(days=1), time(0), TZ)


def unsettled_entries(contract_id: int, start: date | None = None, end: date | None = None) -> Any:
    """Entries of live (not cancelled) items that no settlement claims yet, optionally within a period."""
    query = (select(WorkloadEntry.id)
             .join(WorkItem, WorkItem.id == WorkloadEntry.item_id)
             .where(WorkloadEntry.contract_id == contract_id, WorkItem.status != "cancelled",
                    ~exists().where(SettlementLine.entry_id == WorkloadEntry.id)))
    if start is not None and end is not None:
        lo, hi = _period_bounds(start, end)
        query = query.where(WorkloadEntry.tallied_at >= lo, WorkloadEntry.tallied_at < hi)
    return query.order_by(WorkloadEntry.id)


def _claim(ctx: Ctx, settlement: Settlement, entry_ids: list[int], reason: str | None) -> None:
    if not entry_ids:
        return
    rows = [{"settlement_id": settlement.id, "entry_id": eid, "added_at": ctx.now,
             "added_by_id": ctx.user.id if ctx.user else None, "added_reason": reason} for eid in entry_ids]
    try:
        with ctx.session.begin_nested():
            ctx.session.execute(insert(SettlementLine), rows)
    except IntegrityError as exc:
        # Two settlements gathering at once: the unique entry_id lets only one of them claim an entry.
        raise Conflict("an entry is already claimed by another settlement", code="entry_already_claimed") from exc


# ---------------------------------------------------------------- use cases

def open_settlement(ctx: Ctx, contract_code: str, period_start: date, period_end: date,
                    label: str | None = None) -> Settlement:
    """PM opens a settlement: the process starts and every unsettled entry of the period is gathered."""
    assert ctx.user is not None
    authorize(ctx.user, "settlement.prepare")
    contract = ctx.session.execute(select(Contract).where(Contract.code == contract_code)).scalar()
    if contract is None:
        raise Invalid(f"unknown contract {contract_code!r}", code="unknown_contract")
    if period_end < period_start:
        raise Invalid("the period ends before it starts", code="invalid_period")
    settings = contract.settings or {}
    due_at = None
    warnings: list[str] = []
    if settings.get("settlement_due_working_days") is not None:
        due_at, warnings = settlement_deadline(work_calendar(ctx.session), period_end,
                                               int(settings["settlement_due_working_days"]))
    definition = current_definition(ctx.session, PROCESS_ID)
    model = model_of(definition)
    settlement = Settlement(
        contract_id=contract.id, label=(label or f"{period_start.isoformat()}–{period_end.isoformat()}")[:100],
        period_start=period_start, period_end=period_end, status="draft", definition_id=definition.id,
        state="", version=1, round=1, due_at=due_at, created_by_id=ctx.user.id, created_at=ctx.now,
        updated_at=ctx.now)
    settlement.contract = contract
    settlement.definition = definition
    ctx.session.add(settlement)
    ctx.session.flush()
    workflow = spiff.new_workflow(model, {"settlement_id": settlement.id, "contract": contract.code})
    task = _ready_task(workflow)
    settlement.state = spiff.dumps(workflow, model)
    settlement.current_task = task.task_spec.name if task else None
    settlement.current_lane = spiff.task_lane(task) if task else None
    ids = list(ctx.session.scalars(unsettled_entries(contract.id, period_start, period_end)))
    _claim(ctx, settlement, ids, None)
    _note(ctx, settlement, "opened", f"gathered {len(ids)} entries" + (f"; {'; '.join(warnings)}" if warnings
                                                                        else ""))
    ctx.session.flush()
    audit.record(ctx.session, ctx.actor, "settlement.opened", target_type="settlement", target_id=settlement.id,
                 contract=contract.code, period=[period_start.isoformat(), period_end.isoformat()],
                 entries=len(ids), due_at=due_at)
    return settlement


def _ready_task(workflow: Any) -> Any:
    ready = spiff.ready_human_tasks(workflow)
    return ready[0] if ready else None


def _advance(ctx: Ctx, settlement: Settlement, task_name: str, data: dict[str, Any], attempted: str) -> None:
    """Complete the settlement's ready task `task_name` as the current user, then CAS-save the new state."""
    assert ctx.user is not None
    guard_unlocked(settlement, attempted)
    model = model_of(settlement.definition)
    workflow = spiff.loads(settlement.state, model)
    task = next((t for t in spiff.ready_human_tasks(workflow) if t.task_spec.name == task_name), None)
    if task is None:
        raise Conflict(f"settlement {settlement.id} is at {settlement.status}, not waiting for this step",
                       code="settlement_wrong_stage", status_now=settlement.status)
    lane = spiff.task_lane(task)
    if ctx.user.role != lane:
        raise Forbidden(f"this step is for role {lane}; you are {ctx.user.role}", code="not_your_task")
    run_and_step(workflow, task, data, "the settlement process")
    nxt = _ready_task(workflow)
    if workflow.is_completed():
        status = "approved"
    elif nxt is not None and nxt.task_spec.name == EDITABLE_TASK:
        status = "revising"
    else:
        status = TASK_STATUS.get(nxt.task_spec.name if nxt else "", settlement.status)
    values: dict[str, Any] = {
        "state": spiff.dumps(workflow, model), "status": status,
        "current_task": nxt.task_spec.name if nxt else None, "current_lane": spiff.task_lane(nxt) if nxt else None,
    }
    if status == "revising":
        values["round"] = settlement.round + 1
    _cas(ctx, settlement, **values)


def _drop_cancelled(ctx: Ctx, settlement: Settlement) -> int:
    """Cancelled items are never billable: lines whose item was cancelled since leave the claim, with a note."""
    rows = ctx.session.execute(
        select(SettlementLine).join(WorkloadEntry, WorkloadEntry.id == SettlementLine.entry_id)
        .join(WorkItem, WorkItem.id == WorkloadEntry.item_id)
        .where(SettlementLine.settlement_id == settlement.id, WorkItem.status == "cancelled")).scalars().all()
    for line in rows:
        _note(ctx, settlement, "removed", "事项已取消 (item cancelled)", line.entry_id)
        ctx.session.delete(line)
    ctx.session.flush()
    return len(rows)


def submit(ctx: Ctx, settlement: Settlement, note: str | None = None) -> Settlement:
    """PM submits (or resubmits) the claim to the third-party auditor; the first submission fixes lateness."""
    guard_unlocked(settlement, "settlement.submit")
    _drop_cancelled(ctx, settlement)
    first = settlement.first_submitted_at is None
    _advance(ctx, settlement, "prepare_claim", {}, "settlement.submit")
    if first:
        settlement.first_submitted_at = ctx.now
    _note(ctx, settlement, "submitted", note)
    fig = figures(ctx.session, settlement, ctx.now)
    audit.record(ctx.session, ctx.actor, "settlement.submitted", target_type="settlement",
                 target_id=settlement.id, round=settlement.round, gross=str(fig.gross), late=fig.late,
                 entries=fig.entries)
    return settlement


def comment(ctx: Ctx, settlement: Settlement, text: str, entry_id: int | None = None) -> SettlementNote:
    """Auditor's review comment, on one line (an entry) or on the whole claim."""
    assert ctx.user is not None
    guard_unlocked(settlement, "settlement.comment", entry_id=entry_id)
    authorize(ctx.user, "settlement.comment")
    if settlement.status != "audit":
        raise Conflict("comments are taken while the auditor reviews the claim", code="settlement_wrong_stage",
                       status_now=settlement.status)
    if not (text or "").strip():
        raise Invalid("a comment needs text", code="comment_required")
    if entry_id is not None:
        claimed = ctx.session.execute(select(SettlementLine.id).where(
            SettlementLine.settlement_id == settlement.id, SettlementLine.entry_id == entry_id)).scalar()
        if claimed is None:
            raise Invalid(f"entry {entry_id} is not a line of settlement {settlement.id}", code="not_a_line")
    _cas(ctx, settlement)
    note = _note(ctx, settlement, "comment", text.strip(), entry_id)
    ctx.session.flush()
    audit.record(ctx.session, ctx.actor, "settlement.commented", target_type="settlement",
                 target_id=settlement.id, entry_id=entry_id, round=settlement.round)
    return note


def audit_decision(ctx: Ctx, settlement: Settlement, decision: str, text: str | None = None) -> Settlement:
    """Auditor accepts the claim, or returns it to the PM for revision (with a comment or line comments)."""
    guard_unlocked(settlement, f"settlement.audit_{decision}")
    if decision not in ("accept", "return"):
        raise Invalid("decision must be accept or return", code="invalid_decision")
    if decision == "return" and not (text or "").strip():
        open_comments = ctx.session.execute(select(func.count(SettlementNote.id)).where(
            SettlementNote.settlement_id == settlement.id, SettlementNote.round == settlement.round,
            SettlementNote.kind == "comment")).scalar()
        if not open_comments:
            raise Invalid("returning needs a comment (on the claim or on its lines)", code="comment_required")
    round_ = settlement.round
    _advance(ctx, settlement, "audit_review", {"decision": decision}, f"settlement.audit_{decision}")
    ctx.session.add(SettlementNote(settlement_id=settlement.id, round=round_,
                                   kind="accepted" if decision == "accept" else "returned", text=text,
                                   user_id=ctx.user.id if ctx.user else None, at=ctx.now))
    audit.record(ctx.session, ctx.actor, f"settlement.audit_{decision}", target_type="settlement",
                 target_id=settlement.id, round=round_, comment=text)
    return settlement


def _entries_of_contract(ctx: Ctx, settlement: Settlement, entry_ids: list[int]) -> list[WorkloadEntry]:
    entries = list(ctx.session.scalars(select(WorkloadEntry).where(WorkloadEntry.id.in_(entry_ids))))
    found = {e.id for e in entries}
    missing = [i for i in entry_ids if i not in found]
    if missing:
        raise Invalid(f"no ledger entries {missing}", code="unknown_entry", entries=missing)
    foreign = [e.id for e in entries if e.contract_id != settlement.contract_id]
    if foreign:
        raise Invalid(f"entries {foreign} belong to another contract", code="wrong_contract", entries=foreign)
    return entries


def _require_editable(ctx: Ctx, settlement: Settlement) -> None:
    assert ctx.user is not None
    authorize(ctx.user, "settlement.prepare")
    if settlement.current_task != EDITABLE_TASK:
        raise Conflict("lines change only while the PM prepares or revises the claim",
                       code="settlement_wrong_stage", status_now=settlement.status)


def add_lines(ctx: Ctx, settlement: Settlement, entry_ids: list[int], reason: str) -> int:
    """PM adds unsettled entries to the claim, with a reason."""
    guard_unlocked(settlement, "settlement.add_lines", entries=entry_ids)
    _require_editable(ctx, settlement)
    if not (reason or "").strip():
        raise Invalid("adding entries needs a reason", code="reason_required")
    entries = _entries_of_contract(ctx, settlement, entry_ids)
    cancelled = [e.id for e in entries if e.item.status == "cancelled"]
    if cancelled:
        raise Invalid(f"entries {cancelled} are of cancelled items and never billable", code="item_cancelled",
                      entries=cancelled)
    _cas(ctx, settlement)
    _claim(ctx, settlement, [e.id for e in entries], reason.strip())
    for e in entries:
        _note(ctx, settlement, "added", reason.strip(), e.id)
    ctx.session.flush()
    audit.record(ctx.session, ctx.actor, "settlement.lines_added", target_type="settlement",
                 target_id=settlement.id, entries=[e.id for e in entries], reason=reason.strip())
    return len(entries)


def remove_lines(ctx: Ctx, settlement: Settlement, entry_ids: list[int], reason: str) -> int:
    """PM removes lines from the claim, with a reason; the entries become unsettled again."""
    guard_unlocked(settlement, "settlement.remove_lines", entries=entry_ids)
    _require_editable(ctx, settlement)
    if not (reason or "").strip():
        raise Invalid("removing entries needs a reason", code="reason_required")
    lines = list(ctx.session.scalars(select(SettlementLine).where(
        SettlementLine.settlement_id == settlement.id, SettlementLine.entry_id.in_(entry_ids))))
    absent = sorted(set(entry_ids) - {line.entry_id for line in lines})
    if absent:
        raise Invalid(f"entries {absent} are not lines of settlement {settlement.id}", code="not_a_line",
                      entries=absent)
    _cas(ctx, settlement)
    for line in lines:
        _note(ctx, settlement, "removed", reason.strip(), line.entry_id)
        ctx.session.delete(line)
    ctx.session.flush()
    audit.record(ctx.session, ctx.actor, "settlement.lines_removed", target_type="settlement",
                 target_id=settlement.id, entries=sorted(entry_ids), reason=reason.strip())
    return len(lines)


def _score(value: Any) -> Decimal | None:
    if value is None or value == "":
        return None
    try:
        score = Decimal(str(value)).quantize(CENT)
    except InvalidOperation as exc:
        raise Invalid(f"assessment score {value!r} is not a number", code="invalid_score") from exc
    if not Decimal("0") <= score <= Decimal("100"):
        raise Invalid(f"assessment score {score} is outside 0–100", code="invalid_score")
    return score


def first_review(ctx: Ctx, settlement: Settlement, decision: str, text: str | None = None,
                 assessment_score: Any = None) -> Settlement:
    """Buyer's first review (初审): approve on to final approval, or return to the PM; may record the score."""
    assert ctx.user is not None
    guard_unlocked(settlement, f"settlement.first_review_{decision}")
    if decision not in ("approve", "return"):
        raise Invalid("decision must be approve or return", code="invalid_decision")
    if decision == "return" and not (text or "").strip():
        raise Invalid("returning needs a comment", code="comment_required")
    score = _score(assessment_score)
    round_ = settlement.round
    _advance(ctx, settlement, "first_review", {"decision": decision}, f"settlement.first_review_{decision}")
    settlement.first_reviewed_by_id = ctx.user.id
    if score is not None:
        settlement.assessment_score = score
    ctx.session.add(SettlementNote(settlement_id=settlement.id, round=round_, kind=f"first_review_{decision}",
                                   text=text, user_id=ctx.user.id, at=ctx.now))
    audit.record(ctx.session, ctx.actor, f"settlement.first_review_{decision}", target_type="settlement",
                 target_id=settlement.id, round=round_, comment=text,
                 assessment_score=None if score is None else str(score))
    return settlement


def final_approval(ctx: Ctx, settlement: Settlement, decision: str, text: str | None = None) -> Settlement:
    """The buyer's approver records final approval (审定); the figures are frozen and the settlement locks."""
    assert ctx.user is not None
    guard_unlocked(settlement, f"settlement.final_{decision}")
    if decision not in ("approve", "return"):
        raise Invalid("decision must be approve or return", code="invalid_decision")
    if decision == "return" and not (text or "").strip():
        raise Invalid("returning needs a comment", code="comment_required")
    if settlement.first_reviewed_by_id == ctx.user.id:
        raise DomainError("the first reviewer (初审) cannot also give final approval (审定)",
                          code="separation_of_duties", status=403)
    bands = bands_for(settlement.contract.settings or {})
    if decision == "approve" and bands is not None and settlement.assessment_score is None:
        raise Invalid("this contract deducts by assessment score; record the score at first review first",
                      code="assessment_score_required")
    if decision == "approve":
        _drop_cancelled(ctx, settlement)
    round_ = settlement.round
    fig = figures(ctx.session, settlement, ctx.now)
    anchor = _approval_anchor(ctx, settlement, fig) if decision == "approve" else None
    anchored: dict[str, Any] = {} if anchor is None else {"anchor": anchor}
    _advance(ctx, settlement, "final_approval", {"decision": decision}, f"settlement.final_{decision}")
    if decision == "approve":
        _freeze(ctx, settlement, fig, anchor)
    ctx.session.add(SettlementNote(settlement_id=settlement.id, round=round_, kind=f"final_{decision}",
                                   text=text, user_id=ctx.user.id, at=ctx.now))
    audit.record(ctx.session, ctx.actor, f"settlement.final_{decision}", target_type="settlement",
                 target_id=settlement.id, round=round_, comment=text, gross=str(fig.gross),
                 penalty=str(fig.penalty), deduction=str(fig.deduction), net=str(fig.net), **anchored)
    if decision == "approve" and ctx.store is not None:
        # The approval's own events are written at commit; anchor them as soon as they exist.
        anchors.anchor_after_commit(ctx.session, ctx.store, "settlement_approved", settlement_id=settlement.id)
    return settlement


def _approval_anchor(ctx: Ctx, settlement: Settlement, fig: Figures) -> dict[str, Any] | None:
    """The anchor an approval is made under: the audit chain's head as of the last commit, written with the
    approved figures before this transaction commits, so the settlement row and its approval event can name it.
    Without the store the approval waits (503): an approved settlement always carries its anchor."""
    if ctx.store is None:
        raise ServiceUnavailable("the object store is needed to anchor the approval")
    try:
        anchor = anchors.anchor_now(ctx.session, ctx.store, "settlement_approval", settlement_id=settlement.id,
                                    gross=str(fig.gross), net=str(fig.net))
    except StoreUnavailable as exc:
        raise ServiceUnavailable(f"the audit anchor could not be written: {exc}") from exc
    return None if anchor is None else anchor.ref()


def _freeze(ctx: Ctx, settlement: Settlement, fig: Figures, anchor: dict[str, Any] | None) -> None:
    # The status is already "approved", so the CAS guard would refuse; this write is the approval itself.
    values = dict(approved_at=ctx.now, approved_by_id=ctx.user.id if ctx.user else None, gross_amount=fig.gross,
                  penalty_rate=fig.penalty_rate, penalty_amount=fig.penalty, deduction_rate=fig.deduction_rate,
                  deduction_amount=fig.deduction, net_amount=fig.net, anchor=anchor)
    ctx.session.execute(update(Settlement).where(Settlement.id == settlement.id).values(**values)
                        .execution_options(synchronize_session=False))
    for key, value in values.items():
        set_committed_value(settlement, key, value)


# ---------------------------------------------------------------- figures

def line_entries(settlement_id: int) -> Any:
    """The settlement's lines with their entries and items, in entry order."""
    return (select(SettlementLine, WorkloadEntry, WorkItem)
            .join(WorkloadEntry, WorkloadEntry.id == SettlementLine.entry_id)
            .join(WorkItem, WorkItem.id == WorkloadEntry.item_id)
            .where(SettlementLine.settlement_id == settlement_id)
            .order_by(WorkloadEntry.id))


def gross_of(session: Session, settlement_id: int) -> tuple[Decimal, int]:
    gross, count = session.execute(
        select(func.coalesce(func.sum(WorkloadEntry.amount), 0), func.count(WorkloadEntry.id))
        .join(SettlementLine, SettlementLine.entry_id == WorkloadEntry.id)
        .join(WorkItem, WorkItem.id == WorkloadEntry.item_id)
        .where(SettlementLine.settlement_id == settlement_id, WorkItem.status != "cancelled")).one()
    return money(Decimal(gross)), int(count)


def _award_check(session: Session, settlement: Settlement, fig: Figures) -> Figures:
    award = settlement.contract.award_amount
    if award is None:
        return fig
    before = session.execute(select(func.coalesce(func.sum(Settlement.gross_amount), 0)).where(
        Settlement.contract_id == settlement.contract_id, Settlement.status == "approved",
        Settlement.id != settlement.id)).scalar()
    fig.award_limit = money(Decimal(award) * Decimal("1.10"))
    fig.exceeds_award_limit = Decimal(before or 0) + fig.gross > fig.award_limit
    return fig


def figures(session: Session, settlement: Settlement, now: datetime) -> Figures:
    """Live figures while the claim moves; the frozen ones once approved."""
    return _award_check(session, settlement, _figures(session, settlement, now))


def _figures(session: Session, settlement: Settlement, now: datetime) -> Figures:
    _, count = gross_of(session, settlement.id)
    if settlement.status == "approved" and settlement.gross_amount is not None:
        return Figures(gross=settlement.gross_amount, entries=count, due_at=settlement.due_at,
                       late=is_late(settlement.first_submitted_at or now, settlement.due_at),
                       penalty_rate=settlement.penalty_rate or Decimal("0"),
                       penalty=settlement.penalty_amount or Decimal("0"), score=settlement.assessment_score,
                       deduction_rate=settlement.deduction_rate, deduction=settlement.deduction_amount or Decimal(0),
                       net=settlement.net_amount or Decimal("0"), frozen=True)
    gross, count = gross_of(session, settlement.id)
    settings = settlement.contract.settings or {}
    submitted = settlement.first_submitted_at or now
    late = is_late(submitted, settlement.due_at) if settlement.due_at is not None else None
    rate = Decimal(str(settings.get("late_penalty_rate", 0))) if late else Decimal("0")
    penalty = money(gross * rate)
    bands = bands_for(settings)
    score = settlement.assessment_score
    d_rate = deduction_rate(score, bands) if bands is not None and score is not None else None
    deduction = money(gross * d_rate) if d_rate is not None else Decimal("0.00")
    return Figures(gross=gross, entries=count, due_at=settlement.due_at, late=late, penalty_rate=rate,
                   penalty=penalty, score=score, deduction_rate=d_rate, deduction=deduction,
                   net=money(gross - penalty - deduction), frozen=False)


def allowed_actions(user: User, settlement: Settlement) -> list[str]:
    """What this user can do next, for UIs; the use cases enforce the same rules."""
    if settlement.status == "approved":
        return []
    task = settlement.current_task
    actions: list[str] = []
    if task == EDITABLE_TASK and may(user, "settlement.prepare"):
        actions += ["submit", "add_lines", "remove_lines"]
    if task == "audit_review" and may(user, "settlement.comment"):
        actions += ["comment", "accept", "return"]
    if task == "first_review" and may(user, "settlement.review"):
        actions += ["first_review"]
    if task == "final_approval" and may(user, "settlement.review") and settlement.first_reviewed_by_id != user.id:
        actions += ["final_approval"]
    return actions

"""Settlement (审量结算): claims run by the `settlement` BPMN, with penalties, deductions and a final lock."""
from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from decimal import Decimal, InvalidOperation
from typing import Any, cast

from sqlalchemy import Table, exists, func, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session
from sqlalchemy.orm.attributes import set_committed_value

from engine.contract import schedule
from engine.contract.calendar import TZ, WorkCalendar
from engine.contract.catalog import out_of_period_mode
from engine.errors import Conflict, Forbidden, Invalid, NotFound, ServiceUnavailable
from engine.money.ledger import CENT, SettlementLocked, money
from engine.money.reports import SETTLEMENT_STATUS_NAMES
from engine.runtime import spiff
from engine.trust import anchors, audit
from engine.trust.policy import authorize, may
from engine.usecases.tasks import Ctx, current_definition, run_and_step, work_calendar
from storage.artefact_store import StoreUnavailable
from storage.concurrency import Lost, compare_and_set
from storage.models import (
    Contract,
    ContractTask,
    Settlement,
    SettlementLine,
    SettlementNote,
    User,
    WorkItem,
    WorkloadEntry,
)

PROCESS_ID = "settlement"
_SETTLEMENTS = cast(Table, Settlement.__table__)
# The one task during which the PM may add or remove entries (before the first submission and after a return).
EDITABLE_TASK = "prepare_claim"
TASK_STATUS = {"audit_review": "audit", "first_review": "first_review", "final_approval": "final_approval"}
STATUS_NAMES = SETTLEMENT_STATUS_NAMES  # (defined with the documents that show them)

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
    # Seed 001: the settled total (the year's approved claims, this one included) may exceed the award by at
    # most 10 %; final approval beyond it is refused (409 over_award).
    award_limit: Decimal | None = None
    exceeds_award_limit: bool | None = None
    settled_total: Decimal | None = None
    # The clocks: the first submission against due_at, a revision against revision_due_at (15 working days).
    submission_late: bool | None = None
    revision_due_at: datetime | None = None
    revision_late: bool = False
    # Deductions recorded on the claim from elsewhere: late monthly reports of months this stage covers.
    other_deductions: Decimal = Decimal("0.00")
    other_detail: list[dict[str, Any]] | None = None
    grade: str | None = None


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
    values.update(updated_at=ctx.now)
    try:
        compare_and_set(ctx.session, _SETTLEMENTS, settlement.id, expected, values,
                        also=_SETTLEMENTS.c.status != "approved")
    except Lost as lost:
        if lost.busy:
            raise Conflict("the settlement changed while you were working; reload and try again",
                           code="version_conflict") from lost
        status = ctx.session.execute(select(Settlement.status).where(Settlement.id == settlement.id)).scalar()
        if status == "approved":
            raise SettlementLocked(f"settlement {settlement.id} was approved meanwhile and can no longer change",
                                   settlement_id=settlement.id, attempted="settlement.change") from lost
        raise Conflict("the settlement changed while you were working; reload and try again",
                       code="version_conflict") from lost
    values["version"] = expected + 1
    for key, value in values.items():
        set_committed_value(settlement, key, value)


# ---------------------------------------------------------------- gathering entries

def _period_bounds(start: date, end: date) -> tuple[datetime, datetime]:
    return datetime.combine(start, time(0), TZ), datetime.combine(end + timedelta(days=1), time(0), TZ)


def unsettled_entries(contract_id: int, start: date | None = None, end: date | None = None, *,
                      in_period_work: bool = False) -> Any:
    """Entries of live (not cancelled) items that no settlement claims yet, optionally within a period;
    `in_period_work` leaves out work flagged out_of_period at registration (a stage claim never gathers it)."""
    query = (select(WorkloadEntry.id)
             .join(WorkItem, WorkItem.id == WorkloadEntry.item_id)
             .where(WorkloadEntry.contract_id == contract_id, WorkItem.status != "cancelled",
                    ~exists().where(SettlementLine.entry_id == WorkloadEntry.id)))
    if in_period_work:
        query = query.where(WorkItem.out_of_period.is_(False))
    if start is not None and end is not None:
        lo, hi = _period_bounds(start, end)
        query = query.where(WorkloadEntry.tallied_at >= lo, WorkloadEntry.tallied_at < hi)
    return query.order_by(WorkloadEntry.id)


def _claim(ctx: Ctx, settlement: Settlement, entry_ids: list[int], reason: str | None,
           carried: set[int] | None = None) -> None:
    if not entry_ids:
        return
    rows = [{"settlement_id": settlement.id, "entry_id": eid, "added_at": ctx.now,
             "added_by_id": ctx.user.id if ctx.user else None, "added_reason": reason,
             "carried": eid in (carried or set())} for eid in entry_ids]
    try:
        with ctx.session.begin_nested():
            ctx.session.execute(insert(SettlementLine), rows)
    except IntegrityError as exc:
        # Two settlements gathering at once: the unique entry_id lets only one of them claim an entry.
        raise Conflict("an entry is already claimed by another settlement", code="entry_already_claimed") from exc


# ---------------------------------------------------------------- use cases

def _stage_for(ctx: Ctx, contract: Contract, stage_code: str | None, period_start: date | None,
               period_end: date | None) -> tuple[schedule.Stage | None, date, date]:
    """The stage (and period) a claim is opened for: from the contract's schedule, or an ad-hoc period on a
    contract that declares none."""
    settings = contract.settings or {}
    all_stages = schedule.stages(settings, contract.period_start, contract.period_end)
    if not all_stages:
        if stage_code is not None:
            raise Invalid(f"contract {contract.code} declares no settlement schedule; open it for a period",
                          code="no_schedule")
        if period_start is None or period_end is None:
            raise Invalid("give the period (period_start, period_end)", code="invalid_period")
        if period_end < period_start:
            raise Invalid("the period ends before it starts", code="invalid_period")
        return None, period_start, period_end
    if stage_code is None:
        raise Invalid(f"contract {contract.code} settles by stage: give one of {[s.code for s in all_stages]}",
                      code="stage_required", stages=[s.code for s in all_stages])
    stage = schedule.stage_named(all_stages, stage_code)
    if (period_start is not None and period_start != stage.start) or (
            period_end is not None and period_end != stage.end):
        raise Invalid(f"stage {stage.code} runs {stage.start}–{stage.end}; its period comes from the schedule",
                      code="invalid_period", stage_start=stage.start.isoformat(), stage_end=stage.end.isoformat())
    today = ctx.now.astimezone(TZ).date()
    if today < stage.start:
        raise Conflict(f"stage {stage.code} begins on {stage.start}; a claim opens once its stage has begun",
                       code="stage_not_begun", stage_start=stage.start.isoformat())
    return stage, stage.start, stage.end


def _refuse_second_claim(ctx: Ctx, contract: Contract, stage: schedule.Stage | None) -> None:
    """One claim per stage of the schedule (the schedule itself never overlaps: checked when it is loaded).
    Ad-hoc periods (contracts without a schedule) keep the old rule: an entry is claimed at most once."""
    if stage is None:
        return
    clash = ctx.session.execute(select(Settlement.id, Settlement.label).where(
        Settlement.contract_id == contract.id, Settlement.stage == stage.code).limit(1)).first()
    if clash is not None:
        raise Conflict(f"stage {stage.code} already has settlement {clash[0]} ({clash[1]}); stage periods never "
                       "overlap", code="stage_already_open", settlement_id=clash[0])


def open_settlement(ctx: Ctx, contract_code: str, period_start: date | None = None, period_end: date | None = None,
                    label: str | None = None, stage: str | None = None) -> Settlement:
    """PM opens a settlement for a stage of the contract's schedule (or an ad-hoc period where it declares
    none): the process starts and every unsettled entry tallied within the stage's period is gathered."""
    assert ctx.user is not None
    authorize(ctx.user, "settlement.prepare")
    contract = ctx.session.execute(select(Contract).where(Contract.code == contract_code)).scalar()
    if contract is None:
        raise Invalid(f"unknown contract {contract_code!r}", code="unknown_contract")
    the_stage, period_start, period_end = _stage_for(ctx, contract, stage, period_start, period_end)
    _refuse_second_claim(ctx, contract, the_stage)
    settings = contract.settings or {}
    due_at = None
    warnings: list[str] = []
    due_days = settings.get("settlement_due_working_days")
    if due_days is None and the_stage is not None:
        due_days = schedule.DEFAULT_DUE_DAYS
    if due_days is not None:
        due_at, warnings = settlement_deadline(work_calendar(ctx.session), period_end, int(due_days))
    definition = current_definition(ctx.session, PROCESS_ID)
    model = spiff.model_of(definition)
    default_label = the_stage.name if the_stage else f"{period_start.isoformat()}–{period_end.isoformat()}"
    settlement = Settlement(
        contract_id=contract.id, label=(label or default_label)[:100],
        period_start=period_start, period_end=period_end, status="draft", definition_id=definition.id,
        state="", version=1, round=1, due_at=due_at, created_by_id=ctx.user.id, created_at=ctx.now,
        updated_at=ctx.now, stage=the_stage.code if the_stage else None, revision_late=False)
    settlement.contract = contract
    settlement.definition = definition
    ctx.session.add(settlement)
    try:
        with ctx.session.begin_nested():
            ctx.session.flush()
    except IntegrityError as exc:  # a second claim for the stage raced this one (unique index on PostgreSQL)
        raise Conflict("this stage already has a settlement", code="stage_already_open") from exc
    workflow = spiff.new_workflow(model, {"settlement_id": settlement.id, "contract": contract.code})
    task = _ready_task(workflow)
    settlement.state = spiff.dumps(workflow, model)
    settlement.current_task = task.task_spec.name if task else None
    settlement.current_lane = spiff.task_lane(task) if task else None
    ids: list[int] = []
    if the_stage is None or not the_stage.final:
        # Never gathered: work outside the service period where the contract refuses it (an ad-hoc period may
        # reach beyond the service period), nor flagged work into a stage (the final claim or a carry takes it).
        refuse = out_of_period_mode(settings) == "refuse"
        lo, hi = period_start, period_end
        if refuse and contract.period_start is not None:
            lo = max(lo, contract.period_start)
        if refuse and contract.period_end is not None:
            hi = min(hi, contract.period_end)
        if lo <= hi:
            ids = list(ctx.session.scalars(unsettled_entries(contract.id, lo, hi,
                                                             in_period_work=the_stage is not None or refuse)))
    _claim(ctx, settlement, ids, None)
    # System notes go to the buyer's documents (the trail sheet): written in Chinese.
    _note(ctx, settlement, "opened", f"归集 {len(ids)} 条分录" + (f"；{'；'.join(warnings)}" if warnings else ""))
    ctx.session.flush()
    audit.record(ctx.session, ctx.actor, "settlement.opened", target_type="settlement", target_id=settlement.id,
                 contract=contract.code, stage=settlement.stage,
                 period=[period_start.isoformat(), period_end.isoformat()], entries=len(ids), due_at=due_at)
    return settlement


def settlement_stage(settlement: Settlement) -> schedule.Stage | None:
    if settlement.stage is None:
        return None
    c = settlement.contract
    return schedule.stage_named(schedule.stages(c.settings or {}, c.period_start, c.period_end), settlement.stage)


def _ready_task(workflow: Any) -> Any:
    ready = spiff.ready_human_tasks(workflow)
    return ready[0] if ready else None


def _advance(ctx: Ctx, settlement: Settlement, task_name: str, data: dict[str, Any], attempted: str) -> None:
    """Complete the settlement's ready task `task_name` as the current user, then CAS-save the new state."""
    assert ctx.user is not None
    guard_unlocked(settlement, attempted)
    workflow, model = spiff.load_workflow(settlement)
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
    if nxt is not None:
        _notify_step(ctx, settlement, spiff.task_lane(nxt), spiff.task_title(nxt))


def _notify_step(ctx: Ctx, settlement: Settlement, lane: str | None, title: str) -> None:
    """A settlement step now waits for a role: each of its members is told."""
    if not lane:
        return
    from engine.trust.notify import Event, notify, role_members

    notify(ctx.session, Event("settlement", "settlement.step_waiting",
                              {"label": settlement.label, "step": title,
                               "status": STATUS_NAMES.get(settlement.status, settlement.status)},
                              settlement_id=settlement.id, role=lane),
           role_members(ctx.session, lane), actor=ctx.actor, now=ctx.now,
           exclude=ctx.user.id if ctx.user is not None else None)


def _drop_cancelled(ctx: Ctx, settlement: Settlement) -> int:
    """Cancelled items are never billable: lines whose item was cancelled since leave the claim, with a note."""
    rows = ctx.session.execute(
        select(SettlementLine).join(WorkloadEntry, WorkloadEntry.id == SettlementLine.entry_id)
        .join(WorkItem, WorkItem.id == WorkloadEntry.item_id)
        .where(SettlementLine.settlement_id == settlement.id, WorkItem.status == "cancelled")).scalars().all()
    for line in rows:
        _note(ctx, settlement, "removed", "事项已取消，移出申报", line.entry_id)
        ctx.session.delete(line)
    ctx.session.flush()
    return len(rows)


def submit(ctx: Ctx, settlement: Settlement, note: str | None = None) -> Settlement:
    """PM submits (or resubmits) the claim to the third-party auditor; the first submission fixes lateness."""
    guard_unlocked(settlement, "settlement.submit")
    _drop_cancelled(ctx, settlement)
    first = settlement.first_submitted_at is None
    revision_due = settlement.revision_due_at
    revision_late = not first and revision_due is not None and ctx.now > revision_due
    _advance(ctx, settlement, "prepare_claim", {}, "settlement.submit")
    if first:
        settlement.first_submitted_at = ctx.now
    if revision_late and revision_due is not None:
        # Seed 001 §十(三) 3)/4): revisions within 15 working days of the comments, else the same 3 %.
        settlement.revision_late = True
        _note(ctx, settlement, "revision_late",
              f"修改稿逾期提交（应于 {revision_due.astimezone(TZ):%Y-%m-%d %H:%M} 前）")
    settlement.revision_due_at = None
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
    if decision == "return":
        _start_revision_clock(ctx, settlement)
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


def tally_day(entry: WorkloadEntry) -> date:
    return entry.tallied_at.astimezone(TZ).date()


def outside_service_period(contract: Contract, day: date) -> bool:
    return ((contract.period_start is not None and day < contract.period_start)
            or (contract.period_end is not None and day > contract.period_end))


def entry_out_of_period(contract: Contract, entry: WorkloadEntry) -> bool:
    """An entry outside the contract's service period (the one `out_of_period` rule): tallied outside it, or of
    work registered outside it (the item's flag)."""
    return bool(entry.item.out_of_period) or outside_service_period(contract, tally_day(entry))


def _stage_check(settlement: Settlement, entries: list[WorkloadEntry], carry: bool) -> set[int]:
    """An entry belongs to the stage whose period holds its tally date; an earlier one may be carried into a
    later stage explicitly (with the reason), a later one never. Entries outside the contract's service period
    are refused where the contract says `out_of_period = "refuse"`; flagged ones (the default) belong to no
    stage: the final claim takes them, any other stage only when carried. Returns the carried entry ids."""
    stage = settlement_stage(settlement)
    contract = settlement.contract
    outside = [e.id for e in entries if entry_out_of_period(contract, e)]
    if outside and out_of_period_mode(contract.settings) == "refuse":
        raise Invalid(f"entries {outside} are outside the contract's service period "
                      f"({contract.period_start}–{contract.period_end})", code="out_of_period", entries=outside)
    if stage is None:
        return set()
    flagged = set(outside)
    if flagged and not stage.final and not carry:
        raise Invalid(f"entries {sorted(flagged)} are outside the contract's service period (flagged): claim them "
                      f"in the final stage, or carry them into stage {stage.code} explicitly (carry: true, with the "
                      "reason)", code="entry_outside_stage", entries=sorted(flagged))
    later = [e.id for e in entries
             if e.id not in flagged and tally_day(e) > settlement.period_end and not stage.final]
    if later:
        raise Invalid(f"entries {later} were tallied after stage {stage.code} ends ({settlement.period_end}); "
                      "they belong to a later stage", code="entry_outside_stage", entries=later)
    earlier = [e.id for e in entries
               if e.id not in flagged and (stage.final or tally_day(e) < settlement.period_start)]
    if earlier and not carry:
        raise Invalid(f"entries {earlier} belong to an earlier stage; carry them into stage {stage.code} "
                      "explicitly (carry: true, with the reason)", code="entry_outside_stage", entries=earlier)
    return set(earlier) | (set() if stage.final else flagged)


def add_lines(ctx: Ctx, settlement: Settlement, entry_ids: list[int], reason: str, carry: bool = False) -> int:
    """PM adds unsettled entries to the claim, with a reason; an entry of an earlier stage only when carried."""
    guard_unlocked(settlement, "settlement.add_lines", entries=entry_ids)
    _require_editable(ctx, settlement)
    if not (reason or "").strip():
        raise Invalid("adding entries needs a reason", code="reason_required")
    entries = _entries_of_contract(ctx, settlement, entry_ids)
    cancelled = [e.id for e in entries if e.item.status == "cancelled"]
    if cancelled:
        raise Invalid(f"entries {cancelled} are of cancelled items and never billable", code="item_cancelled",
                      entries=cancelled)
    carried = _stage_check(settlement, entries, carry)
    _cas(ctx, settlement)
    _claim(ctx, settlement, [e.id for e in entries], reason.strip(), carried)
    for e in entries:
        _note(ctx, settlement, "carried" if e.id in carried else "added", reason.strip(), e.id)
    ctx.session.flush()
    audit.record(ctx.session, ctx.actor, "settlement.lines_added", target_type="settlement",
                 target_id=settlement.id, entries=[e.id for e in entries], reason=reason.strip(),
                 carried=sorted(carried))
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
    if decision == "return":
        _start_revision_clock(ctx, settlement)
    if score is not None:
        settlement.assessment_score = score
        if schedule.grade_for(score) == schedule.FAIL_GRADE:
            open_rectification(ctx, settlement, score)
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
        raise Forbidden("the first reviewer (初审) cannot also give final approval (审定)",
                        code="separation_of_duties")
    bands = bands_for(settlement.contract.settings or {})
    if decision == "approve" and bands is not None and settlement.assessment_score is None:
        raise Invalid("this contract deducts by assessment score; record the score at first review first",
                      code="assessment_score_required")
    if decision == "approve":
        _drop_cancelled(ctx, settlement)
    round_ = settlement.round
    fig = figures(ctx.session, settlement, ctx.now)
    if decision == "approve" and fig.exceeds_award_limit:
        raise Conflict(f"approving would bring the settled total to {fig.settled_total}, beyond the award + 10 % "
                       f"({fig.award_limit})", code="over_award", settled_total=str(fig.settled_total),
                       award=str(money(Decimal(settlement.contract.award_amount or 0))),
                       award_limit=str(fig.award_limit),
                       this_claim=str(fig.net))
    anchor = _approval_anchor(ctx, settlement, fig) if decision == "approve" else None
    anchored: dict[str, Any] = {} if anchor is None else {"anchor": anchor}
    _advance(ctx, settlement, "final_approval", {"decision": decision}, f"settlement.final_{decision}")
    if decision == "approve":
        _freeze(ctx, settlement, fig, anchor)
    else:
        _start_revision_clock(ctx, settlement)
    ctx.session.add(SettlementNote(settlement_id=settlement.id, round=round_, kind=f"final_{decision}",
                                   text=text, user_id=ctx.user.id, at=ctx.now))
    audit.record(ctx.session, ctx.actor, f"settlement.final_{decision}", target_type="settlement",
                 target_id=settlement.id, round=round_, comment=text, gross=str(fig.gross),
                 penalty=str(fig.penalty), deduction=str(fig.deduction), net=str(fig.net), **anchored)
    if decision == "approve" and ctx.store is not None:
        # The approval's own events are written at commit; anchor them as soon as they exist.
        anchors.anchor_after_commit(ctx.session, ctx.store, "settlement_approved", settlement_id=settlement.id)
    return settlement


def _start_revision_clock(ctx: Ctx, settlement: Settlement) -> None:
    """A returned claim must come back within the contract's revision days (seed 001: 15 working days)."""
    settings = settlement.contract.settings or {}
    days = settings.get("revision_due_working_days")
    if days is None and settlement.stage is None and settings.get("settlement_due_working_days") is None:
        return
    due, _warnings = schedule.working_deadline(work_calendar(ctx.session), ctx.now,
                                               int(days if days is not None else schedule.DEFAULT_REVISION_DAYS))
    settlement.revision_due_at = due


def open_rectification(ctx: Ctx, settlement: Settlement, score: Decimal) -> ContractTask:
    """不合格 (< 60): the supplier rectifies within 20 working days, then the buyer re-evaluates (seed 001)."""
    key = f"settlement:{settlement.id}"
    task = ctx.session.execute(select(ContractTask).where(
        ContractTask.contract_id == settlement.contract_id, ContractTask.kind == "rectification",
        ContractTask.key == key)).scalar()
    if task is not None:
        return task
    settings = settlement.contract.settings or {}
    days = int(settings.get("rectification_working_days", schedule.DEFAULT_RECTIFICATION_DAYS))
    due, _warnings = schedule.working_deadline(work_calendar(ctx.session), ctx.now, days)
    task = ContractTask(contract_id=settlement.contract_id, kind="rectification", key=key,
                        title=f"整改：{settlement.label}（考评 {score} 分，不合格）", settlement_id=settlement.id,
                        period_start=settlement.period_start, period_end=settlement.period_end, status="open",
                        due_at=due, late=False, data={"score": str(score)}, created_at=ctx.now, updated_at=ctx.now)
    ctx.session.add(task)
    ctx.session.flush()
    audit.record(ctx.session, ctx.actor, "settlement.rectification_opened", target_type="settlement",
                 target_id=settlement.id, score=str(score), due_at=due)
    return task


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
                  deduction_amount=fig.deduction, net_amount=fig.net, anchor=anchor,
                  other_deductions=fig.other_deductions)
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


def grosses_of(session: Session, settlement_ids: list[int]) -> dict[int, tuple[Decimal, int]]:
    """(gross, entries) of each settlement's lines whose items are not cancelled, in one query."""
    out = {sid: (money(Decimal(0)), 0) for sid in settlement_ids}
    rows = session.execute(
        select(SettlementLine.settlement_id, func.coalesce(func.sum(WorkloadEntry.amount), 0),
               func.count(WorkloadEntry.id))
        .join(WorkloadEntry, SettlementLine.entry_id == WorkloadEntry.id)
        .join(WorkItem, WorkItem.id == WorkloadEntry.item_id)
        .where(SettlementLine.settlement_id.in_(settlement_ids), WorkItem.status != "cancelled")
        .group_by(SettlementLine.settlement_id))
    for sid, gross, count in rows:
        out[sid] = (money(Decimal(gross)), int(count))
    return out


@dataclass(frozen=True)
class _Facts:
    """What figures read beyond the claims' own rows, loaded once for a whole list (or one claim): a claim
    then costs no statement of its own, however many a list shows."""

    grosses: dict[int, tuple[Decimal, int]]
    # contract id -> its approved claims' net total, for contracts with an award (the award check)
    approved_net: dict[int, Decimal]
    # contract id -> its late monthly operations reports, by period (stage claims deduct them)
    late_reports: dict[int, list[ContractTask]]
    # (contract id, stage) -> the approved claim's gross (a stage building on the staged ones takes its base)
    staged_gross: dict[tuple[int, str], Decimal]


def _facts(session: Session, settlements: list[Settlement]) -> _Facts:
    grosses = grosses_of(session, [s.id for s in settlements])
    awarded = {s.contract_id for s in settlements if s.contract.award_amount is not None}
    approved_net: dict[int, Decimal] = {}
    if awarded:
        approved_net = {cid: Decimal(total or 0) for cid, total in session.execute(
            select(Settlement.contract_id, func.coalesce(func.sum(Settlement.net_amount), 0))
            .where(Settlement.contract_id.in_(awarded), Settlement.status == "approved")
            .group_by(Settlement.contract_id))}
    staged = {s.contract_id for s in settlements if s.stage is not None}
    late_reports: dict[int, list[ContractTask]] = {}
    if staged:
        for task in session.scalars(select(ContractTask).where(
                ContractTask.contract_id.in_(staged), ContractTask.kind == "monthly_report",
                ContractTask.late.is_(True)).order_by(ContractTask.period_start, ContractTask.id)):
            late_reports.setdefault(task.contract_id, []).append(task)
    building = {s.contract_id for s in settlements if not _frozen(s)
                and (stage := settlement_stage(s)) is not None and stage.builds_on_staged}
    staged_gross: dict[tuple[int, str], Decimal] = {}
    if building:
        staged_gross = {(cid, str(code)): Decimal(total or 0) for cid, code, total in session.execute(
            select(Settlement.contract_id, Settlement.stage, func.coalesce(func.sum(Settlement.gross_amount), 0))
            .where(Settlement.contract_id.in_(building), Settlement.status == "approved",
                   Settlement.stage.is_not(None))
            .group_by(Settlement.contract_id, Settlement.stage))}
    return _Facts(grosses, approved_net, late_reports, staged_gross)


def _frozen(settlement: Settlement) -> bool:
    """An approved claim keeps the figures it was approved with."""
    return settlement.status == "approved" and settlement.gross_amount is not None


def figures(session: Session, settlement: Settlement, now: datetime) -> Figures:
    """Live figures while the claim moves; the frozen ones once approved."""
    return figures_of(session, [settlement], now)[settlement.id]


def figures_of(session: Session, settlements: list[Settlement], now: datetime) -> dict[int, Figures]:
    """`figures` of each settlement of a list or page (the REST list, the web list, one claim's page): what they
    read beyond the rows is loaded once for all of them (`_Facts`), so 50 claims cost the statements 5 do."""
    if not settlements:
        return {}
    facts = _facts(session, settlements)
    out = {}
    for s in settlements:
        fig = _award_check(s, _figures(s, now, facts), facts)
        fig.grade = schedule.grade_for(fig.score)
        out[s.id] = fig
    return out


def _award_check(settlement: Settlement, fig: Figures, facts: _Facts) -> Figures:
    award = settlement.contract.award_amount
    if award is None:
        return fig
    # The contract's other approved claims: its approved total less this claim's own, when it is one of them.
    own = (settlement.net_amount or Decimal(0)) if settlement.status == "approved" else Decimal(0)
    before = facts.approved_net.get(settlement.contract_id, Decimal(0)) - own
    fig.award_limit = money(Decimal(award) * Decimal("1.10"))
    fig.settled_total = money(before + fig.net)
    fig.exceeds_award_limit = fig.settled_total > fig.award_limit
    return fig


def month_deductions(settlement: Settlement, facts: _Facts) -> list[dict[str, Any]]:
    """Late monthly operations reports of months this claim covers: 3 % of the month's tallied fee each."""
    if settlement.stage is None:
        return []
    out = []
    for t in facts.late_reports.get(settlement.contract_id, []):
        if t.period_start is None or t.period_end is None or not (
                t.period_start >= settlement.period_start and t.period_end <= settlement.period_end):
            continue
        amount = Decimal(str((t.data or {}).get("deduction", "0")))
        out.append({"month": t.key, "fee": (t.data or {}).get("month_fee"), "rate": (t.data or {}).get("rate"),
                    "amount": money(amount), "task_id": t.id})
    return out


def penalty_base(settlement: Settlement, gross: Decimal, facts: _Facts) -> Decimal:
    """What a late claim's 3 % is taken from: the claim's own fee, except for a stage that builds on the staged
    ones (the annual settlement), where the seed takes it from the year's fee (当年度服务周期年度结算服务费用的3%):
    the approved staged claims' gross plus this claim's."""
    stage = settlement_stage(settlement)
    if stage is None or not stage.builds_on_staged:
        return gross
    c = settlement.contract
    earlier = [s.code for s in schedule.stages(c.settings or {}, c.period_start, c.period_end)
               if s.position < stage.position and not s.final]
    return gross + sum((facts.staged_gross.get((settlement.contract_id, code), Decimal(0)) for code in earlier),
                       Decimal(0))


def _figures(settlement: Settlement, now: datetime, facts: _Facts) -> Figures:
    gross, count = facts.grosses.get(settlement.id, (money(Decimal(0)), 0))
    sub_late = is_late(settlement.first_submitted_at or now, settlement.due_at) if settlement.due_at else None
    if _frozen(settlement):
        return Figures(gross=settlement.gross_amount or Decimal("0"), entries=count, due_at=settlement.due_at,
                       late=bool(sub_late) or settlement.revision_late,
                       penalty_rate=settlement.penalty_rate or Decimal("0"),
                       penalty=settlement.penalty_amount or Decimal("0"), score=settlement.assessment_score,
                       deduction_rate=settlement.deduction_rate, deduction=settlement.deduction_amount or Decimal(0),
                       net=settlement.net_amount or Decimal("0"), frozen=True, submission_late=sub_late,
                       revision_late=settlement.revision_late,
                       other_deductions=settlement.other_deductions or Decimal("0.00"),
                       other_detail=month_deductions(settlement, facts))
    settings = settlement.contract.settings or {}
    late = (bool(sub_late) or settlement.revision_late) if (settlement.due_at is not None
                                                             or settlement.revision_late) else None
    rate = Decimal(str(settings.get("late_penalty_rate", 0))) if late else Decimal("0")
    penalty = money(penalty_base(settlement, gross, facts) * rate)
    bands = bands_for(settings)
    score = settlement.assessment_score
    d_rate = deduction_rate(score, bands) if bands is not None and score is not None else None
    deduction = money(gross * d_rate) if d_rate is not None else Decimal("0.00")
    detail = month_deductions(settlement, facts)
    other = money(sum((d["amount"] for d in detail), Decimal("0")))
    return Figures(gross=gross, entries=count, due_at=settlement.due_at, late=late, penalty_rate=rate,
                   penalty=penalty, score=score, deduction_rate=d_rate, deduction=deduction,
                   net=money(gross - penalty - deduction - other), frozen=False, submission_late=sub_late,
                   revision_due_at=settlement.revision_due_at, revision_late=settlement.revision_late,
                   other_deductions=other, other_detail=detail)


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


# ---------------------------------------------------------------- stages, cumulative amounts and clocks

def approved_by_stage(session: Session, contract: Contract) -> dict[str, Settlement]:
    """The contract's approved stage claims, by stage code."""
    rows = session.scalars(select(Settlement).where(Settlement.contract_id == contract.id,
                                                    Settlement.status == "approved", Settlement.stage.is_not(None)))
    return {s.stage: s for s in rows if s.stage}


def stage_summary(session: Session, settlement: Settlement) -> list[dict[str, Any]]:
    """Every stage of the contract's schedule: its period, its claim, the claimed (gross: frozen once approved,
    the lines' live sum before), the approved amount and the cumulative approved amount through it (what
    payments use); the claim's own stage is marked. The claim JSON and the claim sheet both list these."""
    contract = settlement.contract
    all_stages = schedule.stages(contract.settings or {}, contract.period_start, contract.period_end)
    claims = {s.stage: s for s in session.scalars(select(Settlement).where(
        Settlement.contract_id == contract.id, Settlement.stage.is_not(None)))}
    live = grosses_of(session, [c.id for c in claims.values()
                                if not (c.status == "approved" and c.gross_amount is not None)])
    out: list[dict[str, Any]] = []
    cumulative = Decimal("0.00")
    for stage in all_stages:
        claim = claims.get(stage.code)
        claimed: Decimal | None = None
        if claim is not None:
            claimed = live[claim.id][0] if claim.id in live else claim.gross_amount
        approved = claim.net_amount if claim is not None and claim.status == "approved" else None
        if approved is not None:
            cumulative += approved
        out.append({"stage": stage.code, "name": stage.name, "period_start": stage.start.isoformat(),
                    "period_end": stage.end.isoformat(), "final": stage.final,
                    "settlement_id": claim.id if claim else None, "status": claim.status if claim else None,
                    "claimed": None if claimed is None else float(claimed),
                    "approved": None if approved is None else float(approved),
                    "cumulative_approved": float(cumulative), "this": stage.code == settlement.stage})
    return out


def rectifications(session: Session, settlement: Settlement) -> list[ContractTask]:
    return list(session.scalars(select(ContractTask).where(
        ContractTask.settlement_id == settlement.id, ContractTask.kind == "rectification")
        .order_by(ContractTask.id)))


def clock_state(due: datetime | None, done_at: datetime | None, now: datetime) -> str | None:
    """on_time / late (done), open / overdue (not yet done), None without a clock."""
    if due is None:
        return None
    if done_at is not None:
        return "late" if done_at > due else "on_time"
    return "overdue" if now > due else "open"


def deadlines(settlement: Settlement, fig: Figures, now: datetime) -> list[dict[str, Any]]:
    """The claim's clocks: the stage materials (20 working days after the stage ends) and, while the claim is
    back with the PM, the revision (15 working days after the comments)."""
    out: list[dict[str, Any]] = []
    if settlement.due_at is not None:
        out.append({"clock": "materials", "name": "结算材料提交", "due_at": settlement.due_at,
                    "state": clock_state(settlement.due_at, settlement.first_submitted_at, now)})
    if settlement.revision_due_at is not None:
        out.append({"clock": "revision", "name": "修改完善", "due_at": settlement.revision_due_at,
                    "state": clock_state(settlement.revision_due_at, None, now)})
    elif settlement.revision_late:
        out.append({"clock": "revision", "name": "修改完善", "due_at": None, "state": "late"})
    return out

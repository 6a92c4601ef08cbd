"""Work-item lifecycle use cases: start an item's process, claim and complete its human tasks."""
from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any, cast

from SpiffWorkflow.util.task import TaskState
from sqlalchemy import ColumnElement, Table, insert, or_, select, text, update
from sqlalchemy.orm import Session, joinedload, lazyload
from sqlalchemy.orm.attributes import set_committed_value

import bpmn
import forms
from engine import caching
from engine.contract.calendar import TZ as CHINA
from engine.contract.calendar import WorkCalendar
from engine.contract.catalog import (
    DELIVERABLE_PROCESSES,
    METERED_PROCESSES,
    item_kinds,
    out_of_period_mode,
    required_kinds,
)
from engine.contract.registration import check_attributes
from engine.errors import (
    PROGRAMMING_ERRORS,
    Conflict,
    DomainError,
    Forbidden,
    FormInvalid,
    GateUnmet,
    Invalid,
    ProcessFailed,
)
from engine.evidence.artefacts import evidence_scope, lock_evidence, submitted_evidence, verify_artefact
from engine.money.ledger import tally_item
from engine.runtime import budgets, spiff, timers
from engine.trust import audit
from engine.trust.access import authorize, load_task_for, require_act
from engine.trust.policy import ALL, DEFAULT_LANE, scope_of
from engine.usecases.drafts import discard_drafts
from storage.artefact_store import ArtefactStore, ObjectMissing, StoreUnavailable
from storage.concurrency import Lost, compare_and_set
from storage.models import (
    CHANNELS,
    DELIVERABLE_MODE,
    MODES,
    RECORD_MODE,
    Artefact,
    CalendarDay,
    CalendarYear,
    Contract,
    Department,
    GatePass,
    HumanTask,
    ProcessDefinition,
    ProcessInstance,
    ServiceLine,
    User,
    WorkItem,
)

_log = logging.getLogger("itemgate.workflow")
_INSTANCES = cast(Table, ProcessInstance.__table__)
_GATE_PASSES = cast(Table, GatePass.__table__)


@dataclass
class Ctx:
    """One use case's unit of work: the session (committed by the caller), the actor, the store."""

    session: Session
    user: User | None
    request_id: str | None = None
    store: ArtefactStore | None = None
    now: datetime = field(default_factory=lambda: datetime.now(UTC))
    # The human tasks this unit of work projected, in order: a caller answering with them need not query again.
    created_tasks: list[HumanTask] = field(default_factory=list)
    # The configured Chinese font for PDFs this unit of work keeps (a monthly report's submission); None: the
    # first one installed, or none.
    cjk_font: str | None = None

    @property
    def actor(self) -> audit.Actor:
        return audit.Actor.of(self.user, self.request_id)


# Forms whose completion writes more than the process's data: form key → hook(ctx, task, item, clean data),
# run inside complete_task's unit of work after the task is checked and before the process steps, so a refusal
# leaves everything as it was. The use case owning the form registers it (engine/usecases/monthly_report.py);
# a contract-level item's task with no hook registered is refused rather than completed without its effects.
CompletionHook = Callable[["Ctx", HumanTask, WorkItem, dict[str, Any]], None]
COMPLETION_HOOKS: dict[str, CompletionHook] = {}


# ---------------------------------------------------------------- process definitions

def current_definition(session: Session, process_id: str) -> ProcessDefinition:
    """The definition new items start on; the shipped model is deployed on first use."""
    query = (select(ProcessDefinition)
             .where(ProcessDefinition.process_id == process_id, ProcessDefinition.is_current.is_(True))
             .order_by(ProcessDefinition.id.desc()).limit(1))
    definition = session.execute(query).scalar()
    if definition is None and session.get_bind().dialect.name == "postgresql":
        # Several workers creating the first items at once would all deploy it (a unique-key 500, seen in
        # the load test): the first takes the lock and deploys, the others wait and then find it.
        session.execute(text("SELECT pg_advisory_xact_lock(hashtext(:k))"), {"k": f"deploy:{process_id}"})
        definition = session.execute(query).scalar()
    if definition is None:
        definition = deploy_definition(session, process_id, bpmn.read_model(process_id),
                                       f"{process_id}.bpmn", None)
    return definition


def deploy_definition(session: Session, process_id: str, xml: str, filename: str,
                      user: User | None) -> ProcessDefinition:
    model = spiff.parse_model(xml, process_id, filename)
    existing = session.execute(select(ProcessDefinition).where(ProcessDefinition.sha256 == model.sha256)).scalar()
    session.execute(update(ProcessDefinition).where(ProcessDefinition.process_id == process_id)
                    .values(is_current=False))
    if existing is not None:
        existing.is_current = True
        session.flush()
        return existing
    definition = ProcessDefinition(process_id=process_id, sha256=model.sha256, filename=filename,
                                   bpmn_xml=xml, deployed_by_id=user.id if user else None, is_current=True)
    session.add(definition)
    session.flush()
    return definition


# ---------------------------------------------------------------- calendar

# Per database URL: (fingerprint of the entered years, calendar). Threads of one process share it, so it is
# read and written under a lock (a calendar is immutable once built; only the mapping needs it).
_calendar_cache: dict[str, tuple[tuple[Any, ...], WorkCalendar]] = {}
_calendar_lock = threading.Lock()


def work_calendar(session: Session) -> WorkCalendar:
    """The working-day calendar with the admin-entered years. Built once per process and database, and
    rebuilt when the entered years change: every entry stamps its year's `entered_at`, so the entered years
    with their stamps (a handful of rows) tell whether the cached copy is current. The whole list, not an
    aggregate: a re-entered year whose stamp is older than another year's (clocks of two hosts differ) still
    changes it. In cold mode nothing is kept."""
    fingerprint = tuple((year, entered_at) for year, entered_at in session.execute(
        select(CalendarYear.year, CalendarYear.entered_at).order_by(CalendarYear.year)))
    key = str(session.get_bind().engine.url)
    with _calendar_lock:
        cached = _calendar_cache.get(key) if caching.enabled() else None
    if cached is not None and cached[0] == fingerprint:
        return cached[1]
    overrides = {day: is_workday for day, is_workday in session.execute(
        select(CalendarDay.day, CalendarDay.is_workday))}
    calendar = WorkCalendar(overrides=overrides, covered_years={year for year, _ in fingerprint})
    if caching.enabled():
        with _calendar_lock:
            _calendar_cache[key] = (fingerprint, calendar)
    return calendar


# ---------------------------------------------------------------- items

@dataclass
class NewItem:
    contract: str
    service_line: str
    name: str
    code: str
    department: str
    channels: list[str]
    mode: str
    difficulty: Decimal = Decimal("1.00")
    attributes: dict[str, Any] = field(default_factory=dict)
    # A metered line's record: how many units (calls, SMS, person-months…) in which period ("2026-11").
    units: Decimal | None = None
    period: str | None = None


def _resolve_new_item(session: Session, spec: NewItem
                      ) -> tuple[Contract, ServiceLine, Department, ProcessDefinition | None]:
    """The item's contract, service line and department, and the current definition of the line's process
    (None when none is deployed yet): one query when all are found; the lookups one by one only to say what
    is wrong."""
    errors: dict[str, list[str]] = {}
    found = session.execute(
        select(ServiceLine, Contract, Department, ProcessDefinition)
        .join(Contract, ServiceLine.contract_id == Contract.id)
        .join(Department, Department.code == spec.department)
        .outerjoin(ProcessDefinition, (ProcessDefinition.process_id == ServiceLine.process_id)
                   & ProcessDefinition.is_current.is_(True))
        .where(Contract.code == spec.contract, ServiceLine.code == spec.service_line)
        .order_by(ProcessDefinition.id.desc()).limit(1)).first()
    line, contract, department, definition = found if found is not None else (None, None, None, None)
    if found is None:
        pair = session.execute(select(ServiceLine, Contract).join(Contract, ServiceLine.contract_id == Contract.id)
                               .where(Contract.code == spec.contract, ServiceLine.code == spec.service_line)).first()
        contract, line = (pair[1], pair[0]) if pair else (None, None)
        if pair is None:
            contract = session.execute(select(Contract).where(Contract.code == spec.contract)).scalar()
            if contract is None:
                errors["contract"] = [f"unknown contract {spec.contract!r}"]
            else:
                errors["service_line"] = [f"contract {spec.contract} has no service line {spec.service_line!r}"]
        department = session.execute(select(Department).where(Department.code == spec.department)).scalar()
        if department is None:
            errors["department"] = [f"unknown department {spec.department!r}"]
    kind = line_kind(line) if line is not None else "countable"
    if kind == "countable" and spec.mode not in MODES:
        errors["mode"] = [f"must be one of {list(MODES)}"]
    if line is not None and not line.channels:
        if spec.channels:
            errors["channels"] = [f"service line {line.code} is priced without channels; give none"]
    elif not spec.channels or len(set(spec.channels)) != len(spec.channels):
        errors["channels"] = ["give one or more distinct channels"]
    elif any(c not in CHANNELS for c in spec.channels):
        errors["channels"] = [f"channels must be among {list(CHANNELS)}"]
    elif line is not None and any(c not in line.channels for c in spec.channels):
        errors["channels"] = [f"service line {line.code} is offered on {line.channels} only"]
    if kind == "metered":
        if spec.units is None or not spec.units.is_finite() or spec.units <= 0 or spec.units >= Decimal("1e14"):
            errors["units"] = ["a metered record needs its units (a number > 0)"]
        if spec.period is None:
            errors["period"] = ["a metered record needs its period, e.g. 2026-11"]
    elif spec.units is not None:
        errors["units"] = ["only a metered line's record carries units"]
    if spec.period is not None and period_bounds(spec.period) is None:
        errors["period"] = ["a period is a month like 2026-11"]
    if not (Decimal("0.1") <= spec.difficulty <= Decimal("5")):
        errors["difficulty"] = ["must be between 0.1 and 5"]
    if not spec.name.strip():
        errors["name"] = ["must not be empty"]
    if not spec.code.strip():
        errors["code"] = ["must not be empty"]
    if line is not None:
        errors.update(check_attributes(session, line, spec.department, spec.attributes))
    if errors:
        raise FormInvalid(errors, "The work item is not valid")
    assert contract is not None and line is not None and department is not None
    return contract, line, department, definition


def needs_difficulty_review(line: ServiceLine) -> bool:
    """Whether the contract asks the third party to confirm the line's difficulty coefficients: it declares
    the allowed levels for the line. A line without levels counts the PM's value alone."""
    return bool(line.difficulty_levels)


def line_kind(line: ServiceLine) -> str:
    """What a work item of this line is: a metered record, a contract-level deliverable, or countable work."""
    if line.metered or line.process_id in METERED_PROCESSES:
        return "metered"
    if line.process_id in DELIVERABLE_PROCESSES:
        return "deliverable"
    return "countable"


def period_bounds(period: str) -> tuple[date, date] | None:
    """The first and last day of a period written as a month (2026-11), or None if it is not one."""
    if not isinstance(period, str) or len(period) != 7 or period[4] != "-":
        return None
    try:
        first = date(int(period[:4]), int(period[5:]), 1)
    except ValueError:
        return None
    if not 2000 <= first.year <= 2100:
        return None
    nxt = date(first.year + (first.month == 12), first.month % 12 + 1, 1)
    return first, nxt - timedelta(days=1)


def _out_of_period(contract: Contract, spec: NewItem, now: datetime) -> bool:
    """Whether the item falls outside the contract's service period: a record by its period, other work by the
    day it is registered (China time)."""
    start, end = contract.period_start, contract.period_end
    if start is None and end is None:
        return False
    bounds = period_bounds(spec.period) if spec.period else None
    first, last = bounds if bounds else (local_day(now), local_day(now))
    return bool((start is not None and last < start) or (end is not None and first > end))


def tally_time(item: WorkItem, now: datetime) -> datetime:
    """When an item's work counts: now, or for a record of a period, a moment inside that period (its month
    in the counts is the period's, whenever the third party confirmed it)."""
    bounds = period_bounds(item.period) if item.period else None
    if bounds is None:
        return now
    first = datetime.combine(bounds[0], datetime.min.time(), CHINA)
    last = datetime.combine(bounds[1], datetime.max.time(), CHINA)
    return min(max(now, first), last).astimezone(UTC)


def local_day(at: datetime) -> date:
    return at.astimezone(CHINA).date()


def create_item(ctx: Ctx, spec: NewItem) -> WorkItem:
    """Register a work item and start its process at once (PM)."""
    assert ctx.user is not None
    authorize(ctx.user, "item.create")
    contract, line, department, definition = _resolve_new_item(ctx.session, spec)
    kind = line_kind(line)
    mode = {"metered": RECORD_MODE, "deliverable": DELIVERABLE_MODE}.get(kind, spec.mode)
    outside = _out_of_period(contract, spec, ctx.now)
    if outside and out_of_period_mode(contract.settings) == "refuse":
        what = f"period {spec.period}" if spec.period else f"today ({local_day(ctx.now).isoformat()})"
        raise Invalid(f"{what} is outside contract {contract.code}'s service period "
                      f"({contract.period_start} – {contract.period_end})", code="out_of_period")
    item = WorkItem(
        contract_id=contract.id, service_line_id=line.id, department_id=department.id, code=spec.code.strip(),
        name=spec.name.strip(), channels=list(spec.channels), mode=mode,
        difficulty=spec.difficulty.quantize(Decimal("0.01")) if kind == "countable" else Decimal("1.00"),
        attributes=dict(spec.attributes), status="active", created_by_id=ctx.user.id, created_at=ctx.now,
        units=spec.units, period=spec.period, out_of_period=outside,
    )
    item.contract, item.service_line, item.department = contract, line, department
    definition = definition or current_definition(ctx.session, line.process_id)
    start_data = {
        "mode": item.mode, "channels": list(item.channels), "service_line": line.code,
        "department": department.code, "attributes": dict(item.attributes),
        # The walkthrough step is taken exactly when the line's rules require evidence of it for this item.
        "needs_walkthrough": bool(required_kinds(line.gates, "walkthrough", mode=item.mode,
                                                 channels=list(item.channels), attributes=item.attributes or {})),
        # The third party confirms the difficulty (in parallel with the work, before the item counts) exactly
        # when the contract declares difficulty levels for the line (docs/CATALOG.md).
        "needs_difficulty_review": needs_difficulty_review(line),
    }
    start_data.update({k: v for k, v in item.attributes.items() if k in ("departments", "parts")})
    start_process(ctx, item, definition, start_data)
    extra: dict[str, Any] = {"units": str(item.units), "period": item.period} if item.units is not None else {}
    if outside:
        extra["out_of_period"] = True
    audit.record(ctx.session, ctx.actor, "item.created", target_type="item", target_id=item.id,
                 code=item.code, service_line=line.code, mode=item.mode, channels=item.channels,
                 difficulty=str(item.difficulty), definition=definition.sha256[:12], **extra)
    return item


def start_process(ctx: Ctx, item: WorkItem, definition: ProcessDefinition, start_data: dict[str, Any],
                  replay: list[dict[str, Any]] | None = None, return_comment: str | None = None) -> list[HumanTask]:
    """Insert a new `item` with its process started on `definition`. `replay` completes the first ready tasks
    with the data given, in order, before anything is projected (a record adopted in a later state: a monthly
    report already submitted or accepted), and `return_comment` goes on the tasks that are then open."""
    model = spiff.model_of(definition)
    # Deadline timers wait on this until a task's deadline arms them (sync_projection).
    workflow = start_workflow(model, {timers.DUE_VARIABLE: timers.NO_DEADLINE, **start_data})
    for data in replay or []:
        ready = spiff.ready_human_tasks(workflow)
        if not ready:
            raise ProcessFailed(f"{definition.process_id}: no open task is left to replay {data!r} on")
        run_and_step(workflow, ready[0], spiff.step_data(workflow, ready[0], data), "the process")
    instance = ProcessInstance(definition_id=definition.id, version=1, status="running")
    instance.definition = definition
    # The projection sets the item's stage and the instance's state (with its deadline timers armed), so the
    # item, its instance and its first tasks go in with one flush and no follow-up UPDATE.
    created = sync_projection(ctx, instance, item, workflow, return_comment=return_comment, new=True)
    ctx.session.add(item)
    ctx.session.flush()
    instance.item_id = item.id
    ctx.session.add(instance)
    ctx.session.add_all(created)
    ctx.session.flush()
    _notify_created(ctx, created, return_comment)
    return created


# ---------------------------------------------------------------- projection

def _department_codes(session: Session, tasks: list[Any]) -> dict[str, int]:
    """Department code → id for every department the new tasks name through their `department_var` (one query)."""
    codes = set()
    for task in tasks:
        var = spiff.task_properties(task).get("department_var")
        if var and task.data.get(var):
            codes.add(str(task.data[var]))
    if not codes:
        return {}
    return {code: dept_id for code, dept_id in session.execute(
        select(Department.code, Department.id).where(Department.code.in_(codes)))}


def _department_for(item: WorkItem, task: Any, props: dict[str, str], codes: dict[str, int]) -> int | None:
    var = props.get("department_var")
    code = task.data.get(var) if var else None
    return codes.get(str(code), item.department_id) if code else item.department_id


def sync_projection(ctx: Ctx, instance: ProcessInstance, item: WorkItem, workflow: Any,
                     return_comment: str | None, *, new: bool = False) -> list[HumanTask]:
    """Make human_task rows mirror the READY manual tasks, arm their deadline timers, and persist the
    instance state once: a compare-and-set UPDATE, or for a `new` instance (not yet inserted, no rows yet)
    its initial state. Returns the rows created."""
    session = ctx.session
    model = spiff.model_of(instance.definition)
    ready = {str(t.id): t for t in spiff.ready_human_tasks(workflow)}
    # The rows' item is the one given (found in the session by its key); joining it and its catalogue again
    # per completion is what the default eager loading would do.
    open_rows = [] if new else list(session.scalars(select(HumanTask).where(
        HumanTask.instance_id == instance.id, HumanTask.status == "ready")
        .options(lazyload(HumanTask.item), lazyload(HumanTask.assignee))))
    for row in open_rows:
        if row.spiff_task_id not in ready:
            row.status = "cancelled"
            row.completed_at = ctx.now
    known = {row.spiff_task_id for row in open_rows}
    created: list[HumanTask] = []
    calendar = None
    due_overrides = (item.contract.settings or {}).get("due_days", {})
    codes = _department_codes(session, [t for tid, t in ready.items() if tid not in known])
    for tid, task in ready.items():
        if tid in known:
            continue
        props = spiff.task_properties(task)
        lane = spiff.task_lane(task) or DEFAULT_LANE
        due_at = warning = None
        due_days = due_overrides.get(task.task_spec.name, props.get("due_days"))
        due_var = props.get("due_at_var")
        if due_var and task.data.get(due_var):
            # Due at a moment the process carries (a monthly report: the 10th working day after its month, a
            # revision 10 working days after the submission), not a count of days from now.
            due_at = datetime.fromisoformat(str(task.data[due_var]))
        elif due_days:
            calendar = calendar or work_calendar(session)
            deadline = calendar.add_working_days(ctx.now, int(due_days))
            due_at = deadline.due_at
            warning = "; ".join(deadline.warnings) or None
        if due_at is not None:
            try:
                timers.arm_deadline_timers(task, due_at)
            except Exception as exc:  # the model's timer expression is re-evaluated here
                raise _model_failure(exc, "the deadline timer") from exc
        row = HumanTask(
            item=item, spiff_task_id=tid, spec_name=task.task_spec.name,
            title=spiff.task_title(task), lane=lane, role=lane,
            department_id=_department_for(item, task, props, codes),
            per_department=bool(props.get("department_var")), form=props.get("form", "design"),
            gate=props.get("gate"), stage=props.get("stage"), review_of=props.get("review_of"),
            status="ready", due_at=due_at, due_warning=warning, return_comment=return_comment,
            created_at=ctx.now,
        )
        row.instance = instance
        if not new:
            _back_to_previous_doer(ctx, row)
        created.append(row)
    ctx.created_tasks.extend(created)
    # The third party's difficulty confirmation may run beside the work: the item's stage is the work's, and
    # stays where the work left it while only the confirmation is left.
    open_steps = [spiff.task_properties(t) for t in ready.values()]
    work = [p for p in open_steps if p.get("form") != "difficulty_review"]
    stages = [p.get("stage") for p in (open_steps if new and not work else work)]
    if workflow.is_completed():
        item.stage = "done"
    elif stages:
        item.stage = next((s for s in stages if s), item.stage)
    if new:
        instance.state = serialize_state(workflow, model)
        instance.next_timer_at = next_timer_at(workflow)
        instance.status = "completed" if workflow.is_completed() else "running"
    else:
        save_instance(ctx, instance, workflow, model)
        session.add_all(created)
        session.flush()
        _notify_created(ctx, created, return_comment)
    return created


def _notify_created(ctx: Ctx, created: list[HumanTask], return_comment: str | None) -> None:
    """New work is told to its queue, a return to whoever's work came back (engine/trust/notify.py). A new item's
    first tasks are told by create_item once they have ids."""
    if not created:
        return
    from engine.trust.notify import tasks_created

    tasks_created(ctx.session, created, return_comment=return_comment, actor=ctx.actor, now=ctx.now,
                  exclude=ctx.user.id if ctx.user is not None else None)


def _back_to_previous_doer(ctx: Ctx, row: HumanTask) -> None:
    """A step opened again (returned, or looped back) goes to the person who did it last, already claimed, with
    the reason it came back; to the group queue when that person is gone or may no longer act on it."""
    from engine.trust.access import may_act_on
    from engine.usecases.rounds import latest_return_since, previous_doer

    row.item_id = row.item.id
    with ctx.session.no_autoflush:  # the new row is flushed after the instance's compare-and-set, not here
        before = previous_doer(ctx.session, row)
        if before is None:
            return
        done, person = before
        if row.return_comment is None:
            row.return_comment = latest_return_since(ctx.session, row.item_id, done.id)
    if person.active and may_act_on(person, row):
        row.assignee_id = person.id
        row.claimed_at = ctx.now


# ---------------------------------------------------------------- claim

def _rowcount(result: Any) -> int:
    """Rows matched by an UPDATE (a CursorResult); the compare-and-set writes depend on it."""
    return int(result.rowcount)


def _set_task_if(ctx: Ctx, task: HumanTask, holder: ColumnElement[bool], **values: Any) -> None:
    """Compare-and-set on the task row: write `values` only while the task is still open and its holder is
    still what `holder` says, else 409. Every change of holder or status goes through here, so of two people
    racing for one task exactly one wins: the loser's UPDATE (on PostgreSQL, after waiting for the winner's
    row lock) no longer matches and changes nothing."""
    result = ctx.session.execute(
        update(HumanTask).where(HumanTask.id == task.id, HumanTask.status == "ready", holder)
        .values(**values).execution_options(synchronize_session=False))
    if _rowcount(result) != 1:
        status = ctx.session.execute(select(HumanTask.status).where(HumanTask.id == task.id)).scalar()
        if status != "ready":
            raise Conflict(f"task {task.id} is no longer open", code="task_not_ready")
        raise Conflict(f"task {task.id} was claimed or released by someone else meanwhile; reload and try again",
                       code="claimed_by_other")
    for key, value in values.items():
        set_committed_value(task, key, value)
    if "assignee_id" in values:
        ctx.session.expire(task, ["assignee"])  # the relationship follows the new holder when next read


def _held_by(user_id: int | None) -> ColumnElement[bool]:
    return HumanTask.assignee_id.is_(None) if user_id is None else HumanTask.assignee_id == user_id


def claim(ctx: Ctx, task_id: int) -> HumanTask:
    assert ctx.user is not None
    task = load_task_for(ctx.session, ctx.user, task_id, "task.claim")
    require_act(ctx.user, task)
    if task.status != "ready":
        raise Conflict(f"task {task_id} is no longer open", code="task_not_ready")
    if task.assignee_id == ctx.user.id:
        return task
    if task.assignee_id is not None:
        raise Conflict(f"task {task_id} is claimed by someone else", code="claimed_by_other")
    _set_task_if(ctx, task, _held_by(None), assignee_id=ctx.user.id, claimed_at=ctx.now)
    audit.record(ctx.session, ctx.actor, "task.claimed", target_type="task", target_id=task.id, item_id=task.item_id)
    return task


def unclaim(ctx: Ctx, task_id: int) -> HumanTask:
    assert ctx.user is not None
    task = load_task_for(ctx.session, ctx.user, task_id, "task.release")
    if task.assignee_id is None:
        return task
    if task.status != "ready":
        raise Conflict(f"task {task_id} is no longer open", code="task_not_ready")
    if task.assignee_id != ctx.user.id and scope_of(ctx.user.role, "task.release") != ALL:
        raise Conflict(f"task {task_id} is held by someone else", code="claimed_by_other")
    _set_task_if(ctx, task, _held_by(task.assignee_id), assignee_id=None, claimed_at=None)
    audit.record(ctx.session, ctx.actor, "task.unclaimed", target_type="task", target_id=task.id,
                 item_id=task.item_id)
    return task


def hand_over(ctx: Ctx, task_id: int, to_username: str) -> HumanTask:
    assert ctx.user is not None
    task = load_task_for(ctx.session, ctx.user, task_id, "task.release")
    if task.status != "ready":
        raise Conflict(f"task {task_id} is no longer open", code="task_not_ready")
    if task.assignee_id not in (None, ctx.user.id) and scope_of(ctx.user.role, "task.release") != ALL:
        raise Conflict(f"task {task_id} is held by someone else", code="claimed_by_other")
    target = ctx.session.execute(select(User).where(User.username == to_username)).scalar()
    if target is None or not target.active:
        raise Invalid(f"no active user {to_username!r}", code="unknown_user")
    require_act(target, task)
    _set_task_if(ctx, task, _held_by(task.assignee_id), assignee_id=target.id, claimed_at=ctx.now)
    audit.record(ctx.session, ctx.actor, "task.handed_over", target_type="task", target_id=task.id,
                 item_id=task.item_id, to=target.username)
    from engine.trust.notify import Event, notify

    item = task.item
    notify(ctx.session, Event("handover", "task.handed_over",
                              {"by": ctx.user.display_name or ctx.user.username, "task": task.title,
                               "code": item.code, "name": item.name},
                              item_id=task.item_id, task_id=task.id), [target], actor=ctx.actor, now=ctx.now,
           exclude=ctx.user.id)
    return task


# ---------------------------------------------------------------- gates

@dataclass
class GateStatus:
    kind: str
    artefact: Artefact | None


def gate_requirements(session: Session, item: WorkItem, gate: str | None,
                      artefacts: list[Artefact] | None = None, *, department_id: int | None = None) -> list[GateStatus]:
    """The artefact kinds a gate needs, each with the latest stored artefact of that kind in one evidence scope
    (or None): a department's own for a per-department step (`department_id`), else the whole item's.
    `artefacts`: the item's artefacts when the caller has loaded them already (saves a query)."""
    kinds = item_kinds(item, gate)
    if not kinds:
        return []
    latest: dict[str, Artefact] = {}
    if artefacts is None:
        # The uploader is read by few callers (a review's preview): loaded when asked, not joined every time.
        scope = Artefact.department_id.is_(None) if department_id is None else \
            Artefact.department_id == department_id
        rows: Any = session.scalars(select(Artefact).where(Artefact.item_id == item.id, Artefact.kind.in_(kinds),
                                                           Artefact.status == "stored", scope).order_by(Artefact.id)
                                    .options(lazyload(Artefact.uploaded_by)))
    else:
        rows = sorted((a for a in artefacts if a.item_id == item.id and a.kind in kinds and a.status == "stored"
                       and a.department_id == department_id), key=lambda a: a.id)
    for row in rows:
        latest[row.kind] = row
    return [GateStatus(kind, latest.get(kind)) for kind in kinds]


def task_requirements(session: Session, task: HumanTask, artefacts: list[Artefact] | None = None
                      ) -> list[GateStatus]:
    """What a task's gate needs, from the task's own evidence scope (`engine.evidence.artefacts.evidence_scope`)."""
    return gate_requirements(session, task.item, task.gate, artefacts, department_id=evidence_scope(task))


def optional_present(session: Session, task: HumanTask) -> list[GateStatus]:
    """The optional working documents of a task's step that were uploaded: they go with the submission (and
    to its review) like the required ones, but their absence never holds the gate."""
    item = task.item
    kinds = item_kinds(item, task.gate, optional=True)
    if not kinds:
        return []
    scope = evidence_scope(task)
    rows = session.scalars(select(Artefact).where(
        Artefact.item_id == item.id, Artefact.kind.in_(kinds), Artefact.status == "stored",
        Artefact.department_id.is_(None) if scope is None else Artefact.department_id == scope)
        .order_by(Artefact.id).options(lazyload(Artefact.uploaded_by)))
    latest = {row.kind: row for row in rows}
    return [GateStatus(kind, latest[kind]) for kind in kinds if kind in latest]


def optional_statuses(session: Session, task: HumanTask) -> list[GateStatus]:
    """Every optional working document of a task's step, with its latest upload or None."""
    kinds = item_kinds(task.item, task.gate, optional=True)
    present = {s.kind: s for s in optional_present(session, task)}
    return [present.get(kind) or GateStatus(kind, None) for kind in kinds]


def check_gate(ctx: Ctx, task: HumanTask) -> list[GateStatus]:
    """Every required artefact must exist and match its stored size and hash in the object store; optional
    ones uploaded for the step are checked the same way and go with it."""
    statuses = task_requirements(ctx.session, task)
    statuses += [s for s in optional_present(ctx.session, task) if s.kind not in {r.kind for r in statuses}]
    missing = [s.kind for s in statuses if s.artefact is None]
    if ctx.store is not None:
        store = ctx.store
        present = [s for s in statuses if s.artefact is not None]
        intact = store.each(lambda s: s.artefact is not None and verify_artefact(store, s.artefact), present)
        missing += [s.kind for s, ok in zip(present, intact, strict=True) if not ok]
    if missing:
        raise GateUnmet(missing)
    return statuses


# ---------------------------------------------------------------- complete

def load_instance(session: Session, item_id: int) -> ProcessInstance:
    instance = session.execute(select(ProcessInstance).where(ProcessInstance.item_id == item_id)).scalar_one()
    return instance


def save_instance(ctx: Ctx, instance: ProcessInstance, workflow: Any, model: spiff.ParsedModel) -> None:
    """Compare-and-set write of the instance state; the loser of a race gets 409."""
    state = serialize_state(workflow, model)
    values_timer = next_timer_at(workflow)
    expected = instance.version
    status = "completed" if workflow.is_completed() else "running"
    try:
        # On the session's connection: the ORM's bulk-update machinery (and the autoflush it brings) cost more
        # than the UPDATE itself, and the instance's attributes are set below anyway.
        compare_and_set(ctx.session, _INSTANCES, instance.id, expected,
                        {"state": state, "updated_at": ctx.now, "next_timer_at": values_timer, "status": status},
                        on_connection=True)
    except Lost as lost:
        if lost.busy:
            raise Conflict("the item changed while you were working; reload and try again") from lost
        raise Conflict("the item changed while you were working; reload and try again",
                       code="version_conflict") from lost
    # The row is written; tell the ORM so (set as committed, not as changes) or it writes the state again.
    set_committed_value(instance, "state", state)
    set_committed_value(instance, "version", expected + 1)
    set_committed_value(instance, "updated_at", ctx.now)
    set_committed_value(instance, "next_timer_at", values_timer)
    set_committed_value(instance, "status", status)


_PASSED_ON: tuple[type[BaseException], ...] = (DomainError, *PROGRAMMING_ERRORS)


def _element_of(exc: BaseException, fallback: Any = None) -> str | None:
    """The BPMN element a library error happened at (WorkflowTaskException carries the task)."""
    task = getattr(exc, "task", None) or fallback
    spec = getattr(task, "task_spec", None)
    element = getattr(spec, "bpmn_id", None) or getattr(spec, "name", None)
    return str(element) if element else None


def _model_failure(exc: Exception, what: str, task: Any = None) -> ProcessFailed:
    element = _element_of(exc, task)
    text = str(exc)
    where = f"element '{element}': " if element and f"'{element}'" not in text else ""
    return ProcessFailed(f"{what} could not advance: {where}{text}", element=element)


def start_workflow(model: spiff.ParsedModel, data: dict[str, Any]) -> Any:
    """A new instance run up to its first wait; a model error on the way (a script right after the start event)
    is a 422 naming the element, nothing created."""
    try:
        return spiff.new_workflow(model, data)
    except _PASSED_ON:
        raise
    except Exception as exc:  # the library raises many types; the item must not be half-created
        raise _model_failure(exc, "the process") from exc


def step_engine(workflow: Any, what: str) -> None:
    """Run the engine on to the next wait; a model error is a 422 naming the element, nothing saved."""
    try:
        workflow.do_engine_steps()
    except DomainError:
        raise
    except Exception as exc:  # the library raises many types
        raise _model_failure(exc, what) from exc


def run_and_step(workflow: Any, task: Any, data: dict[str, Any], what: str) -> None:
    """Complete one READY task with its form data and run the engine on. A model error at run time becomes
    a 422 before anything is saved, so the instance stays as it was."""
    task.data.update(data)
    try:
        task.run()
        workflow.do_engine_steps()
    except _PASSED_ON:
        raise  # a refusal stays one; a bug is logged as a 500 (nothing was saved either way)
    except Exception as exc:  # the library raises many types for a model's own errors
        raise _model_failure(exc, what, task) from exc


def _data_size(data: Any) -> float:
    try:
        return len(spiff.encode_data(data))
    except (ValueError, TypeError, RecursionError):
        return float("inf")  # circular or not serializable: this is where it went wrong


def data_culprit(workflow: Any) -> str | None:
    """The element whose task data grew the most over what it inherited (where a script built it)."""
    best: tuple[float, str | None] = (-1.0, None)
    sizes: dict[Any, float] = {}
    for task in workflow.get_tasks():
        size = sizes.setdefault(task.id, _data_size(task.data))
        parent = task.parent
        before = 0.0 if parent is None else sizes.setdefault(parent.id, _data_size(parent.data))
        growth = size - before if size != before else 0.0
        if size == float("inf") and before != float("inf"):
            growth = float("inf")
        if growth > best[0]:
            best = (growth, _element_of(Exception(), task))
    return best[1]


def serialize_state(workflow: Any, model: spiff.ParsedModel) -> str:
    """The instance state to store: refused with 422 naming the element when it cannot be saved (task data that
    contains itself) or is larger than the configured limit (default 1 MiB); nothing is written."""
    try:
        state = spiff.dumps(workflow, model)
    except (ValueError, TypeError, RecursionError) as exc:
        element = data_culprit(workflow)
        raise ProcessFailed(f"element '{element}': its task data cannot be saved ({exc})", element=element) from exc
    limit = budgets.state_limit()
    if len(state) > limit:
        element = data_culprit(workflow)
        raise ProcessFailed(f"element '{element}': the instance state would be {len(state) // 1024} KiB, more than "
                            f"the limit of {limit // 1024} KiB; keep less in task data", element=element,
                            state_bytes=len(state), limit_bytes=limit)
    return state


def complete_task(ctx: Ctx, task_id: int, data: Any) -> HumanTask:
    """Load, check caller and gate, validate, run, step, persist (CAS), project, audit — one transaction."""
    assert ctx.user is not None
    session = ctx.session
    # The task's instance comes in the same query; its holder, if any, is either the caller or a conflict.
    task = load_task_for(session, ctx.user, task_id, "task.complete", joinedload(HumanTask.instance),
                         lazyload(HumanTask.assignee))
    require_act(ctx.user, task)
    if task.status != "ready":
        raise Conflict(f"task {task_id} is no longer open", code="task_not_ready")
    if task.assignee_id is not None and task.assignee_id != ctx.user.id:
        raise Conflict(f"task {task_id} is claimed by someone else", code="claimed_by_other")
    clean, errors = forms.load_form(task.form, data)
    if errors:
        raise FormInvalid(errors)
    item = task.item
    if item.status != "active":
        raise Conflict(f"item {item.id} is {item.status}", code="item_not_active")
    # The gate is read, and any review it opens created, with no upload deciding in between (uploads take the
    # same lock): a review judges exactly what its gate pass records, and nothing lands after it unseen.
    lock_evidence(session, item.id)
    statuses = check_gate(ctx, task)
    _separation_of_duties(ctx, task, statuses)
    # Completing claims the task implicitly: taken only if nobody else holds it at this moment (a claim
    # committed since the load wins, and this completion gets 409).
    _set_task_if(ctx, task, or_(HumanTask.assignee_id.is_(None), HumanTask.assignee_id == ctx.user.id),
                 status="completed", completed_at=ctx.now, completed_by_id=ctx.user.id, assignee_id=ctx.user.id)

    instance = task.instance
    workflow, model = spiff.load_workflow(instance)
    from uuid import UUID

    spiff_task = workflow.get_task_from_id(UUID(task.spiff_task_id))
    if spiff_task is None or spiff_task.state != TaskState.READY:
        raise Conflict(f"task {task_id} is no longer ready", code="task_not_ready")
    hook = COMPLETION_HOOKS.get(task.form)
    if hook is not None:
        hook(ctx, task, item, clean)
    elif item.contract_level:
        raise ProcessFailed(f"no completion hook is registered for form {task.form!r} of a contract-level item",
                            element=task.spec_name)
    step_data = spiff.step_data(workflow, spiff_task, clean)
    run_and_step(workflow, spiff_task, step_data, "the process")

    task.data = clean
    discard_drafts(session, task.id)  # submitted: nobody's half-typed version of it matters any more
    if statuses:
        # Written as plain rows: nothing in this request reads them back as objects.
        session.connection().execute(insert(_GATE_PASSES), [
            {"item_id": item.id, "task_id": task.id, "gate": task.gate or "", "kind": s.kind,
             "artefact_id": s.artefact.id, "passed_at": ctx.now} for s in statuses if s.artefact is not None])
    _retain_evidence(ctx, [s.artefact for s in statuses if s.artefact is not None])
    if task.form == "difficulty_confirmation":
        old = item.difficulty
        item.difficulty = _allowed_difficulty(item, clean["difficulty"], "difficulty")
        item.difficulty_proposed_by_id = ctx.user.id
        item.difficulty_confirmed_by_id = None
        audit.record(session, ctx.actor, "item.difficulty_proposed", target_type="item", target_id=item.id,
                     old=str(old), new=str(item.difficulty), note=clean.get("complexity_note"))
    elif task.form == "difficulty_review":
        proposed = item.difficulty
        if clean["verdict"] == "set":
            item.difficulty = _allowed_difficulty(item, clean["difficulty"], "difficulty")
        item.difficulty_confirmed_by_id = ctx.user.id
        audit.record(session, ctx.actor, "item.difficulty_confirmed", target_type="item", target_id=item.id,
                     proposed=str(proposed), confirmed=str(item.difficulty), verdict=clean["verdict"],
                     reason=clean.get("reason"))
    if task.form == "go_live" and clean.get("go_live_date") is not None:
        value = clean["go_live_date"]
        item.go_live_date = value if isinstance(value, date) else date.fromisoformat(str(value))
    returned = clean.get("decision") == "return"
    audit.record(session, ctx.actor, "task.completed", target_type="task", target_id=task.id, item_id=item.id,
                 task=task.spec_name, decision=clean.get("decision"), comment=clean.get("comment"),
                 artefacts=[s.artefact.id for s in statuses if s.artefact is not None])
    sync_projection(ctx, instance, item, workflow, return_comment=clean.get("comment") if returned else None)
    if workflow.is_completed():
        item.status = "completed"
        item.completed_at = ctx.now
        audit.record(session, ctx.actor, "item.completed", target_type="item", target_id=item.id)
        if not item.contract_level:  # a monthly report is the contract's own work: nothing to tally
            tally_item(session, ctx.actor, item, tally_time(item, ctx.now))
    session.flush()
    return task


def _allowed_difficulty(item: WorkItem, value: Any, field_name: str) -> Decimal:
    """A coefficient the contract allows on the item's line (any 0.1–5 when the line declares no levels)."""
    difficulty = Decimal(value).quantize(Decimal("0.01"))
    levels = [Decimal(str(level["value"])) for level in (item.service_line.difficulty_levels or [])]
    if levels and difficulty not in levels:
        raise FormInvalid({field_name: [f"the contract allows {', '.join(str(v) for v in levels)} on line "
                                        f"{item.service_line.code}"]})
    return difficulty


def _retain_evidence(ctx: Ctx, artefacts: list[Artefact]) -> None:
    """A gate passed on these object versions: ask the store to hold them (object lock legal hold). A hold
    that cannot be placed does not undo the gate; the app itself never deletes a referenced version, and
    `itemgate fsck --repair` places holds that are missing."""
    store = ctx.store
    if store is None or not artefacts:
        return

    def hold(artefact: Artefact) -> None:
        try:
            store.hold(artefact.key, artefact.version_id)
        except (ObjectMissing, StoreUnavailable):
            _log.warning("could not place a legal hold on %s (%s)", artefact.key, artefact.version_id)

    store.each(hold, artefacts)


def _separation_of_duties(ctx: Ctx, task: HumanTask, statuses: list[GateStatus]) -> None:
    """The user who submitted or uploaded a deliverable never reviews it; co-signatures come from two
    different users holding the two different roles the lanes ask for."""
    assert ctx.user is not None
    me = ctx.user.id
    if task.review_of:
        submitters = set(ctx.session.scalars(
            select(HumanTask.completed_by_id).where(HumanTask.item_id == task.item_id,
                                                    HumanTask.gate == task.review_of,
                                                    HumanTask.status == "completed")))
        if me in submitters:
            raise Forbidden("you submitted this deliverable and cannot review it", code="separation_of_duties")
        if any(a.uploaded_by_id == me for a in submitted_evidence(ctx.session, task)):
            raise Forbidden("you uploaded evidence of this deliverable and cannot review it",
                            code="separation_of_duties")
    if task.form == "cosign":
        # Sibling signatures of this round were projected together, so they share the creation time.
        others = ctx.session.execute(
            select(HumanTask.completed_by_id, HumanTask.role).where(
                HumanTask.item_id == task.item_id, HumanTask.form == "cosign", HumanTask.id != task.id,
                HumanTask.status == "completed", HumanTask.created_at >= task.created_at)).all()
        for signer, role in others:
            if signer == me or role == task.role:
                raise Forbidden("the two signatures must come from two different people in two different "
                                "roles", code="separation_of_duties")


# ---------------------------------------------------------------- timers

def next_timer_at(workflow: Any) -> datetime | None:
    """The earliest due time among waiting timer events, so `tick` only loads instances that are due."""
    due: list[datetime] = []
    for task in timers.waiting_timer_ids(workflow).values():
        value = spiff.internal_value(task, "event_value")
        if isinstance(value, str) and value != timers.NO_DEADLINE:
            try:
                due.append(datetime.fromisoformat(value))
            except ValueError:
                continue
    aware = [d if d.tzinfo else d.replace(tzinfo=UTC) for d in due]
    return min(aware) if aware else None


def advance_timers(session: Session, instance: ProcessInstance, now: datetime) -> int:
    """Refresh waiting timers of one (locked) instance and persist; returns 1 when anything fired."""
    workflow, model = spiff.load_workflow(instance)
    waiting = timers.waiting_timer_ids(workflow)
    attached = {tid: timers.attached_user_task(t) for tid, t in waiting.items()}
    try:
        workflow.refresh_timers()
    except Exception as exc:  # a timer expression that fails at run time
        raise _model_failure(exc, "the timers") from exc
    step_engine(workflow, "the timers")
    # A timer fired when it left WAITING by running (not by being cancelled with its completed task).
    fired = sorted(tid for tid, t in waiting.items() if t.state == TaskState.COMPLETED)
    item = session.get(WorkItem, instance.item_id)
    assert item is not None
    ctx = Ctx(session=session, user=None, now=now)
    sync_projection(ctx, instance, item, workflow, return_comment=None)
    if fired:
        audit.record(session, audit.SYSTEM, "timer.fired", target_type="item", target_id=item.id,
                     tasks=fired)
        for tid in fired:
            user_task = attached.get(tid)
            row = None if user_task is None else session.execute(select(HumanTask).where(
                HumanTask.instance_id == instance.id, HumanTask.spiff_task_id == str(user_task.id),
                HumanTask.status == "ready")).scalar()
            if row is not None:
                timers.notify_overdue(session, row, now)
    return 1 if fired else 0

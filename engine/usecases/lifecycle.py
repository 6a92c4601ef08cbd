"""PM interventions on a running item: cancel it, or send it back to an earlier step (rework)."""
from __future__ import annotations

import uuid
from typing import Any

from SpiffWorkflow.util.task import TaskState
from sqlalchemy import select

from engine.errors import Conflict, Invalid
from engine.runtime import spiff, timers
from engine.trust import audit
from engine.trust.access import authorize, load_item_for
from engine.usecases.tasks import Ctx, load_instance, save_instance, step_engine, sync_projection
from storage.models import DELIVERABLE_MODE, RECORD_MODE, HumanTask, WorkItem


def _reason(reason: str | None) -> str:
    text = (reason or "").strip()
    if len(text) < 2:
        raise Invalid("give a reason", code="invalid_form", errors={"reason": ["required (at least 2 characters)"]})
    if len(text) > 2000:
        raise Invalid("the reason is too long", code="invalid_form", errors={"reason": ["at most 2000 characters"]})
    return text


def _active(item: WorkItem) -> None:
    if item.status != "active":
        raise Conflict(f"item {item.id} is {item.status}; only active items can change "
                       "(a completed item's workload is corrected through the ledger)", code="item_not_active")


def _line_work(item: WorkItem) -> None:
    """Cancelling and rework are for a line's work: a contract-level item (a monthly report) follows its report,
    whose status and clocks the report's own steps keep."""
    if item.contract_level:
        raise Conflict(f"item {item.id} is the contract's {item.name}: it moves only by its report's steps "
                       "(submit, review)", code="contract_item")


def cancel_item(ctx: Ctx, item_id: int, reason: str | None) -> WorkItem:
    """Stop an item for good: its open tasks are cancelled, its timers stop, it never becomes billable."""
    assert ctx.user is not None
    authorize(ctx.user, "item.cancel")
    item = load_item_for(ctx.session, ctx.user, item_id, "item.cancel")
    text = _reason(reason)
    _active(item)
    _line_work(item)
    instance = load_instance(ctx.session, item.id)
    workflow, model = spiff.load_workflow(instance)
    workflow.cancel()
    save_instance(ctx, instance, workflow, model)
    # save_instance derives status from completion; a cancelled workflow is neither running nor completed.
    instance.status = "cancelled"
    instance.next_timer_at = None
    open_rows = list(ctx.session.scalars(select(HumanTask).where(HumanTask.item_id == item.id,
                                                                 HumanTask.status == "ready")))
    for row in open_rows:
        row.status = "cancelled"
        row.completed_at = ctx.now
    item.status = "cancelled"
    item.cancelled_reason = text
    item.stage = "cancelled"
    ctx.session.flush()
    audit.record(ctx.session, ctx.actor, "item.cancelled", target_type="item", target_id=item.id, reason=text,
                 cancelled_tasks=[r.id for r in open_rows])
    return item


def _completed_user_tasks(workflow: Any, spec_name: str) -> list[Any]:
    tasks = [t for t in workflow.get_tasks(state=TaskState.COMPLETED, manual=True)
             if t.task_spec.name == spec_name]
    return sorted(tasks, key=lambda t: t.last_state_change)


# Steps the PM cannot send an item back to: the third party's confirmation of the difficulty is redone by sending
# the item back to the PM's proposal (confirm_difficulty), which starts a fresh confirmation.
NOT_REWORKABLE_FORMS = frozenset({"difficulty_review"})


def reworkable(form_key: str | None) -> bool:
    """Whether a completed step with this form can be a rework target."""
    return form_key not in NOT_REWORKABLE_FORMS


def _fresh_id(task: Any) -> None:
    """Give a reset task a new id: task ids are never reused (API.md), and the inbox keys on them."""
    spiff.rename_task(task, uuid.uuid4())


def rework_item(ctx: Ctx, item_id: int, to: str, reason: str | None) -> WorkItem:
    """Send the item back to an earlier, completed step; later work is discarded and redone from there."""
    assert ctx.user is not None
    authorize(ctx.user, "item.rework")
    item = load_item_for(ctx.session, ctx.user, item_id, "item.rework")
    text = _reason(reason)
    _active(item)
    _line_work(item)
    instance = load_instance(ctx.session, item.id)
    workflow, model = spiff.load_workflow(instance)
    candidates = [t for t in _completed_user_tasks(workflow, to)
                  if reworkable(spiff.task_properties(t).get("form"))]
    if not candidates:
        done = sorted({t.task_spec.name for t in workflow.get_tasks(state=TaskState.COMPLETED, manual=True)
                       if reworkable(spiff.task_properties(t).get("form"))})
        raise Invalid(f"{to!r} is not a completed step of this item", code="invalid_form",
                      errors={"to": [f"one of {done}"]})
    target = candidates[-1]
    target_id = target.id
    timers.disarm_deadline_timers(target)  # the projection arms it again with a new deadline
    workflow.reset_from_task_id(target_id)
    target = workflow.get_task_from_id(target_id)
    _fresh_id(target)
    # Spiff's reset drops the later branch but leaves its waiting timers registered; forget them.
    events = workflow.event_manager.tasks
    for key, waiting in list(events.items()):
        if waiting.workflow.tasks.get(waiting.id) is not waiting or waiting.parent is None:
            events.pop(key, None)
    step_engine(workflow, "the process")
    before = {r.id for r in ctx.session.scalars(select(HumanTask).where(HumanTask.item_id == item.id,
                                                                        HumanTask.status == "ready"))}
    created = sync_projection(ctx, instance, item, workflow, return_comment=text)
    after = {r.id for r in ctx.session.scalars(select(HumanTask).where(HumanTask.item_id == item.id,
                                                                       HumanTask.status == "ready"))}
    audit.record(ctx.session, ctx.actor, "item.reworked", target_type="item", target_id=item.id, to=to,
                 reason=text, cancelled_tasks=sorted(before - after), new_tasks=[t.id for t in created])
    for row in created:
        audit.record(ctx.session, ctx.actor, "task.reopened", target_type="task", target_id=row.id,
                     item_id=item.id, task=row.spec_name, reason=text)
    return item


def has_difficulty(item: WorkItem) -> bool:
    """Whether the item's work is weighted by a difficulty coefficient: countable work is; a metered record (units
    in a period) and a contract-level deliverable count at 1.00 (engine/usecases/tasks.py create_item)."""
    return item.mode not in (RECORD_MODE, DELIVERABLE_MODE) and not item.contract_level


def difficulty_adjustable(session: Any, item: WorkItem) -> bool:
    """Whether the PM may still change the item's proposed difficulty: until the third party has confirmed it
    (its confirmation, when the contract asks for one, is pending or still to come). A line whose contract
    declares no difficulty levels has no confirmation: there the PM's own difficulty step settles it."""
    if item.status != "active" or item.difficulty_confirmed_by_id is not None or not has_difficulty(item):
        return False
    forms = {(form, status) for form, status in session.execute(
        select(HumanTask.form, HumanTask.status).where(
            HumanTask.item_id == item.id, HumanTask.form.in_(("difficulty_confirmation", "difficulty_review")),
            HumanTask.status.in_(("ready", "completed"))))}
    if ("difficulty_review", "ready") in forms:
        return True
    return ("difficulty_confirmation", "completed") not in forms


def adjust_difficulty(ctx: Ctx, item_id: int, raw: str | None, note: str | None) -> WorkItem:
    """Change the proposed difficulty coefficient (with a note) while it is still a proposal: until the third
    party has confirmed it (`difficulty_adjustable`). The pending confirmation shows the new value (it reads the
    item's), and the change is audited with the task it updates."""
    from decimal import Decimal, InvalidOperation

    assert ctx.user is not None
    authorize(ctx.user, "item.difficulty")
    item = load_item_for(ctx.session, ctx.user, item_id, "item.difficulty")
    _active(item)
    if not has_difficulty(item):
        raise Invalid(f"item {item.id} is a {item.mode}, which has no difficulty coefficient", code="no_difficulty")
    try:
        value = Decimal((raw or "").strip())
        if not value.is_finite() or not Decimal("0.1") <= value <= Decimal("5"):
            raise InvalidOperation
    except InvalidOperation:
        raise Invalid("the difficulty must be a number from 0.1 to 5", code="invalid_form",
                      errors={"difficulty": ["must be between 0.1 and 5"]}) from None
    text = _reason(note)
    if not difficulty_adjustable(ctx.session, item):
        raise Conflict("难度系数已确认，不能再调整建议值 (the difficulty of item "
                       f"{item.id} is already confirmed)", code="difficulty_confirmed")
    levels = [Decimal(str(level["value"])) for level in (item.service_line.difficulty_levels or [])]
    value = value.quantize(Decimal("0.01"))
    if levels and value not in levels:
        allowed = ", ".join(str(v) for v in levels)
        raise Invalid(f"the contract allows {allowed} on line {item.service_line.code}", code="invalid_form",
                      errors={"difficulty": [f"the contract allows {allowed} on line {item.service_line.code}"]})
    pending = ctx.session.scalars(select(HumanTask.id).where(
        HumanTask.item_id == item.id, HumanTask.form == "difficulty_review", HumanTask.status == "ready")).all()
    before = item.difficulty
    item.difficulty = value
    ctx.session.flush()
    audit.record(ctx.session, ctx.actor, "item.difficulty_proposed", target_type="item", target_id=item.id,
                 before=str(before), after=str(item.difficulty), reason=text, review_tasks=list(pending))
    return item

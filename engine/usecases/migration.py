"""Instance migration: move running items to another version of their process, open tasks mapped by element id."""
from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from SpiffWorkflow.util.task import TaskState
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from engine.errors import DomainError, Invalid, NotFound, ProcessFailed
from engine.runtime import spiff, timers
from engine.trust import audit
from engine.trust.access import authorize
from engine.usecases.tasks import Ctx, next_timer_at, save_instance
from storage.models import HumanTask, ProcessDefinition, ProcessInstance, User, WorkItem

_OPEN = TaskState.READY | TaskState.WAITING


@dataclass
class ItemMigration:
    """What migrating one item does (dry run) or did."""

    item_id: int
    code: str
    from_definition: int
    mappable: bool
    mapped: list[str] = field(default_factory=list)
    unmapped: list[str] = field(default_factory=list)
    problem: str | None = None
    migrated: bool = False

    def as_dict(self) -> dict[str, Any]:
        return {"item_id": self.item_id, "code": self.code, "from_definition": self.from_definition,
                "mappable": self.mappable, "mapped": self.mapped, "unmapped": self.unmapped,
                "problem": self.problem, "migrated": self.migrated}


@dataclass
class MigrationReport:
    target: ProcessDefinition
    dry_run: bool
    items: list[ItemMigration] = field(default_factory=list)

    @property
    def migrated(self) -> int:
        return sum(1 for i in self.items if i.migrated)

    @property
    def refused(self) -> int:
        return sum(1 for i in self.items if not i.mappable)

    def as_dict(self) -> dict[str, Any]:
        return {"target": self.target.id, "process_id": self.target.process_id, "dry_run": self.dry_run,
                "items": [i.as_dict() for i in self.items], "total": len(self.items),
                "mappable": sum(1 for i in self.items if i.mappable), "refused": self.refused,
                "migrated": self.migrated}


def _spec_names(model: spiff.ParsedModel) -> dict[str, set[str]]:
    """Task spec names per (sub)process spec name; the top process under ''."""
    names = {"": set(model.spec.task_specs)}
    for name, sub in model.subprocess_specs.items():
        names[name] = set(sub.task_specs)
    return names


def _workflows(workflow: Any) -> list[tuple[str, Any]]:
    return [("", workflow), *[(sub.spec.name, sub) for sub in workflow.subprocesses.values()]]


def plan_item(instance: ProcessInstance, item: WorkItem, source: spiff.ParsedModel,
              target: spiff.ParsedModel) -> tuple[ItemMigration, Any]:
    """Which open tasks have a counterpart (same element id) in the target, and the migrated workflow when all
    do. Completed history must exist in the target too (the state names each task's element)."""
    plan = ItemMigration(item.id, item.code, instance.definition_id, mappable=True)
    workflow = spiff.loads(instance.state, source)
    names = _spec_names(target)
    missing_history: set[str] = set()
    for scope, flow in _workflows(workflow):
        available = names.get(scope)
        for task in flow.tasks.values():
            name = task.task_spec.name
            is_open = bool(task.state & _OPEN)
            known = available is not None and name in available
            label = str(getattr(task.task_spec, "bpmn_id", None) or name)
            if is_open and getattr(task.task_spec, "bpmn_id", None):
                (plan.mapped if known else plan.unmapped).append(label)
            elif not known:
                missing_history.add(label)
    plan.mapped = sorted(set(plan.mapped))
    plan.unmapped = sorted(set(plan.unmapped))
    if plan.unmapped:
        plan.mappable = False
        plan.problem = ("open task(s) with no counterpart in the target version: " + ", ".join(plan.unmapped))
        return plan, None
    if missing_history:
        plan.mappable = False
        plan.unmapped = sorted(missing_history)
        plan.problem = ("the item's history has step(s) the target version no longer has: "
                        + ", ".join(plan.unmapped))
        return plan, None
    try:
        migrated = spiff.loads(instance.state, target)
        _rearm_timers(migrated)
    except DomainError as exc:
        plan.mappable, plan.problem = False, exc.detail
        return plan, None
    except Exception as exc:  # the target model's timers or specs refuse this state
        plan.mappable, plan.problem = False, f"the target version cannot take this item's state: {exc}"
        return plan, None
    return plan, migrated


def _rearm_timers(workflow: Any) -> None:
    """Waiting timers keep their computed due time, but re-read the target's expression (the fix may be there)."""
    for task in workflow.get_tasks(state=TaskState.WAITING):
        if not timers._is_timer(task):
            continue
        task.internal_data.pop("event_value", None)
        task.internal_data.pop("event_fired", None)
        try:
            spiff.update_task(task)
        except Exception as exc:
            element = getattr(task.task_spec, "bpmn_id", None) or task.task_spec.name
            raise ProcessFailed(f"element '{element}': the target version's timer fails for this item: {exc}",
                                element=element) from exc


def select_items(session: Session, target: ProcessDefinition, item_ids: Iterable[int] | None,
                 from_definition: int | None = None) -> list[tuple[ProcessInstance, WorkItem]]:
    """Running instances of the target's process on other versions (all, or the items named)."""
    query = (select(ProcessInstance, WorkItem).join(WorkItem, WorkItem.id == ProcessInstance.item_id)
             .join(ProcessDefinition, ProcessDefinition.id == ProcessInstance.definition_id)
             .where(ProcessDefinition.process_id == target.process_id, ProcessInstance.status == "running",
                    ProcessInstance.definition_id != target.id)
             .order_by(WorkItem.id))
    if from_definition is not None:
        query = query.where(ProcessInstance.definition_id == from_definition)
    if item_ids is not None:
        wanted = sorted(set(item_ids))
        rows = [(r[0], r[1]) for r in session.execute(query.where(WorkItem.id.in_(wanted)))]
        found = {item.id for _, item in rows}
        unknown = [i for i in wanted if i not in found]
        if unknown:
            raise Invalid(f"items {unknown} are not running on another version of {target.process_id}",
                          code="invalid_form", errors={"items": [f"not migratable: {unknown}"]})
        return rows
    return [(r[0], r[1]) for r in session.execute(query)]


def load_target(session: Session, definition_id: int) -> ProcessDefinition:
    target = session.get(ProcessDefinition, definition_id)
    if target is None:
        raise NotFound(f"process definition {definition_id} not found")
    return target


def migrate(session: Session, actor: audit.Actor, user: User | None, target_id: int, *,
            item_ids: Iterable[int] | None = None, from_definition: int | None = None, dry_run: bool = True,
            commit: Callable[[], None] | None = None, rollback: Callable[[], None] | None = None,
            progress: Callable[[ItemMigration], None] | None = None) -> MigrationReport:
    """Plan (dry run) or migrate items to definition `target_id`, one transaction per item (`commit` after each,
    `rollback` after a refused or failed one); an item whose open tasks do not all map is refused, unchanged."""
    if user is not None:
        authorize(user, "process.manage")
    target = load_target(session, target_id)
    target_model = spiff.model_of(target)
    rows = select_items(session, target, item_ids, from_definition)
    report = MigrationReport(target, dry_run)
    sources: dict[int, spiff.ParsedModel] = {}
    plans = [(instance.id, item.id) for instance, item in rows]
    for instance_id, item_id in plans:
        instance = session.get(ProcessInstance, instance_id)
        item = session.get(WorkItem, item_id)
        assert instance is not None and item is not None
        source = sources.get(instance.definition_id) or spiff.model_of(instance.definition)
        sources[instance.definition_id] = source
        plan, workflow = plan_item(instance, item, source, target_model)
        if plan.mappable and not dry_run:
            try:
                _apply(session, actor, user, instance, item, target, target_model, workflow, plan)
                plan.migrated = True
            except DomainError as exc:
                plan.mappable, plan.problem = False, exc.detail
        if not plan.migrated and not dry_run:
            audit.record(session, actor, "item.migration_refused", target_type="item", target_id=item.id,
                         outcome="refused", from_definition=plan.from_definition, to_definition=target.id,
                         unmapped=plan.unmapped, problem=plan.problem)
        report.items.append(plan)
        if not dry_run and commit is not None:
            commit()  # this item's migration, or only the audit record of its refusal
        if progress is not None:
            progress(plan)
    if dry_run and rollback is not None:
        rollback()
    return report


def _apply(session: Session, actor: audit.Actor, user: User | None, instance: ProcessInstance, item: WorkItem,
           target: ProcessDefinition, target_model: spiff.ParsedModel, workflow: Any, plan: ItemMigration) -> None:
    ctx = Ctx(session=session, user=user, request_id=actor.request_id)
    source_id = instance.definition_id
    save_instance(ctx, instance, workflow, target_model)  # compare-and-set: a concurrent change wins, 409
    session.execute(update(ProcessInstance).where(ProcessInstance.id == instance.id)
                    .values(definition_id=target.id, next_timer_at=next_timer_at(workflow))
                    .execution_options(synchronize_session=False))
    session.expire(instance, ["definition_id", "definition", "next_timer_at"])
    # The inbox rows keep their ids, claims and due dates; what the model says about each step is re-read.
    ready = {str(t.id): t for t in spiff.ready_human_tasks(workflow)}
    for row in session.scalars(select(HumanTask).where(HumanTask.instance_id == instance.id,
                                                       HumanTask.status == "ready")):
        task = ready.get(row.spiff_task_id)
        if task is None:
            continue
        props = spiff.task_properties(task)
        lane = spiff.task_lane(task) or row.lane
        row.title = spiff.task_title(task)[:200]
        row.lane = row.role = lane
        row.form = props.get("form", row.form)
        row.gate, row.stage, row.review_of = props.get("gate"), props.get("stage"), props.get("review_of")
    session.flush()
    audit.record(session, actor, "item.migrated", target_type="item", target_id=item.id,
                 from_definition=source_id, to_definition=target.id, sha256=target.sha256[:12], tasks=plan.mapped)

"""Bulk data generators: many items, task rows, ledger entries and clones, written without the API.

PostgreSQL gets COPY (psycopg), SQLite gets SQLAlchemy Core executemany; both go through the caller's
session, so the caller decides when to commit. Rows carry explicit ids (so child rows can refer to them
without a round-trip per row) and the PostgreSQL sequences are moved past them afterwards.

These rows are for load, not for stepping through a process: `bulk_items` stores a placeholder instance
state that `engine.runtime.spiff.loads` refuses. Use `clone_items` for items that must stay completable.
"""
from __future__ import annotations

import json
import random
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy import JSON, Table, func, select, text
from sqlalchemy.orm import Session

from storage.models import (
    Artefact,
    Department,
    HumanTask,
    ProcessInstance,
    ServiceLine,
    WorkItem,
    WorkloadEntry,
)

PLACEHOLDER_STATE = '{"format":"bench-placeholder"}'
EPOCH = datetime(2023, 1, 2, tzinfo=UTC)

# The service-item model's user tasks in order, with the lane (= role) each sits in.
SERVICE_ITEM_TASKS: list[tuple[str, str, str, str | None, str]] = [
    # (spec name, role, form, gate, stage)
    ("intake", "implementer", "intake", "intake", "intake"),
    ("confirm_difficulty", "pm", "difficulty_confirmation", "difficulty", "intake"),
    ("survey_sorting", "implementer", "survey_sorting", "survey", "survey"),
    ("confirm_survey", "dept_reviewer", "review", None, "survey"),
    ("design", "implementer", "design", "design", "design"),
    ("confirm_design", "dept_reviewer", "review", None, "design"),
    ("build_integration", "implementer", "build_integration", "build", "build"),
    ("tests", "implementer", "tests", "tests", "test"),
    ("walkthrough", "implementer", "walkthrough", "walkthrough", "walkthrough"),
    ("go_live", "implementer", "go_live", "go_live", "go_live"),
    ("cosign_department", "dept_reviewer", "cosign", "cosign", "confirmation"),
    ("cosign_implementer", "implementer", "cosign", "cosign", "confirmation"),
]


@dataclass
class BulkItems:
    """What `bulk_items` wrote: id ranges, and how many open tasks each role got."""

    first_item_id: int
    count: int
    task_rows: int
    ready_by_role: dict[str, int] = field(default_factory=dict)

    @property
    def item_ids(self) -> range:
        return range(self.first_item_id, self.first_item_id + self.count)


def is_postgres(session: Session) -> bool:
    return session.get_bind().dialect.name == "postgresql"


def _next_id(session: Session, table: Table) -> int:
    return int(session.execute(select(func.coalesce(func.max(table.c.id), 0))).scalar_one()) + 1


def _fix_sequence(session: Session, table: Table) -> None:
    if is_postgres(session):
        session.execute(text(
            f"SELECT setval(pg_get_serial_sequence('{table.name}', 'id'), "
            f"(SELECT coalesce(max(id), 1) FROM {table.name}))"))


def bulk_insert(session: Session, table: Table, columns: Sequence[str], rows: Iterable[Sequence[Any]],
                chunk: int = 5000) -> int:
    """Insert `rows` (tuples in `columns` order) in the session's transaction; returns the count."""
    json_cols = {i for i, name in enumerate(columns) if isinstance(table.c[name].type, JSON)}
    count = 0
    if is_postgres(session):
        # COPY through the session's own DBAPI connection, so it shares the session's transaction.
        raw = session.connection().connection.driver_connection
        statement = f"COPY {table.name} ({', '.join(columns)}) FROM STDIN"
        with raw.cursor() as cur, cur.copy(statement) as copy:
            for row in rows:
                if json_cols:
                    row = [json.dumps(v, ensure_ascii=False) if i in json_cols and v is not None else v
                           for i, v in enumerate(row)]
                copy.write_row(row)
                count += 1
        return count
    batch: list[dict[str, Any]] = []
    for row in rows:
        batch.append(dict(zip(columns, row, strict=True)))
        if len(batch) >= chunk:
            session.execute(table.insert(), batch)
            count += len(batch)
            batch = []
    if batch:
        session.execute(table.insert(), batch)
        count += len(batch)
    return count


def ensure_departments(session: Session, count: int, prefix: str = "BD") -> list[int]:
    """Departments `{prefix}0001…`, created if missing; returns their ids in code order."""
    codes = [f"{prefix}{n:04d}" for n in range(1, count + 1)]
    existing = set(session.scalars(select(Department.code).where(Department.code.in_(codes))))
    table = Department.__table__
    missing = [c for c in codes if c not in existing]
    if missing:
        session.execute(table.insert(), [{"code": c, "name": f"压测部门 {c}"} for c in missing])
    rows = session.execute(select(Department.code, Department.id).where(Department.code.in_(codes))).all()
    ids = dict(rows)
    return [ids[c] for c in codes]


def bulk_items(session: Session, *, contract_id: int, definition_id: int, department_ids: Sequence[int],
               count: int, tasks_per_item: int = 10, completed_share: float = 0.2,
               claimed_share: float = 0.1, implementer_ids: Sequence[int] = (), code_prefix: str = "BENCH",
               seed: int = 7) -> BulkItems:
    """`count` service-line-1 items, each with `tasks_per_item` task rows: history plus one open task.

    A `completed_share` of the items are finished (every task row completed); the others have exactly one
    ready task, spread over the model's tasks so roles get the model's share, and a `claimed_share` of
    those are claimed by one of `implementer_ids` when the task is an implementer's.
    """
    rng = random.Random(seed)
    line_id = session.execute(select(ServiceLine.id).where(ServiceLine.contract_id == contract_id,
                                                           ServiceLine.code == "1")).scalar_one()
    items_t, inst_t, tasks_t = WorkItem.__table__, ProcessInstance.__table__, HumanTask.__table__
    first_item = _next_id(session, items_t)
    first_inst = _next_id(session, inst_t)
    first_task = _next_id(session, tasks_t)
    plan: list[tuple[int, bool, int, int]] = []  # (department, completed, ready task index, created minute)
    for n in range(count):
        done = rng.random() < completed_share
        plan.append((department_ids[n % len(department_ids)], done, rng.randrange(len(SERVICE_ITEM_TASKS)),
                     n * 15))

    def item_rows() -> Iterable[tuple[Any, ...]]:
        for n, (dept, done, ready, minute) in enumerate(plan):
            created = EPOCH + timedelta(minutes=minute)
            yield (first_item + n, contract_id, line_id, dept, f"{code_prefix}-{n:07d}", f"压测事项 {n}",
                   ["pc", "mobile"], "new" if n % 3 else "iteration", Decimal("1.00"), {},
                   "completed" if done else "active", "done" if done else SERVICE_ITEM_TASKS[ready][4],
                   created, created + timedelta(days=30) if done else None)

    bulk_insert(session, items_t, ["id", "contract_id", "service_line_id", "department_id", "code", "name",
                                   "channels", "mode", "difficulty", "attributes", "status", "stage",
                                   "created_at", "completed_at"], item_rows())

    def instance_rows() -> Iterable[tuple[Any, ...]]:
        for n, (_dept, done, _ready, minute) in enumerate(plan):
            created = EPOCH + timedelta(minutes=minute)
            yield (first_inst + n, first_item + n, definition_id, PLACEHOLDER_STATE, 1,
                   "completed" if done else "running", created, created)

    bulk_insert(session, inst_t, ["id", "item_id", "definition_id", "state", "version", "status",
                                  "created_at", "updated_at"], instance_rows())

    ready_by_role: dict[str, int] = {}
    impl_ids = list(implementer_ids)

    def task_rows() -> Iterable[tuple[Any, ...]]:
        task_id = first_task
        for n, (dept, done, ready, minute) in enumerate(plan):
            base = EPOCH + timedelta(minutes=minute)
            # History: the model's tasks in order, looping back (returns) when the history is longer.
            for k in range(tasks_per_item):
                last = k == tasks_per_item - 1
                back = tasks_per_item - 1 - k
                index = ready if last and not done else (ready - back) % len(SERVICE_ITEM_TASKS)
                name, role, form, gate, stage = SERVICE_ITEM_TASKS[index]
                created = base + timedelta(hours=k)
                is_open = last and not done
                assignee = None
                if is_open:
                    ready_by_role[role] = ready_by_role.get(role, 0) + 1
                    if role == "implementer" and impl_ids and rng.random() < claimed_share:
                        assignee = impl_ids[task_id % len(impl_ids)]
                yield (task_id, first_inst + n, first_item + n, f"00000000-0000-4000-8000-{k:012x}", name,
                       name, role, role, dept if role == "dept_reviewer" else None, form, gate, stage,
                       "ready" if is_open else "completed", assignee, created,
                       None if is_open else created + timedelta(minutes=30))
                task_id += 1

    rows = bulk_insert(session, tasks_t, ["id", "instance_id", "item_id", "spiff_task_id", "spec_name",
                                          "title", "lane", "role", "department_id", "form", "gate", "stage", "status",
                                          "assignee_id", "created_at", "completed_at"], task_rows())
    for table in (items_t, inst_t, tasks_t):
        _fix_sequence(session, table)
    session.flush()
    return BulkItems(first_item, count, rows, ready_by_role)


def bulk_workload(session: Session, item_ids: Sequence[int], count: int, seed: int = 11) -> int:
    """`count` workload entries (one per item and channel, cycling over `item_ids`), as tallies write them."""
    rng = random.Random(seed)
    items = session.execute(select(WorkItem.id, WorkItem.contract_id, WorkItem.service_line_id,
                                   WorkItem.department_id, WorkItem.mode, WorkItem.created_at)
                            .where(WorkItem.id.between(min(item_ids), max(item_ids)))).all()
    wanted = set(item_ids)
    by_id = {row[0]: row for row in items if row[0] in wanted}
    prices = {"pc": Decimal("45000.00"), "mobile": Decimal("72000.00")}
    table = WorkloadEntry.__table__
    first = _next_id(session, table)

    def rows() -> Iterable[tuple[Any, ...]]:
        n = 0
        while n < count:
            for item_id in item_ids:
                if n >= count:
                    return
                item = by_id.get(item_id)
                if item is None:
                    continue
                channel = "pc" if (n // len(item_ids)) % 2 == 0 else "mobile"
                difficulty = Decimal(rng.choice(["1.00", "1.20", "1.50"]))
                price = prices[channel]
                yield (first + n, item[0], item[1], item[2], item[3], channel, item[4], Decimal("1.00"),
                       difficulty, price, (price * difficulty).quantize(Decimal("0.01")),
                       item[5] + timedelta(days=40), f"bench:item:{item[0]}:channel:{channel}:{n}")
                n += 1

    written = bulk_insert(session, table, ["id", "item_id", "contract_id", "service_line_id", "department_id",
                                           "channel", "mode", "units", "difficulty", "unit_price", "amount",
                                           "tallied_at", "tally_key"], rows())
    _fix_sequence(session, table)
    session.flush()
    return written


def clone_items(session: Session, template_item_id: int, count: int, code_prefix: str = "CLONE") -> list[int]:
    """`count` copies of one item as it stands: same process state, open tasks and stored artefacts.

    The copies are fully workable (they can be completed through the API); their artefact rows point at
    the template's stored objects, so gates pass without uploading anything again.
    """
    item = session.get(WorkItem, template_item_id)
    assert item is not None, f"no item {template_item_id}"
    instance = session.execute(select(ProcessInstance).where(ProcessInstance.item_id == item.id)).scalar_one()
    open_tasks = list(session.scalars(select(HumanTask).where(HumanTask.item_id == item.id,
                                                              HumanTask.status == "ready")))
    artefacts = list(session.scalars(select(Artefact).where(Artefact.item_id == item.id,
                                                            Artefact.status == "stored")))
    items_t, inst_t, tasks_t, art_t = (WorkItem.__table__, ProcessInstance.__table__, HumanTask.__table__,
                                       Artefact.__table__)
    first_item, first_inst = _next_id(session, items_t), _next_id(session, inst_t)
    first_task, first_art = _next_id(session, tasks_t), _next_id(session, art_t)
    now = datetime.now(UTC)
    ids = [first_item + n for n in range(count)]
    bulk_insert(session, items_t, ["id", "contract_id", "service_line_id", "department_id", "code", "name",
                                   "channels", "mode", "difficulty", "attributes", "status", "stage",
                                   "created_at", "created_by_id"],
                ((i, item.contract_id, item.service_line_id, item.department_id, f"{code_prefix}-{n:06d}",
                  f"{item.name} #{n}", list(item.channels), item.mode, item.difficulty, dict(item.attributes),
                  "active", item.stage, now, item.created_by_id) for n, i in enumerate(ids)))
    bulk_insert(session, inst_t, ["id", "item_id", "definition_id", "state", "version", "status",
                                  "next_timer_at", "created_at", "updated_at"],
                ((first_inst + n, i, instance.definition_id, instance.state, 1, instance.status,
                  instance.next_timer_at, now, now) for n, i in enumerate(ids)))
    task_cols = ["instance_id", "item_id", "spiff_task_id", "spec_name", "title", "lane", "role",
                 "department_id", "per_department", "form", "gate", "stage", "review_of", "status", "due_at",
                 "due_warning", "return_comment", "created_at"]

    def task_rows() -> Iterable[tuple[Any, ...]]:
        tid = first_task
        for n, i in enumerate(ids):
            for t in open_tasks:
                yield (tid, first_inst + n, i) + tuple(getattr(t, c) for c in task_cols[2:])
                tid += 1

    bulk_insert(session, tasks_t, ["id", *task_cols], task_rows())
    art_cols = ["kind", "filename", "bucket", "key", "version_id", "sha256", "size", "media_type",
                "uploaded_by_id", "uploaded_at", "department_id", "status"]

    def art_rows() -> Iterable[tuple[Any, ...]]:
        aid = first_art
        for i in ids:
            for a in artefacts:
                yield (aid, i) + tuple(getattr(a, c) for c in art_cols)
                aid += 1

    bulk_insert(session, art_t, ["id", "item_id", *art_cols], art_rows())
    for table in (items_t, inst_t, tasks_t, art_t):
        _fix_sequence(session, table)
    session.flush()
    return ids


def bulk_artefacts(session: Session, item_id: int, objects: Sequence[tuple[str, str | None, str, int]],
                   uploader_id: int, kind: str = "test_report", media_type: str = "application/pdf",
                   bucket: str = "itemgate") -> list[int]:
    """Artefact rows for objects already in the store: (key, version_id, sha256, size) each."""
    table = Artefact.__table__
    first = _next_id(session, table)
    now = datetime.now(UTC)
    bulk_insert(session, table, ["id", "item_id", "kind", "filename", "bucket", "key", "version_id", "sha256",
                                 "size", "media_type", "uploaded_by_id", "uploaded_at", "status"],
                ((first + n, item_id, kind, f"bench-{n:05d}.pdf", bucket, key, version, sha, size, media_type,
                  uploader_id, now, "stored") for n, (key, version, sha, size) in enumerate(objects)))
    _fix_sequence(session, table)
    session.flush()
    return [first + n for n in range(len(objects))]


def fast_forward(session: Session, item_id: int, steps: int,
                 data_for: Callable[[str], dict[str, Any]]) -> int:
    """Advance an item's process by up to `steps` human tasks in memory, with the real model, then store
    the state and the task rows as `complete_task` leaves them. Returns how many tasks were completed.

    No API, gates or audit: this builds long histories (returns looping) fast. Only tasks whose spec
    already has a row on the item can be projected, so the loop stops at any other task.
    """
    from engine.runtime import spiff

    instance = session.execute(select(ProcessInstance).where(ProcessInstance.item_id == item_id)).scalar_one()
    workflow, model = spiff.load_workflow(instance)
    rows = list(session.scalars(select(HumanTask).where(HumanTask.item_id == item_id).order_by(HumanTask.id)))
    proto = {r.spec_name: r for r in rows}
    open_rows = {r.spiff_task_id: r for r in rows if r.status == "ready"}
    done: list[tuple[str, str, dict[str, Any]]] = []
    for _ in range(steps):
        ready = spiff.ready_human_tasks(workflow)
        if not ready or ready[0].task_spec.name not in proto:
            break
        task = ready[0]
        data = data_for(task.task_spec.name)
        task.data.update(data)
        task.run()
        workflow.do_engine_steps()
        done.append((str(task.id), task.task_spec.name, data))
    now = datetime.now(UTC)
    copied = ["instance_id", "item_id", "spec_name", "title", "lane", "role", "department_id", "form", "gate",
              "stage", "review_of"]
    new_rows: list[tuple[Any, ...]] = []
    base = now - timedelta(seconds=len(done) + 1)
    for n, (tid, name, data) in enumerate(done):
        at = base + timedelta(seconds=n)
        if tid in open_rows:
            row = open_rows.pop(tid)
            row.status, row.completed_at, row.data = "completed", at, data
            continue
        new_rows.append((tid, *(getattr(proto[name], c) for c in copied), "completed", at, at, data))
    for task in spiff.ready_human_tasks(workflow):
        if task.task_spec.name not in proto:
            raise ValueError(f"{task.task_spec.name} became ready but item {item_id} has no row of it to copy; "
                             "fast-forward loops whose tasks the item has already had")
        if str(task.id) not in open_rows:
            new_rows.append((str(task.id), *(getattr(proto[task.task_spec.name], c) for c in copied), "ready",
                             now, None, None))
    for row in open_rows.values():
        row.status, row.completed_at = "cancelled", now
    instance.state = spiff.dumps(workflow, model)
    instance.version += 1
    instance.updated_at = now
    session.flush()
    bulk_insert(session, HumanTask.__table__, ["spiff_task_id", *copied, "status", "created_at", "completed_at",
                                               "data"], new_rows)
    session.flush()
    return len(done)


def reachable_steps(session: Session, item_id: int, limit: int,
                    data_for: Callable[[str], dict[str, Any]]) -> tuple[int, str | None]:
    """How many human tasks `fast_forward` could complete (at most `limit`) before the library fails.

    Works on a throw-away copy of the state; returns (steps, error text or None).
    """
    from engine.runtime import spiff

    instance = session.execute(select(ProcessInstance).where(ProcessInstance.item_id == item_id)).scalar_one()
    workflow, model = spiff.load_workflow(instance)
    names = set(session.scalars(select(HumanTask.spec_name).where(HumanTask.item_id == item_id)))
    for n in range(limit):
        ready = spiff.ready_human_tasks(workflow)
        if not ready or ready[0].task_spec.name not in names:
            return n, None
        task = ready[0]
        task.data.update(data_for(task.task_spec.name))
        try:
            task.run()
            workflow.do_engine_steps()
        except RecursionError as exc:
            return n, f"RecursionError: {exc}"
    return limit, None


# ---------------------------------------------------------------- row 8: pages at scale

def bulk_settlements(session: Session, *, contract_id: int, definition_id: int, entry_ids: Sequence[int],
                     count: int, lines_each: int, created_by_id: int | None = None, seed: int = 13) -> int:
    """`count` ad-hoc settlements of the contract, each claiming `lines_each` of `entry_ids` (in order, never one
    entry twice) with a few notes: three in four approved with frozen figures, the rest still moving (draft,
    submitted, first review), as a contract's claim list looks after some years. Returns the lines written."""
    from storage.models import Settlement, SettlementLine, SettlementNote

    rng = random.Random(seed)
    s_t, l_t, n_t = Settlement.__table__, SettlementLine.__table__, SettlementNote.__table__
    first_s, first_l, first_n = _next_id(session, s_t), _next_id(session, l_t), _next_id(session, n_t)
    amounts = dict(session.execute(select(WorkloadEntry.id, WorkloadEntry.amount)
                                   .where(WorkloadEntry.id.in_(list(entry_ids[:count * lines_each])))).all())
    moving = ["draft", "submitted", "first_review"]
    plan = []
    for n in range(count):
        start = (EPOCH + timedelta(days=30 * n)).date()
        claimed = entry_ids[n * lines_each:(n + 1) * lines_each]
        gross = sum((amounts.get(e, Decimal("0")) for e in claimed), Decimal("0.00"))
        status = "approved" if n % 4 else moving[(n // 4) % 3]
        plan.append((n, start, claimed, gross, status))

    def settlement_rows() -> Iterable[tuple[Any, ...]]:
        for n, start, _claimed, gross, status in plan:
            at = EPOCH + timedelta(days=30 * n + 35)
            approved = status == "approved"
            yield (first_s + n, contract_id, f"压测结算 {n + 1:03d}", start, start + timedelta(days=29), status,
                   definition_id, PLACEHOLDER_STATE, 1, None if approved else "pm_prepare",
                   None if approved else "pm", 1, gross if approved else None,
                   Decimal("0.0000") if approved else None, Decimal("0.00") if approved else None,
                   Decimal("0.0000") if approved else None, Decimal("0.00") if approved else None,
                   gross if approved else None, at if approved else None, created_by_id, at, at, False)

    bulk_insert(session, s_t, ["id", "contract_id", "label", "period_start", "period_end", "status",
                               "definition_id", "state", "version", "current_task", "current_lane", "round",
                               "gross_amount", "penalty_rate", "penalty_amount", "deduction_rate",
                               "deduction_amount", "net_amount", "approved_at", "created_by_id", "created_at",
                               "updated_at", "revision_late"], settlement_rows())

    def line_rows() -> Iterable[tuple[Any, ...]]:
        k = 0
        for n, _start, claimed, _gross, _status in plan:
            for entry in claimed:
                yield (first_l + k, first_s + n, entry, EPOCH + timedelta(days=30 * n + 31), created_by_id, False)
                k += 1

    lines = bulk_insert(session, l_t, ["id", "settlement_id", "entry_id", "added_at", "added_by_id", "carried"],
                        line_rows())

    def note_rows() -> Iterable[tuple[Any, ...]]:
        k = 0
        for n, _start, claimed, _gross, _status in plan:
            for kind in ("submitted", "comment", "first_review_approve"):
                entry = claimed[rng.randrange(len(claimed))] if kind == "comment" and claimed else None
                yield (first_n + k, first_s + n, 1, kind, entry, f"压测备注 {kind}", created_by_id,
                       EPOCH + timedelta(days=30 * n + 32))
                k += 1

    bulk_insert(session, n_t, ["id", "settlement_id", "round", "kind", "entry_id", "text", "user_id", "at"],
                note_rows())
    for table in (s_t, l_t, n_t):
        _fix_sequence(session, table)
    session.flush()
    return lines


def bulk_notifications(session: Session, user_ids: Sequence[int], item_ids: Sequence[int], count: int,
                       seed: int = 17) -> int:
    """`count` notifications spread over `user_ids` (the first user gets a tenth of them), about half read."""
    from storage.models import Notification

    rng = random.Random(seed)
    table = Notification.__table__
    first = _next_id(session, table)
    kinds = ["new_task", "returned", "reminder", "escalation", "handover", "difficulty"]

    def rows() -> Iterable[tuple[Any, ...]]:
        for n in range(count):
            user = user_ids[0] if n % 10 == 0 else user_ids[n % len(user_ids)]
            item = item_ids[rng.randrange(len(item_ids))]
            kind = kinds[n % len(kinds)]
            at = EPOCH + timedelta(minutes=5 * n)
            yield (first + n, user, item, kind, f"压测通知 {n}：事项 {item} 有新的待办", 
                   "请补充材料" if kind == "returned" else None, at,
                   at + timedelta(hours=2) if rng.random() < 0.5 else None)

    written = bulk_insert(session, table, ["id", "user_id", "item_id", "kind", "message", "comment",
                                           "created_at", "read_at"], rows())
    _fix_sequence(session, table)
    session.flush()
    return written


def long_history(session: Session, item_id: int, tasks: int, events_per_task: int = 2) -> None:
    """Give one generated item a long history: `tasks` more completed task rows (returns looping through the
    model) and `events_per_task` audit events on each (claimed, completed), as years of rework leave."""
    from storage.models import AuditEvent

    tasks_t, audit_t = HumanTask.__table__, AuditEvent.__table__
    inst_id, dept = session.execute(select(ProcessInstance.id, WorkItem.department_id)
                                    .join(WorkItem, WorkItem.id == ProcessInstance.item_id)
                                    .where(ProcessInstance.item_id == item_id)).one()
    first_task, first_event = _next_id(session, tasks_t), _next_id(session, audit_t)
    base = EPOCH - timedelta(days=400)

    def task_rows() -> Iterable[tuple[Any, ...]]:
        for k in range(tasks):
            name, role, form, gate, stage = SERVICE_ITEM_TASKS[k % len(SERVICE_ITEM_TASKS)]
            created = base + timedelta(hours=k)
            yield (first_task + k, inst_id, item_id, f"00000000-0000-4000-9000-{k:012x}", name, name, role, role,
                   dept if role == "dept_reviewer" else None, form, gate, stage, "completed", None, created,
                   created + timedelta(minutes=30))

    bulk_insert(session, tasks_t, ["id", "instance_id", "item_id", "spiff_task_id", "spec_name", "title", "lane",
                                   "role", "department_id", "form", "gate", "stage", "status", "assignee_id",
                                   "created_at", "completed_at"], task_rows())

    def event_rows() -> Iterable[tuple[Any, ...]]:
        n = 0
        for k in range(tasks):
            for e in range(events_per_task):
                kind = "task.claimed" if e == 0 else "task.completed"
                at = base + timedelta(hours=k, minutes=10 * (e + 1))
                digest = f"{item_id:016x}{first_event + n:016x}".rjust(64, "0")
                yield (first_event + n, at, None, "impl", "implementer", kind, "task", str(first_task + k),
                       "success", {"bench": True}, "0" * 64, digest)
                n += 1

    bulk_insert(session, audit_t, ["id", "at", "user_id", "username", "role", "event_type", "target_type",
                                   "target_id", "outcome", "detail", "prev_hash", "hash"], event_rows())
    for table in (tasks_t, audit_t):
        _fix_sequence(session, table)
    session.flush()

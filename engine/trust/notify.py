"""Notifications: one notify() for every event, a row per recipient with its own read state, and the outbox rows
for e-mail and chat delivery written in the same transaction (engine/trust/delivery.py sends them later)."""
from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import or_, select, update
from sqlalchemy.orm import Session

from engine.errors import NotFound
from engine.trust import audit
from engine.trust.access import may_act_on
from storage.models import HumanTask, Notification, NotificationChannel, NotificationDelivery, User

KINDS = ("returned", "new_task", "difficulty", "handover", "reminder", "escalation", "settlement")
# What each kind is called in a message title (Chinese is the source language; the web translates).
KIND_TITLES = {
    "returned": "任务被退回",
    "new_task": "新任务",
    "difficulty": "难度系数待确认",
    "handover": "任务已转交给您",
    "reminder": "任务超期提醒",
    "escalation": "任务超期升级",
    "settlement": "结算待处理",
}
CHANNEL_KINDS = ("email", "webhook")
OWNER_TYPES = ("user", "department")


@dataclass(frozen=True)
class Event:
    """What happened, said once; notify() turns it into a row per recipient and the outbox messages."""

    kind: str
    message: str
    item_id: int | None = None
    task_id: int | None = None
    settlement_id: int | None = None
    comment: str | None = None
    # The group the event was addressed to, if any (kept on each row for the inbox's "why am I told").
    role: str | None = None
    department_id: int | None = None


def notify(session: Session, event: Event, recipients: Iterable[User], *, actor: audit.Actor = audit.SYSTEM,
           now: datetime | None = None, exclude: int | None = None) -> list[Notification]:
    """Notify each recipient once (inactive users and `exclude`, usually the person who caused the event, are
    skipped); queue deliveries to their channels and to their departments' channels. Flushes, never commits:
    the notification is part of the caller's unit of work, and sending happens after it commits."""
    if event.kind not in KINDS:
        raise ValueError(f"unknown notification kind {event.kind!r}")
    now = now or datetime.now(UTC)
    people: dict[int, User] = {}
    for user in recipients:
        if user.active and user.id != exclude:
            people.setdefault(user.id, user)
    if not people:
        return []
    rows = [Notification(user_id=uid, role=event.role, department_id=event.department_id, item_id=event.item_id,
                         task_id=event.task_id, settlement_id=event.settlement_id, kind=event.kind,
                         message=event.message[:400], comment=event.comment, created_at=now)
            for uid in sorted(people)]
    session.add_all(rows)
    session.flush()
    _queue_deliveries(session, event, rows, people, now)
    audit.record(session, actor, f"notification.{event.kind}", target_type="item" if event.item_id else
                 "settlement" if event.settlement_id else None,
                 target_id=event.item_id or event.settlement_id, task=event.task_id,
                 to_users=sorted(people), to_role=event.role)
    return rows


def _queue_deliveries(session: Session, event: Event, rows: list[Notification], people: dict[int, User],
                      now: datetime) -> None:
    departments = {u.department_id for u in people.values() if u.department_id is not None}
    owner = or_(
        (NotificationChannel.owner_type == "user") & NotificationChannel.owner_id.in_(list(people)),
        (NotificationChannel.owner_type == "department") & NotificationChannel.owner_id.in_(list(departments)))
    channels = list(session.scalars(select(NotificationChannel).where(owner, NotificationChannel.enabled.is_(True))
                                    .order_by(NotificationChannel.id)))
    if not channels:
        return
    by_user = {row.user_id: row.id for row in rows}
    title = f"[ItemGate] {KIND_TITLES.get(event.kind, event.kind)}"
    body = event.message + (f"\n意见：{event.comment}" if event.comment else "")
    for channel in channels:
        # A department's robot gets the event once, however many of its members it concerns.
        note = by_user.get(channel.owner_id) if channel.owner_type == "user" else rows[0].id
        session.add(NotificationDelivery(notification_id=note, channel_id=channel.id, kind=channel.kind,
                                         target=channel.target, title=title[:200], body=body, status="pending",
                                         attempts=0, next_attempt_at=now, created_at=now))
    session.flush()


# ---------------------------------------------------------------- who is told

def queue_members(session: Session, task: HumanTask) -> list[User]:
    """Every active user who could take the task from its queue: its role, and its department where it has one
    (the same rule the engine applies when they act, engine.trust.access.may_act_on)."""
    people = session.scalars(select(User).where(User.role == task.role, User.active.is_(True)).order_by(User.id))
    return [p for p in people if may_act_on(p, task)]


def role_members(session: Session, role: str, department_id: int | None = None) -> list[User]:
    query = select(User).where(User.role == role, User.active.is_(True))
    if department_id is not None:
        query = query.where(User.department_id == department_id)
    return list(session.scalars(query.order_by(User.id)))


def previous_doer(session: Session, task: HumanTask) -> User | None:
    """Whose work came back with a return: who last completed this step of the item."""
    return session.scalars(select(User).join(HumanTask, HumanTask.completed_by_id == User.id).where(
        HumanTask.item_id == task.item_id, HumanTask.spec_name == task.spec_name,
        HumanTask.status == "completed", HumanTask.id != task.id).order_by(HumanTask.id.desc()).limit(1)).first()


def tasks_created(session: Session, created: list[HumanTask], *, return_comment: str | None, actor: audit.Actor,
                  now: datetime, exclude: int | None) -> None:
    """New human tasks: a return goes to the person whose work came back (with the comment), else the task's
    whole queue is told; a difficulty step (the PM's proposal, the third party's confirmation) is flagged as such."""
    for task in created:
        item = task.item
        where = f"事项 {item.code}「{item.name}」"
        if return_comment is not None:
            doer = previous_doer(session, task)
            if doer is not None and doer.active:
                notify(session, Event("returned", f"您办理的任务「{task.title}」（{where}）被退回，请修改后重新提交",
                                      item_id=task.item_id, task_id=task.id, comment=return_comment),
                       [doer], actor=actor, now=now)
                continue
        kind = "difficulty" if task.form in ("difficulty_confirmation", "difficulty_review") else "new_task"
        text = (f"{where}的难度系数待您确认" if kind == "difficulty"
                else f"新任务「{task.title}」（{where}）已进入您的待办队列")
        if return_comment is not None:
            kind = "returned"
            text = f"任务「{task.title}」（{where}）被退回，请修改后重新提交"
        notify(session, Event(kind, text, item_id=task.item_id, task_id=task.id, comment=return_comment,
                              role=task.role, department_id=task.department_id),
               queue_members(session, task), actor=actor, now=now, exclude=exclude)


# ---------------------------------------------------------------- reading

def mine(user: User) -> Any:
    """The notifications a user reads: their own rows (and, for rows written before they were per recipient,
    none: the migration fanned those out)."""
    return Notification.user_id == user.id


def mark_read(session: Session, user: User, ids: list[int] | None, now: datetime) -> int:
    """Mark the user's own notifications read (all unread ones when `ids` is None); nobody else's change."""
    stmt = update(Notification).where(mine(user), Notification.read_at.is_(None))
    if ids is not None:
        stmt = stmt.where(Notification.id.in_(ids))
    result = session.execute(stmt.values(read_at=now).execution_options(synchronize_session=False))
    return int(getattr(result, "rowcount", 0) or 0)


def read_mine(session: Session, user: User, note_id: int, now: datetime) -> Notification:
    """Open one of the user's own notifications, marking it read for them alone; anyone else's answers 404."""
    note = session.execute(select(Notification).where(Notification.id == note_id, mine(user))).scalar()
    if note is None:
        raise NotFound(f"notification {note_id} not found")
    mark_read(session, user, [note.id], now)
    return note


def unread_count(session: Session, user: User) -> int:
    from sqlalchemy import func

    return int(session.execute(select(func.count(Notification.id)).where(
        mine(user), Notification.read_at.is_(None))).scalar_one())

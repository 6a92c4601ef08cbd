"""Notifications: one notify() for every event, a row per recipient with its own read state, and the outbox rows
for e-mail and chat delivery written in the same transaction (engine/trust/delivery.py sends them later)."""
from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
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
LANGUAGES = ("zh", "en")
log = logging.getLogger(__name__)

# What notifications say, by key, with `{name}` placeholders filled from the event's params. Chinese is the source
# language: each row keeps its key and params, so every reader sees it in their own language (the web and API
# translate the template, and the names in it, through the gettext catalog; e-mail and robots get the recipient's
# language). The Chinese text is also stored as the row's `message`, which is all a row written before keys has.
MESSAGES: dict[str, str] = {
    "task.returned_to_you": "您办理的任务「{task}」（事项 {code}「{name}」）被退回，请修改后重新提交",
    "task.returned": "任务「{task}」（事项 {code}「{name}」）被退回，请修改后重新提交",
    "task.new_in_queue": "新任务「{task}」（事项 {code}「{name}」）已进入您的待办队列",
    "difficulty.waiting": "事项 {code}「{name}」的难度系数待您确认",
    "task.handed_over": "{by} 将任务「{task}」（事项 {code}「{name}」）转交给您",
    "task.overdue_reminder": "任务「{task}」（事项 {code}）已超过办理期限 {due}，请尽快处理",
    "task.overdue_escalation": "任务「{task}」（事项 {code}）超期未办理，期限 {due}",
    "settlement.step_waiting": "结算申报「{label}」待您处理：{step}（{status}）",
}
# Params that are names from the models (step titles, settlement states), said in the reader's language too;
# the others (codes, item names, people, times) are shown as written.
TRANSLATED_PARAMS = frozenset({"task", "step", "status"})
# How a delivery says the return's comment.
COMMENT_LABEL = "意见"

Translate = Callable[[str], str]


def _same(text: str) -> str:
    return text


# Who turns a language into a translation function for deliveries written outside a request (the app factory
# installs the web's gettext catalog: install_translations). Without one, deliveries are in Chinese.
_translations: Callable[[str], Translate] | None = None


def install_translations(provider: Callable[[str], Translate] | None) -> None:
    global _translations
    _translations = provider


def translator(language: str | None) -> Translate:
    """The translation function for a language (Chinese, the source language, when none or unknown)."""
    if language not in LANGUAGES or language == "zh" or _translations is None:
        return _same
    return _translations(language)


def render(key: str, params: Mapping[str, Any], translate: Translate = _same) -> str:
    """A notification's text in the language `translate` says it in; KeyError when the key is unknown or its
    template wants a param the event does not have."""
    template = translate(MESSAGES[key])
    values = {k: translate(v) if k in TRANSLATED_PARAMS and isinstance(v, str) else v for k, v in params.items()}
    return template.format_map(values)


def text_of(note: Notification, translate: Translate = _same) -> str:
    """What a notification says to its reader: from its key and params in the reader's language; a row written
    before keys (or whose key a later version dropped) shows its stored text."""
    if note.message_key and note.message_key in MESSAGES:
        try:
            return render(note.message_key, note.params or {}, translate)
        except (KeyError, IndexError, ValueError):
            log.warning("notification %s: params do not fit its message %s", note.id, note.message_key)
    return note.message


@dataclass(frozen=True)
class Event:
    """What happened, said once; notify() turns it into a row per recipient and the outbox messages. `key` names
    its text in MESSAGES, `params` fill it."""

    kind: str
    key: str
    params: Mapping[str, Any] = field(default_factory=dict)
    item_id: int | None = None
    task_id: int | None = None
    settlement_id: int | None = None
    comment: str | None = None
    # The group the event was addressed to, if any (kept on each row for the inbox's "why am I told").
    role: str | None = None
    department_id: int | None = None

    @property
    def message(self) -> str:
        """The text in Chinese (the source language), as stored on each row."""
        return render(self.key, self.params)


def notify(session: Session, event: Event, recipients: Iterable[User], *, actor: audit.Actor = audit.SYSTEM,
           now: datetime | None = None, exclude: int | None = None) -> list[Notification]:
    """Notify each recipient once (inactive users and `exclude`, usually the person who caused the event, are
    skipped); queue deliveries to their channels and to their departments' channels. Flushes, never commits:
    the notification is part of the caller's unit of work, and sending happens after it commits."""
    if event.kind not in KINDS:
        raise ValueError(f"unknown notification kind {event.kind!r}")
    if event.key not in MESSAGES:
        raise ValueError(f"unknown notification message {event.key!r}")
    message = event.message  # a param its template wants and the caller forgot fails here, in the caller's test
    now = now or datetime.now(UTC)
    people: dict[int, User] = {}
    for user in recipients:
        if user.active and user.id != exclude:
            people.setdefault(user.id, user)
    if not people:
        return []
    rows = [Notification(user_id=uid, role=event.role, department_id=event.department_id, item_id=event.item_id,
                         task_id=event.task_id, settlement_id=event.settlement_id, kind=event.kind,
                         message=message[:400], message_key=event.key, params=dict(event.params),
                         comment=event.comment, created_at=now)
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
    for channel in channels:
        # A department's robot gets the event once, however many of its members it concerns, in Chinese (a
        # group has no one language); a person's own channel, in the language they chose.
        person = people.get(channel.owner_id) if channel.owner_type == "user" else None
        title, body = delivery_text(event, translator(person.language if person is not None else None))
        note = by_user.get(channel.owner_id) if channel.owner_type == "user" else rows[0].id
        session.add(NotificationDelivery(notification_id=note, channel_id=channel.id, kind=channel.kind,
                                         target=channel.target, title=title[:200], body=body, status="pending",
                                         attempts=0, next_attempt_at=now, created_at=now))
    session.flush()


def delivery_text(event: Event, translate: Translate) -> tuple[str, str]:
    """The title and body of an e-mail or chat message about the event, in the language `translate` says."""
    title = f"[ItemGate] {translate(KIND_TITLES.get(event.kind, event.kind))}"
    body = render(event.key, event.params, translate)
    if event.comment:
        body += f"\n{translate(COMMENT_LABEL)}：{event.comment}"
    return title, body


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
        params = {"task": task.title, "code": item.code, "name": item.name}
        if return_comment is not None:
            doer = previous_doer(session, task)
            if doer is not None and doer.active:
                notify(session, Event("returned", "task.returned_to_you", params, item_id=task.item_id,
                                      task_id=task.id, comment=return_comment),
                       [doer], actor=actor, now=now)
                continue
        kind = "difficulty" if task.form in ("difficulty_confirmation", "difficulty_review") else "new_task"
        key = "difficulty.waiting" if kind == "difficulty" else "task.new_in_queue"
        if return_comment is not None:
            kind, key = "returned", "task.returned"
        notify(session, Event(kind, key, params, item_id=task.item_id, task_id=task.id, comment=return_comment,
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

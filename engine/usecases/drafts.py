"""Form drafts: what someone typed into a task but has not submitted, kept per task and person."""
from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

import forms
from engine.errors import Conflict, Invalid, PayloadTooLarge
from storage.models import HumanTask, TaskDraft, User

MAX_TEXT = 4000
MAX_BYTES = 64 * 1024


def clean_draft(form_key: str, data: Any) -> dict[str, Any]:
    """Only the form's own fields, as text or lists of text within the form's limits; nothing is validated
    beyond size (a draft may be half done)."""
    if not isinstance(data, dict):
        raise Invalid("a draft is an object of field values", code="invalid_draft")
    try:
        names = set(forms.schema_for(form_key).fields)
    except forms.UnknownForm:
        names = set()
    out: dict[str, Any] = {}
    for key, value in data.items():
        if key not in names or value is None:
            continue
        if isinstance(value, list):
            out[key] = [str(v)[:MAX_TEXT] for v in value[:50]]
        elif isinstance(value, bool | int | float):
            out[key] = value
        else:
            out[key] = str(value)[:MAX_TEXT]
    if len(json.dumps(out, ensure_ascii=False).encode()) > MAX_BYTES:
        raise PayloadTooLarge("the draft is too large", code="invalid_draft")
    return out


def load_draft(session: Session, task: HumanTask, user: User) -> dict[str, Any] | None:
    row = session.scalars(select(TaskDraft).where(TaskDraft.task_id == task.id,
                                                  TaskDraft.user_id == user.id)).first()
    return dict(row.data) if row is not None else None


def save_draft(session: Session, task: HumanTask, user: User, data: Any, now: datetime) -> dict[str, Any]:
    """Insert or replace the caller's draft of an open task (two saves at once: the later one wins)."""
    if task.status != "ready":
        raise Conflict(f"task {task.id} is no longer open", code="task_not_ready")
    clean = clean_draft(task.form, data)
    row = session.scalars(select(TaskDraft).where(TaskDraft.task_id == task.id,
                                                  TaskDraft.user_id == user.id)).first()
    if row is not None:
        row.data, row.updated_at = clean, now
        session.flush()
        return clean
    try:
        with session.begin_nested():
            session.add(TaskDraft(task_id=task.id, user_id=user.id, data=clean, updated_at=now))
    except IntegrityError:  # a save that raced this one inserted first: update it
        row = session.scalars(select(TaskDraft).where(TaskDraft.task_id == task.id,
                                                      TaskDraft.user_id == user.id)).one()
        row.data, row.updated_at = clean, now
        session.flush()
    return clean


def discard_drafts(session: Session, task_id: int) -> None:
    session.execute(delete(TaskDraft).where(TaskDraft.task_id == task_id))

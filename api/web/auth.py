"""Web sessions: the Flask-Login user wrapper, its loader, and the engine context of a web request."""
from __future__ import annotations

from typing import Any

from flask import current_app, g
from flask_login import UserMixin, current_user

from api.extensions import db
from engine.workflow import Ctx
from storage.models import User


class SessionUser(UserMixin):
    """Wraps the stored User for Flask-Login; storage stays free of web concerns."""

    def __init__(self, row: User):
        self.row = row

    def get_id(self) -> str:
        return str(self.row.id)

    @property
    def is_active(self) -> bool:
        return bool(self.row.active)

    def __getattr__(self, name: str) -> Any:
        # Only reached for names not defined here: username, role, department, display_name …
        return getattr(self.row, name)


def load_session_user(user_id: str) -> SessionUser | None:
    try:
        row = db.session.get(User, int(user_id))
    except (TypeError, ValueError):
        return None
    if row is None or not row.active:
        return None
    return SessionUser(row)


def me() -> User:
    """The signed-in user's stored row (routes behind the login check only)."""
    return current_user.row  # type: ignore[no-any-return]


def web_ctx() -> Ctx:
    return Ctx(session=db.session, user=me(), request_id=g.get("request_id"),
               store=current_app.extensions.get("itemgate_store"))

"""Web sessions: the Flask-Login user wrapper, the server-side session it is checked against, and the engine
context of a web request."""
from __future__ import annotations

import hashlib
import logging
import secrets
from datetime import UTC, datetime, timedelta
from typing import Any

from flask import current_app, g, request, session
from flask_login import UserMixin, current_user
from sqlalchemy import delete, select, update

from api.extensions import db
from engine.usecases.tasks import Ctx
from storage.models import User, WebSession
from storage.unit_of_work import unit_of_work

log = logging.getLogger("itemgate.web")

SESSION_ID = "sid"
# How stale `seen_at` may get before a request refreshes it (one write per session per interval, not per request).
_SEEN_EVERY = timedelta(minutes=5)


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


def _digest(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


def _agent() -> str:
    # request.remote_addr is the client's address (ITEMGATE_PROXY_HOPS lets it come from X-Forwarded-For).
    return _digest(f"{request.remote_addr or '-'}|{request.headers.get('User-Agent', '')}")


def _dead_before(now: datetime) -> datetime:
    """Rows unseen since this moment belong to cookies that have expired (the cookie lives a session lifetime
    after the last request, and `seen_at` lags that request by at most _SEEN_EVERY)."""
    return now - current_app.permanent_session_lifetime - _SEEN_EVERY


def start_web_session(user: User) -> None:
    """At sign-in (after the cookie session was cleared): a new server-side session; the cookie carries its id.
    The caller commits."""
    now = datetime.now(UTC)
    db.session.execute(delete(WebSession).where(WebSession.seen_at < _dead_before(now) - _SEEN_EVERY))
    sid = secrets.token_urlsafe(32)
    db.session.add(WebSession(sid_hash=_digest(sid), user_id=user.id, agent_hash=_agent(), created_at=now,
                              seen_at=now))
    session[SESSION_ID] = sid


def end_web_session() -> None:
    """At sign-out: the server forgets this session, so a copy of the cookie no longer signs anyone in."""
    sid = session.get(SESSION_ID)
    if isinstance(sid, str):
        db.session.execute(delete(WebSession).where(WebSession.sid_hash == _digest(sid)))


def load_session_user(user_id: str) -> SessionUser | None:
    """Flask-Login's user loader: the cookie's user, only while its server-side session exists, was made for
    this client (address and browser) and has not expired, and the user is active."""
    sid = session.get(SESSION_ID)
    try:
        uid = int(user_id)
    except (TypeError, ValueError):
        return None
    if not isinstance(sid, str):
        return None
    found = db.session.execute(
        select(User, WebSession.id, WebSession.agent_hash, WebSession.seen_at)
        .join(WebSession, WebSession.user_id == User.id)
        .where(WebSession.sid_hash == _digest(sid), User.id == uid)).first()
    if found is None:
        return None
    row, session_id, agent_hash, seen_at = found
    now = datetime.now(UTC)
    if not row.active or seen_at < _dead_before(now):
        return None
    if agent_hash != _agent():
        # Flask-Login's "strong" protection only marks a permanent session non-fresh when the client changes;
        # a session cookie presented by another client is refused here instead.
        log.warning("web session presented by another client", extra={"user": row.username})
        return None
    if seen_at < now - _SEEN_EVERY:
        g.web_session_touch = session_id  # written by the web context hook, outside the route's transaction
    return SessionUser(row)


def touch_web_session(session_id: int) -> None:
    with unit_of_work(db.session):
        db.session.execute(update(WebSession).where(WebSession.id == session_id).values(seen_at=datetime.now(UTC)))


def me() -> User:
    """The signed-in user's stored row (routes behind the login check only)."""
    return current_user.row  # type: ignore[no-any-return]


def web_ctx() -> Ctx:
    return Ctx(session=db.session, user=me(), request_id=g.get("request_id"),
               store=current_app.extensions.get("itemgate_store"), cjk_font=current_app.config["ITEMGATE"].cjk_font)

"""Accounts: ending a user's tokens and web sessions, password changes, and an administrator's changes to a user."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import delete, func, select, update
from sqlalchemy.orm import Session

from engine.errors import Conflict, FormInvalid, Invalid
from engine.trust import audit
from engine.trust.policy import ROLES, needs_department, roles_granted
from storage.models import ApiToken, Department, HumanTask, User, WebSession


@dataclass
class Revoked:
    tokens: int
    sessions: int


def _rowcount(result: Any) -> int:
    return int(getattr(result, "rowcount", 0) or 0)


def revoke_credentials(session: Session, user_id: int) -> Revoked:
    """End every API token and web session of a user at once: the next request with any of them gets 401 or
    the login page. Both are rows checked on every request, so no worker or host keeps one alive."""
    tokens = session.execute(delete(ApiToken).where(ApiToken.user_id == user_id)
                             .execution_options(synchronize_session=False))
    sessions = session.execute(delete(WebSession).where(WebSession.user_id == user_id)
                               .execution_options(synchronize_session=False))
    return Revoked(_rowcount(tokens), _rowcount(sessions))


def release_claims(session: Session, actor: audit.Actor, user_id: int, reason: str) -> list[int]:
    """Put the open tasks a user holds back into their group's queue (the user's history stays as it is)."""
    # Guarded on the holder and the status: a task completed or handed over meanwhile is not touched.
    released = session.execute(
        update(HumanTask).where(HumanTask.assignee_id == user_id, HumanTask.status == "ready")
        .values(assignee_id=None, claimed_at=None)
        .returning(HumanTask.id, HumanTask.item_id)
        .execution_options(synchronize_session=False)).all()
    for task_id, item_id in sorted(released):
        audit.record(session, actor, "task.unclaimed", target_type="task", target_id=task_id, item_id=item_id,
                     reason=reason)
    return sorted(task_id for task_id, _ in released)


def change_own_password(session: Session, actor: audit.Actor, user: User, password_hash: str) -> Revoked:
    """A user's new password: every token and web session of theirs ends, the caller's own included."""
    user.password_hash = password_hash
    revoked = revoke_credentials(session, user.id)
    audit.record(session, actor, "user.password_changed", target_type="user", target_id=user.id,
                 tokens_revoked=revoked.tokens, sessions_revoked=revoked.sessions)
    return revoked


@dataclass
class UserChange:
    """What an administrator changes; None leaves a field as it is (department: `department_given`)."""

    active: bool | None = None
    password_hash: str | None = None
    role: str | None = None
    department_id: int | None = None
    department_code: str | None = None
    department_given: bool = False

    @property
    def empty(self) -> bool:
        return (self.active is None and self.password_hash is None and self.role is None
                and not self.department_given)


@dataclass
class UserChanged:
    user: User
    revoked: Revoked | None
    released: list[int]


def _active_admins(session: Session, excluding: int) -> int:
    return int(session.execute(select(func.count(User.id)).where(
        User.role.in_(roles_granted("user.manage")), User.active.is_(True), User.id != excluding)).scalar_one())


def change_user(session: Session, actor: audit.Actor, user: User, change: UserChange) -> UserChanged:
    """Apply an administrator's change. Deactivating or resetting the password ends the user's tokens and web
    sessions at once; deactivating also returns their claimed tasks to the group queue. Role and department
    changes take effect on the user's next request (every request reads the user's row)."""
    if change.empty:
        raise FormInvalid({"_schema": ["give at least one of active, password, role, department"]})
    role = change.role if change.role is not None else user.role
    department_id = change.department_id if change.department_given else user.department_id
    if needs_department(role) and department_id is None:
        raise FormInvalid({"department": [f"required for {role}"]})
    active = user.active if change.active is None else change.active
    managers = roles_granted("user.manage")
    if user.role in managers and user.active and (role not in managers or not active) \
            and _active_admins(session, user.id) == 0:
        raise Conflict("this is the last active administrator; make another one first", code="last_admin")
    changed: dict[str, Any] = {}
    if change.role is not None and change.role != user.role:
        changed["role"] = [user.role, change.role]
        user.role = change.role
    if change.department_given and department_id != user.department_id:
        changed["department"] = [user.department_code, change.department_code]
        user.department_id = department_id
    if change.active is not None and change.active != user.active:
        changed["active"] = [user.active, change.active]
        user.active = change.active
    if change.password_hash is not None:
        changed["password"] = "reset"  # noqa: S105 - what changed, never the secret
        user.password_hash = change.password_hash
    revoked = None
    released: list[int] = []
    if change.password_hash is not None or change.active is False:
        revoked = revoke_credentials(session, user.id)
    if change.active is False:
        released = release_claims(session, actor, user.id, reason="user_deactivated")
    session.flush()
    session.expire(user, ["department"])
    audit.record(session, actor, "user.changed", target_type="user", target_id=user.id, username=user.username,
                 changes=changed, tokens_revoked=revoked.tokens if revoked else 0,
                 sessions_revoked=revoked.sessions if revoked else 0, tasks_released=released)
    return UserChanged(user, revoked, released)


def ensure_department(session: Session, code: str, name: str | None = None) -> Department:
    """The department with this code, created (named `name`, else its code) on first use."""
    dept = session.execute(select(Department).where(Department.code == code)).scalar()
    if dept is None:
        dept = Department(code=code, name=name or code)
        session.add(dept)
        session.flush()
    return dept


def create_user(session: Session, username: str, password_hash: str, role: str, department: str | None,
                display_name: str | None = None) -> User:
    """A new user (the caller authorises, hashes the password and audits); 409 `user_exists` for a taken name."""
    if role not in ROLES:
        raise Invalid(f"unknown role {role!r}", code="invalid_form", errors={"role": [f"one of {list(ROLES)}"]})
    if needs_department(role) and not department:
        raise Invalid(f"a {role} needs a department", code="invalid_form",
                      errors={"department": [f"required for {role}"]})
    if session.execute(select(User.id).where(User.username == username)).scalar() is not None:
        raise Conflict(f"user {username!r} exists", code="user_exists")
    dept = ensure_department(session, department) if department else None
    user = User(username=username, password_hash=password_hash, role=role,
                department_id=dept.id if dept else None, display_name=display_name)
    user.department = dept
    session.add(user)
    session.flush()
    return user

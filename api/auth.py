"""Authentication: password checks, bearer tokens for the API, and the current user."""
from __future__ import annotations

import hashlib
import secrets
from datetime import UTC, datetime, timedelta

from flask import current_app, g, request
from sqlalchemy import delete, select
from werkzeug.security import check_password_hash, generate_password_hash

from api.extensions import db
from engine.errors import DomainError
from storage.models import ApiToken, User

# A fixed hash to compare against when the user does not exist, so timing does not reveal which half failed.
_DUMMY_HASH = generate_password_hash("itemgate-not-a-password")


class Unauthorized(DomainError):
    status, code, title = 401, "unauthorized", "Unauthorized"


def hash_password(password: str) -> str:
    return generate_password_hash(password)


def authenticate(username: str, password: str) -> User | None:
    user = db.session.execute(select(User).where(User.username == username)).scalar()
    if user is None or not user.active:
        check_password_hash(_DUMMY_HASH, password)
        return None
    return user if check_password_hash(user.password_hash, password) else None


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def issue_token(user: User) -> tuple[str, datetime]:
    token = secrets.token_urlsafe(32)
    expires = datetime.now(UTC) + timedelta(hours=current_app.config["ITEMGATE"].token_ttl_hours)
    db.session.add(ApiToken(token_hash=_digest(token), user_id=user.id, expires_at=expires))
    return token, expires


def check_password(user: User, password: str) -> bool:
    return check_password_hash(user.password_hash, password)


def _bearer() -> str | None:
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


def revoke_bearer() -> bool:
    """End the token this request came with (the caller commits); True when there was one."""
    token = _bearer()
    if token is None:
        return False
    result = db.session.execute(delete(ApiToken).where(ApiToken.token_hash == _digest(token)))
    return bool(getattr(result, "rowcount", 0))


def user_from_bearer() -> User | None:
    token = _bearer()
    if token is None:
        return None
    found = db.session.execute(
        select(User, ApiToken.expires_at).join(ApiToken, ApiToken.user_id == User.id)
        .where(ApiToken.token_hash == _digest(token))).first()
    if found is None:
        return None
    user, expires_at = found
    return user if expires_at > datetime.now(UTC) and user.active else None


def current_user() -> User:
    user = getattr(g, "user", None)
    if user is None:
        raise Unauthorized("authentication required")
    return user

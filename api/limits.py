"""Limits on hostile input: JSON body size and depth, text no field can hold, and the login rate limits shared by
every worker."""
from __future__ import annotations

import hashlib
import json
import secrets
from datetime import UTC, datetime, timedelta
from typing import Any

from flask import Flask, current_app, g, request
from itsdangerous import BadSignature, URLSafeTimedSerializer
from sqlalchemy import delete, func, select

from api.errors import problem
from api.extensions import db
from engine import text
from engine.errors import DomainError, Invalid
from storage.models import LoginAttempt

MAX_JSON_DEPTH = 32


class TooManyAttempts(DomainError):
    status, code, title = 429, "rate_limited", "Too many requests"


def _depth_exceeds(value: Any, limit: int) -> bool:
    stack = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > limit:
            return True
        if isinstance(node, dict):
            stack.extend((v, depth + 1) for v in node.values())
        elif isinstance(node, list):
            stack.extend((v, depth + 1) for v in node)
    return False


class UnstorableText(Invalid):
    """Text with a NUL or an unpaired surrogate, anywhere in the request: refused before anything reads it."""

    code = "invalid_characters"

    def __init__(self, location: str, field: str | None) -> None:
        where = f"{location} field {field!r}" if field else f"the {location}"
        extra: dict[str, Any] = {"location": location} | ({"field": field} if field else {})
        super().__init__(f"{where} {text.WHY}", **extra)


def _check_pairs(location: str, pairs: Any) -> None:
    for key, value in pairs:
        if text.unstorable(key):
            raise UnstorableText(location, None)
        if isinstance(value, str) and text.unstorable(value):
            raise UnstorableText(location, key)


def check_request_text() -> None:
    """Refuse (422 invalid_characters) a request whose path, query, form fields or JSON strings hold text that no
    column can store, before any view or database sees it. A multipart body that the API parses as it arrives is
    left to that parser (its fields are an artefact kind, checked against the known kinds, and a task number)."""
    if text.unstorable(request.path):
        raise UnstorableText("path", None)
    _check_pairs("query", request.args.items(multi=True))
    streamed_upload = request.mimetype == "multipart/form-data" and request.path.startswith("/api/")
    if request.mimetype in ("application/x-www-form-urlencoded", "multipart/form-data") and (
            not streamed_upload or "form" in request.__dict__):
        _check_pairs("form", request.form.items(multi=True))
        # A file's own name is made safe where it is stored; its bytes are the file's business.
        _check_pairs("form", ((name, None) for name in request.files))


# Ids are INTEGER columns (int4 on PostgreSQL); a larger id can name no row, and would overflow the driver.
MAX_ID = 2**31 - 1


def id_field(**kwargs: Any) -> Any:
    """A row id in a JSON body or a query: outside 1..MAX_ID it names no row, so it is refused with the
    other invalid fields (422) instead of reaching the database driver, which cannot bind it."""
    from marshmallow import fields, validate

    return fields.Integer(validate=validate.Range(min=1, max=MAX_ID), strict=False, **kwargs)


def row_id(text: str | None) -> int | None:
    """A row id typed into a web form (digits only, within 1..MAX_ID), else None."""
    text = (text or "").strip()
    if not text.isdigit() or not text.isascii():
        return None
    value = int(text)
    return value if 1 <= value <= MAX_ID else None


def register(app: Flask) -> None:
    hops = app.config["ITEMGATE"].proxy_hops
    if hops:
        # Behind reverse proxies the peer is the proxy; the per-address login limits need the client's address.
        from werkzeug.middleware.proxy_fix import ProxyFix

        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=hops)  # type: ignore[method-assign]

    @app.before_request
    def _ids_in_range() -> Any:
        for name, value in (request.view_args or {}).items():
            if isinstance(value, int) and not 0 <= value <= MAX_ID:
                return problem(404, "not_found", f"no such {name.removesuffix('_id')}")
        return None

    app.before_request(check_request_text)

    @app.before_request
    def _json_limits() -> Any:
        if not request.is_json or request.method in ("GET", "HEAD", "OPTIONS"):
            return None
        limit = current_app.config["ITEMGATE"].max_json_kb * 1024
        if request.content_length is not None and request.content_length > limit:
            return problem(413, "too_large", f"JSON bodies are limited to {limit // 1024} KB")
        request.max_content_length = limit  # also bounds chunked bodies that declare no length
        raw = request.get_data(cache=True)
        try:
            parsed = json.loads(raw)
        except RecursionError:
            return problem(400, "bad_request", "the JSON body is nested too deeply")
        except ValueError:
            return None  # the route's parser answers with its own 400/422
        if _depth_exceeds(parsed, MAX_JSON_DEPTH):
            return problem(400, "bad_request", f"the JSON body is nested deeper than {MAX_JSON_DEPTH} levels")
        where = text.first_unstorable(parsed)
        if where is not None:
            raise UnstorableText("JSON body", where or None)
        return None

    @app.after_request
    def _retry_after(response: Any) -> Any:
        seconds = g.get("retry_after")
        if response.status_code == 429 and seconds:
            response.headers["Retry-After"] = str(seconds)
        return response


# A browser (or client) that signed in as a user before gets a signed cookie naming that user; its attempts for that
# user are counted on their own, so guesses by someone else (even behind the same office address) cannot lock the
# user out of a device they already use.
DEVICE_COOKIE = "itemgate_device"
DEVICE_DAYS = 365
_DEVICE_SALT = "itemgate-login-device"


def _digest(scope: str, value: str) -> str:
    return hashlib.sha256(f"{scope}|{value}".encode()).hexdigest()


def _serializer() -> URLSafeTimedSerializer:
    return URLSafeTimedSerializer(current_app.config["SECRET_KEY"], salt=_DEVICE_SALT)


def _trusted_device(name: str) -> str | None:
    """The id of this client's device cookie when it was issued at a sign-in of `name`, else None."""
    raw = request.cookies.get(DEVICE_COOKIE)
    if not raw:
        return None
    try:
        data = _serializer().loads(raw, max_age=DEVICE_DAYS * 86400)
    except BadSignature:
        return None
    if not isinstance(data, dict) or data.get("u") != name or not isinstance(data.get("d"), str):
        return None
    return data["d"]


def _limits(username: str) -> list[tuple[str, int]]:
    """(counter key, limit) pairs that govern a login attempt for `username` from this client."""
    settings = current_app.config["ITEMGATE"]
    name = username.strip().lower()
    device = _trusted_device(name)
    if device is not None:
        return [(_digest("device", device), settings.login_max_failures)]
    ip = request.remote_addr or "-"
    return [
        # one address guessing one account: stopped early
        (_digest("user+ip", f"{name}|{ip}"), settings.login_max_failures),
        # one account guessed from many addresses: a higher bar, so one address alone never reaches it
        (_digest("user", name), settings.login_user_max_failures),
        # one address trying many accounts
        (_digest("ip", ip), settings.login_ip_max_failures),
    ]


def check_login_allowed(username: str) -> None:
    """Refuse with 429 when any counter governing this attempt (this username from this address; this username
    from anywhere; this address for any username; or, for a device that signed in as this user before, that
    device alone) reached its limit within the sliding window. Failures are rows in the database, so every
    worker and host sees the same counts."""
    settings = current_app.config["ITEMGATE"]
    now = datetime.now(UTC)
    since = now - timedelta(seconds=settings.login_window_seconds)
    limits = dict(_limits(username))
    rows = db.session.execute(
        select(LoginAttempt.key, func.count(LoginAttempt.id), func.min(LoginAttempt.at))
        .where(LoginAttempt.key.in_(list(limits)), LoginAttempt.at > since).group_by(LoginAttempt.key)).all()
    waits = []
    for key, count, oldest in rows:
        if count >= limits[key]:
            oldest = oldest if oldest.tzinfo else oldest.replace(tzinfo=UTC)
            waits.append(max(1, int((oldest - since).total_seconds()) + 1))
    if waits:
        wait = max(waits)
        g.retry_after = wait
        raise TooManyAttempts(f"too many failed logins; try again in {wait} seconds", retry_after=wait)


def record_login_failure(username: str) -> None:
    """Count one failure against every counter governing the attempt (the caller commits) and drop those
    counters' rows that left the window."""
    settings = current_app.config["ITEMGATE"]
    now = datetime.now(UTC)
    keys = [key for key, _ in _limits(username)]
    db.session.execute(delete(LoginAttempt).where(
        LoginAttempt.key.in_(keys), LoginAttempt.at <= now - timedelta(seconds=settings.login_window_seconds)))
    db.session.add_all(LoginAttempt(key=key, at=now) for key in keys)


def remember_device(response: Any, username: str) -> Any:
    """After a successful sign-in: mark this client as one `username` uses (a signed cookie, no server state)."""
    settings = current_app.config["ITEMGATE"]
    value = _serializer().dumps({"u": username.strip().lower(), "d": secrets.token_urlsafe(16)})
    response.set_cookie(DEVICE_COOKIE, value, max_age=DEVICE_DAYS * 86400, httponly=True, samesite="Lax",
                        secure=settings.secure_cookies)
    return response


def decimal_bounds_as_numbers(converter: Any, field: Any, ret: dict[str, Any], **_: Any) -> dict[str, Any]:
    """apispec renders Decimal fields' minimum/maximum/default as strings; JSON Schema wants numbers (and
    generated clients and fuzzers choke on strings there)."""
    from marshmallow import fields as ma_fields

    if not isinstance(field, ma_fields.Decimal):
        return {}
    from decimal import Decimal

    return {key: float(ret[key]) for key in ("minimum", "maximum", "default")
            if isinstance(ret.get(key), str | Decimal)}

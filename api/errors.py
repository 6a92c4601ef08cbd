"""Error mapping: every failure leaves as application/problem+json with a stable code."""
from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from flask import Flask, Response, g, json, make_response, request
from sqlalchemy.exc import DBAPIError, PendingRollbackError
from werkzeug.exceptions import HTTPException

from api.extensions import db
from engine.errors import DomainError

log = logging.getLogger("itemgate.errors")

_HTTP_CODES = {
    400: "bad_request", 401: "unauthorized", 403: "forbidden", 404: "not_found", 405: "method_not_allowed",
    409: "conflict", 413: "too_large", 415: "unsupported_media_type", 422: "invalid", 429: "rate_limited",
    500: "internal_error", 502: "bad_gateway", 503: "unavailable",
}
# What a 503 asks the client to wait before trying again: a database failover or a store restart takes seconds.
RETRY_AFTER_SECONDS = 5


def problem(status: int, code: str, detail: str, title: str | None = None, **extra: Any) -> Response:
    body = {"type": f"https://itemgate.example/problems/{code}", "title": title or _HTTP_CODES.get(status, code),
            "status": status, "detail": detail, "code": code}
    body.update(extra)
    if getattr(g, "request_id", None):
        body["request_id"] = g.request_id
    response = Response(json.dumps(body, ensure_ascii=False), status=status,
                        mimetype="application/problem+json")
    if status == 401:
        response.headers["WWW-Authenticate"] = 'Bearer realm="itemgate"'
    return _retry_later(response)


def _retry_later(response: Response) -> Response:
    if response.status_code == 503:
        response.headers.setdefault("Retry-After", str(RETRY_AFTER_SECONDS))
    return response


def _wants_html() -> bool:
    return not request.path.startswith("/api/") and request.accept_mimetypes.accept_html


def lost_database(err: BaseException) -> bool:
    """Whether `err` (or what it arose from) is the database connection going away: a server shutdown, a killed
    backend, a network failure. SQLAlchemy has invalidated that connection, so the pool will not hand it out
    again; using the session afterwards without a rollback is what raises PendingRollbackError."""
    seen: set[int] = set()
    current: BaseException | None = err
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, DBAPIError) and current.connection_invalidated:
            return True
        current = current.__cause__ or current.__context__
    return False


def _rollback() -> None:
    """End the failed transaction. When even that fails (the connection is gone mid-rollback), drop the session:
    the next use starts a new one on a fresh connection."""
    try:
        db.session.rollback()
    except Exception:  # noqa: BLE001 - nothing more can be done with this session
        log.warning("rollback failed; the session is discarded", exc_info=True)
        db.remove_session()


def register_error_handlers(app: Flask, html_page: Callable[..., Any] | None = None) -> None:
    """Errors as problem+json; web pages (`html_page` given, the request asking for HTML) as that page."""

    def html(status: int, detail: str, code: str | None = None) -> Any:
        assert html_page is not None
        return _retry_later(make_response(html_page(status, detail, code)))

    @app.errorhandler(DomainError)
    def _domain(err: DomainError) -> Any:
        _rollback()
        log.info("refused", extra={"code": err.code, "status": err.status})
        if html_page is not None and _wants_html():
            return html(err.status, err.detail, err.code)
        return problem(err.status, err.code, err.detail, err.title, **err.extra)

    @app.errorhandler(HTTPException)
    def _http(err: HTTPException) -> Any:
        _rollback()
        status = err.code or 500
        extra: dict[str, Any] = {}
        data = getattr(err, "data", None)  # webargs/flask-smorest put validation messages here
        code = _HTTP_CODES.get(status, "error")
        if status == 422 and data and "messages" in data:
            messages = data["messages"]
            # Flatten {"json": {...}} / {"query": {...}} into field → messages.
            flat: dict[str, Any] = {}
            for part in messages.values():
                if isinstance(part, dict):
                    flat.update(part)
            extra["errors"] = flat
            code = "invalid_request"
        if html_page is not None and _wants_html():
            return html(status, err.description or "")
        return problem(status, code, err.description or err.name, err.name, **extra)

    @app.errorhandler(Exception)
    def _unexpected(err: Exception) -> Any:
        _rollback()
        if isinstance(err, DBAPIError | PendingRollbackError) and lost_database(err):
            log.warning("database connection lost: %s", type(err.orig if isinstance(err, DBAPIError) else err)
                        .__name__)
            detail = "the database connection was lost; nothing of this request was kept, try again"
            if html_page is not None and _wants_html():
                return html(503, detail, "database_unavailable")
            return problem(503, "database_unavailable", detail, "Service unavailable")
        log.exception("unhandled error")
        return problem(500, "internal_error", "An unexpected error occurred; it has been logged.")

"""Error mapping: every failure leaves as application/problem+json with a stable code."""
from __future__ import annotations

import logging
from typing import Any

from flask import Flask, Response, g, json, request
from werkzeug.exceptions import HTTPException

from api.extensions import db
from engine.errors import DomainError

log = logging.getLogger("itemgate.errors")

_HTTP_CODES = {
    400: "bad_request", 401: "unauthorized", 403: "forbidden", 404: "not_found", 405: "method_not_allowed",
    409: "conflict", 413: "too_large", 415: "unsupported_media_type", 422: "invalid", 429: "rate_limited",
    500: "internal_error", 503: "unavailable",
}


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
    return response


def _wants_html() -> bool:
    return not request.path.startswith("/api/") and request.accept_mimetypes.accept_html


def register_error_handlers(app: Flask) -> None:
    @app.errorhandler(DomainError)
    def _domain(err: DomainError) -> Any:
        db.session.rollback()
        log.info("refused", extra={"code": err.code, "status": err.status})
        if _wants_html() and "html_error" in app.view_functions:
            return app.view_functions["html_error"](err.status, err.detail, err.code)
        return problem(err.status, err.code, err.detail, err.title, **err.extra)

    @app.errorhandler(HTTPException)
    def _http(err: HTTPException) -> Any:
        db.session.rollback()
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
        if _wants_html() and "html_error" in app.view_functions:
            return app.view_functions["html_error"](status, err.description or "")
        return problem(status, code, err.description or err.name, err.name, **extra)

    @app.errorhandler(Exception)
    def _unexpected(err: Exception) -> Any:
        db.session.rollback()
        log.exception("unhandled error")
        return problem(500, "internal_error", "An unexpected error occurred; it has been logged.")

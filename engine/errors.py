"""The one typed domain error; the API maps it to application/problem+json."""
from __future__ import annotations

from typing import Any


class DomainError(Exception):
    """A refusal the caller can act on: a stable `code`, an HTTP-ish `status`, a human `detail`."""

    status = 400
    code = "bad_request"
    title = "Bad request"

    def __init__(self, detail: str, *, code: str | None = None, status: int | None = None, **extra: Any):
        super().__init__(detail)
        self.detail = detail
        if code:
            self.code = code
        if status:
            self.status = status
        self.extra = extra


class NotFound(DomainError):
    status, code, title = 404, "not_found", "Not found"


class Forbidden(DomainError):
    status, code, title = 403, "forbidden", "Forbidden"


class Conflict(DomainError):
    status, code, title = 409, "conflict", "Conflict"


class Invalid(DomainError):
    status, code, title = 422, "invalid", "Unprocessable entity"


class FormInvalid(Invalid):
    code = "invalid_form"

    def __init__(self, errors: dict[str, list[str]], detail: str = "The form has errors"):
        super().__init__(detail, errors=errors)


class GateUnmet(Invalid):
    code = "gate_unmet"

    def __init__(self, missing: list[str], detail: str | None = None):
        super().__init__(detail or "Required artefacts are missing or not verified: " + ", ".join(missing),
                         missing=missing)


class ProcessFailed(DomainError):
    """The process model failed while running (a script, a condition, a timer, its state too large): 422 naming
    the BPMN element, the instance left as it was."""

    status, code, title = 422, "process_error", "Process model error"

    def __init__(self, detail: str, element: str | None = None, **extra: Any):
        super().__init__(detail, element=element, **extra)
        self.element = element


# Exceptions that mean a bug in ItemGate, never a refusal: they are not turned into a 4xx but reach the
# error handler, which logs them and answers 500 with the request id.
PROGRAMMING_ERRORS: tuple[type[BaseException], ...] = (
    TypeError, AttributeError, AssertionError, RecursionError, NotImplementedError, UnboundLocalError)


class PayloadTooLarge(DomainError):
    status, code, title = 413, "too_large", "Payload too large"


class UnsupportedMedia(DomainError):
    status, code, title = 415, "unsupported_media_type", "Unsupported media type"


class ObjectMissing(DomainError):
    """A stored object a row refers to is gone from the store (or is not what was stored): the store failed us."""

    status, code, title = 502, "object_missing", "Bad gateway"


class ServiceUnavailable(DomainError):
    status, code, title = 503, "store_unavailable", "Service unavailable"

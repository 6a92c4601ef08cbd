"""A model's own run-time error is a 422 process_error; a bug (TypeError, AssertionError …) is not disguised
as one but reaches the error handler as a logged 500 carrying the request id."""
from __future__ import annotations

import logging

import pytest
from flask import Blueprint

from api.app import create_app
from api.config import load_settings
from engine.errors import ProcessFailed
from engine.usecases.tasks import run_and_step


class _Task:
    def __init__(self, exc: BaseException):
        self.data: dict = {}
        self.exc = exc

    def run(self) -> None:
        raise self.exc


class _Workflow:
    def do_engine_steps(self) -> None:
        pass


def test_a_model_error_is_a_process_error_and_a_bug_is_not():
    with pytest.raises(ProcessFailed) as refused:
        run_and_step(_Workflow(), _Task(ValueError("bad expression")), {}, "task x")
    assert refused.value.status == 422 and refused.value.code == "process_error"
    for bug in (TypeError("f() takes 1 argument"), AssertionError(), RecursionError(), AttributeError("x")):
        with pytest.raises(type(bug)):
            run_and_step(_Workflow(), _Task(bug), {}, "task x")


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def test_a_bug_answers_a_logged_500_with_the_request_id():
    app = create_app(load_settings({}, testing=True, database_url="sqlite:///:memory:", log_json=False))
    bp = Blueprint("bug", __name__)

    @bp.get("/bug-for-test")
    def bug() -> None:
        raise TypeError("a bug")

    app.register_blueprint(bp)
    from api import authz

    authz.ENDPOINTS["bug.bug"] = "public.page"
    records = _Records()
    logging.getLogger("itemgate").addHandler(records)
    try:
        r = app.test_client().get("/bug-for-test", headers={"X-Request-Id": "req-42"})
    finally:
        del authz.ENDPOINTS["bug.bug"]
        logging.getLogger("itemgate").removeHandler(records)
    assert r.status_code == 500 and r.get_json()["code"] == "internal_error"
    assert r.get_json()["request_id"] == "req-42"
    (logged,) = [r for r in records.records if r.exc_info and r.exc_info[0] is TypeError]
    assert logged.getMessage() == "unhandled error" and logged.request_id == "req-42"

"""Shared pytest set-up: real SQLite and PostgreSQL databases, a real S3 server, app and client helpers.

Isolation: HTTP tests commit for real (the app commits per request), so each test starts from empty tables
(truncated before the test) instead of a rolled-back transaction.
"""
from __future__ import annotations

import io
import os
import secrets
import warnings
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from sqlalchemy import delete, select

from engine.runtime import spiff
from engine.trust import audit

# What the app factory installs, for tests that run the engine without an app.
spiff.install()
audit.install_session_hooks()

# The schemathesis pytest plugin imports schemathesis._hypothesis inside every test call, and that module
# reads the deprecated jsonschema.RefResolutionError. Under `-W error` that import fails in every test;
# importing it once here, with that warning silenced, lets the plugin find it loaded.
with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    import schemathesis._hypothesis  # noqa: F401

pytest_plugins = ["tests.s3_fixtures", "tests.notification_sinks"]

PG_ADMIN_DSN = os.environ.get("ITEMGATE_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test")
BACKENDS = ["sqlite", "postgresql"]


def _pg_url(dbname: str) -> str:
    base = PG_ADMIN_DSN.rsplit("/", 1)[0]
    return f"{base}/{dbname}"


@pytest.fixture(scope="session")
def pg_database() -> Iterator[str]:
    """A fresh PostgreSQL database for this test session, dropped at the end."""
    name = f"itemgate_test_{os.getpid()}_{secrets.token_hex(3)}"
    try:
        admin = psycopg.connect(PG_ADMIN_DSN, autocommit=True, connect_timeout=5)
    except psycopg.OperationalError as exc:
        pytest.fail(f"PostgreSQL is required for the suite ({PG_ADMIN_DSN}): {exc}")
    with admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    yield _pg_url(name)
    with psycopg.connect(PG_ADMIN_DSN, autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def make_app(database_url: str, s3_server: Any, bucket: str, *, migrate: bool = True, **overrides: Any) -> Any:
    """An app on this database and bucket; `migrate=False` leaves the database as it is (a CLI test then
    creates the schema with `itemgate db upgrade`)."""
    from flask_migrate import upgrade

    from api.app import create_app
    from api.config import load_settings
    from storage.artefact_store import ArtefactStore

    settings = load_settings({}, testing=True, database_url=database_url, s3_endpoint=s3_server.endpoint,
                             s3_access_key=s3_server.access_key, s3_secret_key=s3_server.secret_key,
                             s3_bucket=bucket, log_json=False, **overrides)
    store = ArtefactStore(s3_server.endpoint, s3_server.access_key, s3_server.secret_key, bucket)
    store.ensure_bucket()
    app = create_app(settings, store=store)
    if migrate:
        with app.app_context():
            upgrade(revision="heads")
    return app


def dispose_app(app: Any) -> None:
    """Close an app's pooled connections and its store (an app a test made for itself)."""
    from api.extensions import db

    with app.app_context():
        db.remove_session()
        db.engine.dispose()
    store = app.extensions.get("itemgate_store")
    if store is not None:
        store.close()


class Cli:
    """Runs `itemgate` commands inside one app, as `app.test_cli_runner()` does (the command line takes the app
    it is handed, as Flask's ScriptInfo does): the command uses that app's database and object store, and no
    environment variable is involved."""

    def __init__(self, app: Any):
        self.app = app
        self.runner = app.test_cli_runner()

    def __call__(self, *args: str, input: str | None = None, catch_exceptions: bool = False) -> Any:
        from flask import has_app_context

        from api.cli import main
        from api.extensions import db

        # The command works in an app context (and session) of its own: the test's session lets go of its
        # connection first (SQLite allows one writer).
        if has_app_context():
            db.remove_session()
        return self.runner.invoke(main, list(args), input=input, catch_exceptions=catch_exceptions)


@pytest.fixture(scope="session", params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture(scope="session")
def _apps(tmp_path_factory: pytest.TempPathFactory, s3_server: Any) -> Iterator[dict[str, Any]]:
    apps: dict[str, Any] = {}
    yield apps
    # Close pooled connections explicitly: once a second app exists (CLI tests build their own), the
    # session apps are collected at teardown and unclosed psycopg connections warn (an error here).
    from api.extensions import db

    for one in apps.values():
        with one.app_context():
            db.session.remove()
            db.engine.dispose()


@pytest.fixture(scope="session")
def app_for_backend(backend: str, _apps: dict[str, Any], tmp_path_factory: pytest.TempPathFactory,
                    s3_server: Any, request: pytest.FixtureRequest) -> Any:
    if backend not in _apps:
        if backend == "sqlite":
            url = f"sqlite:///{tmp_path_factory.mktemp('sqlite') / 'itemgate.db'}"
        else:
            url = request.getfixturevalue("pg_database")
        _apps[backend] = make_app(url, s3_server, f"itemgate-{backend}")
    return _apps[backend]


def truncate_all(app: Any) -> None:
    from api.extensions import db
    from engine.trust import audit
    from storage.models import Base

    with app.app_context():
        db.session.remove()
        # audit_events is append-only (app guard + PostgreSQL trigger); cleanup uses the prune window.
        audit.allow_prune(db.session)
        # departments.lead_reviewer_id points back at users (a cycle the sort leaves out): cut it first.
        from sqlalchemy import update

        from storage.models import Department

        db.session.execute(update(Department).values(lead_reviewer_id=None))
        for table in reversed(Base.metadata.sorted_tables):
            db.session.execute(delete(table))
        db.session.commit()
    store = app.extensions.get("itemgate_store")
    if store is not None:
        from tests.s3_fixtures import remove_anchors

        remove_anchors(store)


@pytest.fixture
def app(app_for_backend: Any) -> Iterator[Any]:
    truncate_all(app_for_backend)
    with app_for_backend.app_context():
        yield app_for_backend
    from api.extensions import db

    with app_for_backend.app_context():
        db.session.remove()


@pytest.fixture(params=["warm", "cold"])
def cache_mode(request: pytest.FixtureRequest, app: Any) -> Iterator[str]:
    """Run a test with this process's model and calendar caches on (warm) and off (cold mode: every request
    parses the model afresh, as a new worker or another host would). Lifecycle tests use it."""
    from engine import caching

    before = caching.enabled()
    caching.set_enabled(request.param == "warm")
    try:
        yield request.param
    finally:
        caching.set_enabled(before)


@pytest.fixture
def client(app: Any) -> Any:
    return app.test_client()


@pytest.fixture
def store(app: Any) -> Any:
    return app.extensions["itemgate_store"]


@pytest.fixture
def cli(app: Any) -> Cli:
    """`itemgate` commands run against the test's app: `cli("audit", "verify")`."""
    return Cli(app)


# ---------------------------------------------------------------- factories and action helpers

PASSWORD = "correct-horse-battery"  # noqa: S105


class World:
    """A loaded demo-like contract with users per role; helpers act as those users over HTTP."""

    def __init__(self, app: Any, client: Any):
        self.app = app
        self.client = client
        self.tokens: dict[str, str] = {}
        self.auto_confirm_difficulty = True

    def user(self, username: str, role: str, department: str | None = None) -> None:
        from api.auth import hash_password
        from api.extensions import db
        from engine.trust.accounts import create_user

        create_user(db.session, username, hash_password(PASSWORD), role, department)
        db.session.commit()

    def headers(self, username: str) -> dict[str, str]:
        if username not in self.tokens:
            r = self.client.post("/api/v1/auth/token", json={"username": username, "password": PASSWORD})
            assert r.status_code == 200, r.get_json()
            self.tokens[username] = r.get_json()["token"]
        return {"Authorization": f"Bearer {self.tokens[username]}"}

    def get(self, username: str, url: str, **kw: Any) -> Any:
        return self.client.get(url, headers=self.headers(username), **kw)

    def post(self, username: str, url: str, **kw: Any) -> Any:
        return self.client.post(url, headers=self.headers(username), **kw)

    def new_item(self, code: str = "SH-T-1", mode: str = "new", channels: list[str] | None = None,
                 department: str = "DA", line: str = "1", attributes: dict[str, Any] | None = None,
                 difficulty: float = 1.0) -> dict[str, Any]:
        r = self.post("pm", "/api/v1/items", json={
            "contract": "SH-YWTB-2025", "service_line": line, "name": f"事项 {code}", "code": code,
            "department": department, "channels": ["pc", "mobile"] if channels is None else channels, "mode": mode,
            "difficulty": difficulty, "attributes": attributes or {}})
        assert r.status_code == 201, r.get_json()
        return r.get_json()

    def open_tasks(self, item_id: int) -> list[dict[str, Any]]:
        r = self.get("pm", f"/api/v1/items/{item_id}")
        assert r.status_code == 200
        return [t for t in r.get_json()["tasks"] if t["status"] == "ready"]

    def task_named(self, item_id: int, name: str) -> dict[str, Any]:
        tasks = [t for t in self.open_tasks(item_id) if t["name"] == name]
        assert tasks, f"no open task {name}; open: {[t['name'] for t in self.open_tasks(item_id)]}"
        return tasks[0]

    def upload(self, username: str, item_id: int, kind: str, body: bytes | None = None,
               filename: str | None = None, task_id: int | str | None = None) -> Any:
        """Upload one file of `kind`; `task_id`, when given, names the task it is for."""
        from api.demo import demo_pdf
        from engine.evidence.sheets import is_sheet_kind

        data: dict[str, Any] = {"kind": kind}
        if task_id is not None:
            data["task_id"] = str(task_id)
        if body is None:
            body = demo_pdf(f"{kind} {self.sheet_code(item_id, kind)}" if is_sheet_kind(kind) else kind)
        data["file"] = (io.BytesIO(body), filename or f"{kind}.pdf")
        return self.multipart(username, f"/api/v1/items/{item_id}/artefacts", data)

    def sheet_code(self, item_id: int, kind: str) -> str:
        """The verification code of the item's sign-off sheet of `kind` (made as printing it would)."""
        from api.extensions import db
        from engine.evidence.sheets import sheet_for
        from storage.models import WorkItem

        code = sheet_for(db.session, db.session.get(WorkItem, item_id), kind, None).code
        db.session.commit()
        return code

    def multipart(self, username: str, url: str, data: dict[str, Any]) -> Any:
        """POST a multipart body, closing the encoded stream (werkzeug spills large bodies to a temp file)."""
        from werkzeug.datastructures import MultiDict
        from werkzeug.test import stream_encode_multipart

        fields = MultiDict()
        for key, value in data.items():
            if isinstance(value, tuple):
                from werkzeug.datastructures import FileStorage

                value = FileStorage(stream=value[0], filename=value[1], name=key)
            fields.add(key, value)
        stream, length, boundary = stream_encode_multipart(fields)
        try:
            return self.client.post(url, headers=self.headers(username), input_stream=stream,
                                    content_length=length,
                                    content_type=f'multipart/form-data; boundary="{boundary}"')
        finally:
            stream.close()

    def complete(self, username: str, task_id: int, data: dict[str, Any] | None = None) -> Any:
        return self.post(username, f"/api/v1/tasks/{task_id}/complete", json={"data": data or {}})

    def complete_task_as(self, username: str, item_id: int, name: str, data: dict[str, Any] | None = None,
                         upload_missing: bool = True) -> dict[str, Any]:
        """Upload whatever the gate still needs (naming the task, as the web task page does), then complete;
        asserts success."""
        task = self.task_named(item_id, name)
        if upload_missing:
            detail = self.get(username, f"/api/v1/tasks/{task['id']}").get_json()
            for req in detail["required_artefacts"]:
                if not req["present"]:
                    r = self.upload(username, item_id, req["kind"], task_id=task["id"])
                    assert r.status_code == 201, r.get_json()
            # A diligent implementer also gives the step's optional working documents (e.g. the survey form).
            present = {a["kind"] for a in self.get(username, f"/api/v1/items/{item_id}").get_json()["artefacts"]}
            for opt in detail.get("optional_artefacts", []):
                if opt["kind"] not in present:
                    r = self.upload(username, item_id, opt["kind"], task_id=task["id"])
                    assert r.status_code == 201, r.get_json()
        r = self.complete(username, task["id"], data)
        assert r.status_code == 200, r.get_json()
        self.after_step(item_id, name)
        return r.get_json()

    def after_step(self, item_id: int, name: str) -> None:
        """What the other parties do at once after a step, so lifecycle tests need not spell it out: after the
        PM's difficulty proposal the third party confirms it (tests of that step set auto_confirm_difficulty
        False)."""
        if name == "confirm_difficulty" and self.auto_confirm_difficulty:
            review = [t for t in self.open_tasks(item_id) if t["name"] == "review_difficulty"]
            if review:
                self.user("auditor", "auditor") if "auditor" not in self._known_users() else None
                done = self.complete("auditor", review[0]["id"], {"verdict": "confirm"})
                assert done.status_code == 200, done.get_json()

    def _known_users(self) -> set[str]:
        from api.extensions import db
        from storage.models import User

        return set(db.session.scalars(select(User.username)))


@pytest.fixture
def world(app: Any, client: Any) -> World:
    from api.extensions import db
    from bpmn import CATALOG_DIR
    from engine.usecases.admin import load_catalog_file

    load_catalog_file(db.session, CATALOG_DIR / "shanghai.toml")
    db.session.commit()
    w = World(app, client)
    w.user("impl", "implementer")
    w.user("impl2", "implementer")
    w.user("rev_a", "dept_reviewer", "DA")
    w.user("rev_b", "dept_reviewer", "DB")
    w.user("pm", "pm")
    w.user("auditor", "auditor")
    w.user("buyer", "buyer")
    w.user("admin", "admin")
    return w


SEED_USERS = [("impl", "implementer", None), ("rev_a", "dept_reviewer", "DA"), ("pm", "pm", None),
              ("auditor", "auditor", None), ("buyer", "buyer", None), ("admin", "admin", None)]


def seeded_sqlite_world(apps: dict[str, Any], tmp_path_factory: pytest.TempPathFactory, s3_server: Any) -> World:
    """The session's SQLite app, emptied, with the Shanghai catalogue and one user per role.

    For module-scoped fixtures (the authz matrix, the fuzzer); call inside the app context it needs."""
    from api.extensions import db
    from bpmn import CATALOG_DIR
    from engine.usecases.admin import load_catalog_file

    if "sqlite" not in apps:
        apps["sqlite"] = make_app(f"sqlite:///{tmp_path_factory.mktemp('sqlite') / 'itemgate.db'}", s3_server,
                                  "itemgate-sqlite")
    app = apps["sqlite"]
    truncate_all(app)
    with app.app_context():
        load_catalog_file(db.session, CATALOG_DIR / "shanghai.toml")
        db.session.commit()
        world = World(app, app.test_client())
        for username, role, dept in SEED_USERS:
            world.user(username, role, dept)
    return world


# Tests that need a server (PostgreSQL, the S3 server, a full app with its database) are `integration`; the
# browser tests are `browser`; the rest are `unit` and run in seconds: `make test-unit`.
_SERVER_FIXTURES = {"s3_server", "pg_database", "_apps", "app_for_backend", "app", "client", "store", "world",
                    "sworld", "matrix_world", "backend"}
# Modules that start servers or processes of their own (S3 servers, `make run`, gunicorn, the bench).
_SERVER_MODULES = {"test_s3_store.py", "test_embedded_s3_dir.py", "test_make_run.py", "test_two_servers.py",
                   "test_fuzz_api.py", "test_bench_smoke.py", "test_spiff_limits.py"}


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if item.get_closest_marker("browser") or "browser" in item.nodeid.split("/"):
            continue
        fixtures = set(getattr(item, "fixturenames", ()))
        # `test_cli_*` run the command line, which builds its own app, database and S3 server.
        server = fixtures & _SERVER_FIXTURES or item.path.name in _SERVER_MODULES or item.name.startswith("test_cli_")
        item.add_marker(pytest.mark.integration if server else pytest.mark.unit)

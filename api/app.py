"""The application factory: create_app() made of named register_* steps."""
from __future__ import annotations

import logging
import sys
import uuid
from pathlib import Path
from typing import Any

from flask import Flask, g, jsonify, request
from sqlalchemy import event

from api.config import Settings, load_settings
from api.errors import problem, register_error_handlers
from api.extensions import api, db, evidence_lock_state, migrate, readiness_checks
from api.uploads import ItemGateRequest
from api.web import html_error as web_error_page
from engine.runtime import spiff
from engine.trust import audit

MIGRATIONS_DIR = str(Path(__file__).resolve().parent.parent / "storage" / "migrations")
PUBLIC_API = {"/api/v1/auth/token", "/api/v1/openapi.json"}


def create_app(settings: Settings | None = None, *, store: Any = None) -> Flask:
    settings = settings or load_settings()
    app = Flask(__name__)
    app.request_class = ItemGateRequest
    register_config(app, settings)
    register_caches(settings)
    spiff.install()
    register_logging(app, settings)
    register_db(app, settings)
    register_store(app, settings, store)
    register_request_context(app)
    register_authz(app)
    register_limits(app)
    register_api(app)
    register_health(app)
    register_web(app)
    register_error_handlers(app, html_page=web_error_page)
    return app


def register_config(app: Flask, settings: Settings) -> None:
    app.config.update(
        ITEMGATE=settings,
        SECRET_KEY=settings.secret_key,
        TESTING=settings.testing,
        SQLALCHEMY_DATABASE_URI=_database_url(settings.database_url),
        SQLALCHEMY_ENGINE_OPTIONS=_engine_options(settings.database_url),
        # Multipart overhead on top of the file itself; the store enforces the exact limit.
        MAX_CONTENT_LENGTH=settings.max_upload_bytes + 1024 * 1024,
        MAX_FORM_MEMORY_SIZE=1024 * 1024,
        API_TITLE="ItemGate API",
        API_VERSION="v1",
        OPENAPI_VERSION="3.0.3",
        OPENAPI_URL_PREFIX="/api/v1",
        OPENAPI_JSON_PATH="openapi.json",
        JSON_SORT_KEYS=False,
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Lax",
        SESSION_COOKIE_SECURE=settings.secure_cookies,
        REMEMBER_COOKIE_SECURE=settings.secure_cookies,
        REMEMBER_COOKIE_HTTPONLY=True,
    )
    app.json.ensure_ascii = False  # type: ignore[attr-defined]


def register_caches(settings: Settings) -> None:
    """Parsed models and the calendar are kept per process unless the settings ask for cold mode."""
    from engine import caching

    caching.set_enabled(settings.model_cache)
    register_budgets(settings)


def register_budgets(settings: Settings) -> None:
    """What one evaluation of model text, one instance's stored state and one tick of an instance may cost."""
    from engine.runtime import budgets

    budgets.configure(expression_ms=settings.expression_ms, expression_steps=settings.expression_steps,
                      expression_size=settings.expression_size, state_bytes=settings.instance_state_kb * 1024,
                      tick_instance_ms=settings.tick_instance_ms)


def _database_url(url: str) -> str:
    if url.startswith("sqlite:///") and not url.startswith("sqlite:////") and url != "sqlite:///:memory:":
        path = Path(url.removeprefix("sqlite:///"))
        path.parent.mkdir(parents=True, exist_ok=True)
        return f"sqlite:///{path.resolve()}"
    if url.startswith("postgresql://"):
        return "postgresql+psycopg://" + url.removeprefix("postgresql://")
    return url


def _engine_options(url: str) -> dict[str, Any]:
    if url.startswith("sqlite"):
        return {"connect_args": {"timeout": 15, "check_same_thread": False}}
    return {"pool_pre_ping": True, "pool_size": 10, "max_overflow": 10}


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    if type(dbapi_connection).__module__.startswith("sqlite3"):
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA busy_timeout=15000")
        cursor.close()


class _RequestIdFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        try:
            record.request_id = g.get("request_id", "-")
        except RuntimeError:
            record.request_id = "-"
        return True


def register_logging(app: Flask, settings: Settings) -> None:
    logger = logging.getLogger("itemgate")
    if getattr(logger, "_itemgate_configured", False):
        return
    handler = logging.StreamHandler(sys.stderr)
    if settings.log_json:
        from pythonjsonlogger import jsonlogger

        handler.setFormatter(jsonlogger.JsonFormatter(
            "%(asctime)s %(levelname)s %(name)s %(message)s %(request_id)s"))
    handler.addFilter(_RequestIdFilter())
    logger.addHandler(handler)
    logger.setLevel(logging.WARNING if settings.testing else logging.INFO)
    logger.propagate = False
    logger._itemgate_configured = True  # type: ignore[attr-defined]


def register_db(app: Flask, settings: Settings) -> None:
    """The database, its engine set up for this app only: SQLite pragmas on its connections, the audit trail's
    append-only guard on its statements and the audit writer on the sessions (see engine/trust/audit.py)."""
    db.init_app(app)
    migrate.init_app(app, db, directory=MIGRATIONS_DIR, render_as_batch=True)
    with app.app_context():
        engine = db.engine
    if engine.dialect.name == "sqlite":
        event.listen(engine, "connect", _sqlite_pragmas)
    audit.guard_engine(engine)
    audit.install_session_hooks()


def register_store(app: Flask, settings: Settings, store: Any) -> None:
    """The artefact store; `serve` sets ITEMGATE_S3_ENDPOINT to the embedded server before this runs."""
    if store is None and settings.s3_endpoint:
        from storage.artefact_store import ArtefactStore

        store = ArtefactStore(settings.s3_endpoint, settings.s3_access_key, settings.s3_secret_key,
                              settings.s3_bucket)
    app.extensions["itemgate_store"] = store


def register_request_context(app: Flask) -> None:
    log = logging.getLogger("itemgate.request")

    @app.before_request
    def _begin() -> Any:
        incoming = request.headers.get("X-Request-Id", "")
        g.request_id = incoming if 0 < len(incoming) <= 64 and incoming.isprintable() else uuid.uuid4().hex
        g.user = None
        if request.path.startswith("/api/v1"):
            from api.auth import user_from_bearer

            g.user = user_from_bearer()
            if g.user is None and request.path not in PUBLIC_API:
                return problem(401, "unauthorized", "a valid bearer token is required")
        return None

    @app.after_request
    def _end(response: Any) -> Any:
        response.headers["X-Request-Id"] = g.get("request_id", "")
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        response.headers.setdefault("X-Frame-Options", "SAMEORIGIN")
        if request.path != "/healthz":
            log.info("request", extra={"method": request.method, "path": request.path,
                                       "status": response.status_code,
                                       "user": getattr(g.get("user"), "username", None)})
        return response

    @app.teardown_request
    def _cleanup(exc: BaseException | None) -> None:
        if exc is not None:
            db.session.rollback()
        # Uploaded files spool to temp files; close them even when the request failed before reading them.
        if "files" in request.__dict__:
            for upload in request.files.values():
                upload.close()


def register_authz(app: Flask) -> None:
    """Deny by default: every endpoint is looked up in the matrix (engine/trust/policy.py) before its view runs."""
    from api.authz import register as register_authz_hook

    register_authz_hook(app)
    from api.audit_hooks import register as register_audit_hooks

    register_audit_hooks(app)


def register_limits(app: Flask) -> None:
    """JSON bodies bounded in size and depth (4xx, never 500); Retry-After on 429."""
    from api.limits import register as register_limit_hooks

    register_limit_hooks(app)


def register_api(app: Flask) -> None:
    from api.rest import core, workload

    api.init_app(app)
    from api.limits import decimal_bounds_as_numbers

    api.ma_plugin.converter.add_attribute_function(decimal_bounds_as_numbers)
    api.spec.components.security_scheme("bearer", {"type": "http", "scheme": "bearer"})
    api.spec.options["security"] = [{"bearer": []}]
    api.register_blueprint(core.blp)
    api.register_blueprint(workload.blp)
    from api.rest import settlements

    api.register_blueprint(settlements.blp)
    from api.rest import operations

    api.register_blueprint(operations.blp)
    from api.rest import jobs

    api.register_blueprint(jobs.blp)
    from api.rest import admin

    api.register_blueprint(admin.blp)
    from api.rest import money

    api.register_blueprint(money.blp)
    from api.rest import service_orders

    api.register_blueprint(service_orders.blp)


def register_health(app: Flask) -> None:
    @app.get("/healthz")
    def healthz() -> Any:
        return jsonify(status="ok")

    @app.get("/readyz")
    def readyz() -> Any:
        checks = readiness_checks(app)
        lock = evidence_lock_state(app)
        if lock == "off" and app.config["ITEMGATE"].evidence_lock:
            # `serve` refuses such a bucket; a worker started some other way is not ready either.
            checks["evidence_lock"] = "bucket without object lock (set ITEMGATE_EVIDENCE_LOCK=off to accept)"
        ok = all(v == "ok" for v in checks.values())
        return jsonify(status="ready" if ok else "not_ready", evidence_lock=lock, checks=checks), \
            200 if ok else 503


def register_web(app: Flask) -> None:
    from api.web import register as register_web_routes
    from api.web.i18n import translate
    from engine.trust import notify

    register_web_routes(app)
    # Notifications written outside a request (e-mail, chat) in the recipient's language: the web's catalog.
    notify.install_translations(lambda language: lambda text: translate(text, language))


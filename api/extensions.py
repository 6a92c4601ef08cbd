"""Flask extensions, created unbound here and bound to the app by the factory."""
from __future__ import annotations

from flask import Flask
from flask_babel import Babel
from flask_login import LoginManager
from flask_migrate import Migrate
from flask_smorest import Api
from flask_sqlalchemy import SQLAlchemy
from flask_wtf.csrf import CSRFProtect
from sqlalchemy import text
from sqlalchemy.orm import Session, scoped_session

from storage.models import Base


class Database(SQLAlchemy):
    """Flask-SQLAlchemy, with `db.session` typed as the Session that the engine's use cases take.

    `db.session` is a scoped_session: every call on it goes to the current app context's own Session, and that
    Session is what an engine function given `db.session` works on. So api/ passes it wherever a Session is
    asked for; `remove_session` reaches the registry itself, the one thing a Session does not have."""

    # Flask-SQLAlchemy declares the attribute as the scoped_session it is; here it is the Session it stands for.
    session: Session  # type: ignore[assignment]

    def remove_session(self) -> None:
        """Close the current app context's session and drop it: the next use starts a new one."""
        registry: scoped_session[Session] = vars(self)["session"]
        registry.remove()


db = Database(metadata=Base.metadata, session_options={"expire_on_commit": False})
migrate = Migrate()
api = Api()
# The web inbox (api/web): sessions, CSRF on its forms, locale selection.
login_manager = LoginManager()
csrf = CSRFProtect()
babel = Babel(configure_jinja=False)


def readiness_checks(app: Flask) -> dict[str, str]:
    """The database answers and the object store is reachable: "ok" each, or what is wrong (/readyz and the
    admin's status page)."""
    checks: dict[str, str] = {}
    try:
        db.session.execute(text("SELECT 1"))
        checks["database"] = "ok"
    except Exception as exc:  # any driver error means not ready
        checks["database"] = f"error: {type(exc).__name__}"
    store = app.extensions.get("itemgate_store")
    checks["object_store"] = "ok" if store is not None and store.ping() else "unreachable"
    return checks


def evidence_lock_state(app: Flask) -> str:
    """"on" when gate evidence in the bucket is protected by object lock, "off" when the bucket has none (only
    with ITEMGATE_EVIDENCE_LOCK=off is that accepted), "unknown" when the store cannot say right now."""
    store = app.extensions.get("itemgate_store")
    lock = None if store is None else store.evidence_lock()
    return "unknown" if lock is None else "on" if lock else "off"

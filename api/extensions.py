"""Flask extensions, created unbound here and bound to the app by the factory."""
from __future__ import annotations

from flask import Flask
from flask_babel import Babel
from flask_login import LoginManager
from flask_migrate import Migrate
from flask_smorest import Api
from flask_sqlalchemy import SQLAlchemy
from flask_wtf.csrf import CSRFProtect

from storage.models import Base

db = SQLAlchemy(metadata=Base.metadata, session_options={"expire_on_commit": False})
migrate = Migrate()
api = Api()
# The web inbox (api/web): sessions, CSRF on its forms, locale selection.
login_manager = LoginManager()
csrf = CSRFProtect()
babel = Babel(configure_jinja=False)


def evidence_lock_state(app: Flask) -> str:
    """"on" when gate evidence in the bucket is protected by object lock, "off" when the bucket has none (only
    with ITEMGATE_EVIDENCE_LOCK=off is that accepted), "unknown" when the store cannot say right now."""
    store = app.extensions.get("itemgate_store")
    lock = None if store is None else store.evidence_lock()
    return "unknown" if lock is None else "on" if lock else "off"

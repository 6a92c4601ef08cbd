"""The factory wires process-wide concerns to its own app: SQLite pragmas and the audit guard on the app's engine
only, the SpiffWorkflow patches installed explicitly, the web error page passed in (no view_functions lookup)."""
from __future__ import annotations

from sqlalchemy import create_engine, event, text

from api.app import create_app
from api.config import load_settings
from api.extensions import db
from engine.runtime import spiff
from engine.trust import audit


def test_the_factory_binds_engine_hooks_to_its_own_engine(tmp_path):
    app = create_app(load_settings({}, testing=True, database_url=f"sqlite:///{tmp_path / 'a.db'}",
                                   log_json=False))
    assert spiff.installed()
    assert "html_error" not in app.view_functions
    with app.app_context():
        engine = db.engine
        with engine.connect() as c:
            assert c.execute(text("PRAGMA journal_mode")).scalar() == "wal"
            assert c.execute(text("PRAGMA foreign_keys")).scalar() == 1
        assert event.contains(engine, "before_cursor_execute", audit._refuse_audit_writes)
        db.session.remove()
        engine.dispose()
    other = create_engine(f"sqlite:///{tmp_path / 'b.db'}")
    with other.connect() as c:
        assert c.execute(text("PRAGMA journal_mode")).scalar() != "wal"
    assert not event.contains(other, "before_cursor_execute", audit._refuse_audit_writes)
    other.dispose()

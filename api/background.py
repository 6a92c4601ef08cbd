"""Background work outside requests: export jobs on a daemon thread, and the notification outbox, each with its
own app context and database sessions."""
from __future__ import annotations

import threading

from flask import Flask
from sqlalchemy.orm import sessionmaker

from api.extensions import db
from engine.usecases.jobs import run_job


def start_job(app: Flask, job_id: int) -> threading.Thread | None:
    """Start rendering a committed, queued job in the background. With EXPORT_JOBS_THREAD set false (tests),
    nothing starts and the caller runs engine.usecases.jobs.run_job itself."""
    if not app.config.get("EXPORT_JOBS_THREAD", True):
        return None

    def work() -> None:
        # A fresh app context: db.session here is this thread's own, never the request's.
        with app.app_context():
            try:
                factory = sessionmaker(bind=db.engine, expire_on_commit=False)
                run_job(factory, app.extensions["itemgate_store"], job_id)
            finally:
                db.remove_session()

    thread = threading.Thread(target=work, name=f"export-job-{job_id}", daemon=True)
    thread.start()
    return thread


def deliver_notifications(app: Flask, limit: int = 100) -> dict[str, int]:
    """Send due notification deliveries (engine/trust/delivery.py) on a session of their own; used by `tick` and by the
    serve loop, so a request that raised a notification never waits for a mail server or a chat robot."""
    from engine.trust.delivery import apprise_sender, deliver_pending

    with app.app_context():
        session = sessionmaker(bind=db.engine, expire_on_commit=False)()
        try:
            return deliver_pending(session, apprise_sender(app.config["ITEMGATE"].smtp), limit=limit)
        finally:
            session.close()

"""Runs export jobs on a daemon thread with its own app context and database sessions."""
from __future__ import annotations

import threading

from flask import Flask
from sqlalchemy.orm import sessionmaker

from api.extensions import db
from engine.jobs import run_job


def start_job(app: Flask, job_id: int) -> threading.Thread | None:
    """Start rendering a committed, queued job in the background. With EXPORT_JOBS_THREAD set false (tests),
    nothing starts and the caller runs engine.jobs.run_job itself."""
    if not app.config.get("EXPORT_JOBS_THREAD", True):
        return None

    def work() -> None:
        # A fresh app context: db.session here is this thread's own, never the request's.
        with app.app_context():
            try:
                factory = sessionmaker(bind=db.engine, expire_on_commit=False)
                run_job(factory, app.extensions["itemgate_store"], job_id)
            finally:
                db.session.remove()

    thread = threading.Thread(target=work, name=f"export-job-{job_id}", daemon=True)
    thread.start()
    return thread

"""Faults around an upload, against the real S3 server: a connection reset mid-upload, a store too slow to
answer, the database failing at commit after the object exists, and the process killed between the two.
Each must end with a clear error, no row without its object, orphans swept, and the instance unchanged."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import func, select
from sqlalchemy.exc import OperationalError

from api.extensions import db
from engine.evidence.integrity import fsck
from storage.artefact_store import ArtefactStore
from storage.models import Artefact, AuditEvent, ProcessInstance

ROOT = Path(__file__).resolve().parents[1]
BIG_PDF = b"%PDF-1.4\n" + os.urandom(2 * 1024 * 1024)


class FaultProxy:
    """A TCP proxy in front of the S3 port that can reset connections after N request bytes or delay
    every response; it runs threads of its own and is closed by the test."""

    def __init__(self, upstream: tuple[str, int], reset_after: int | None = None, delay: float = 0.0):
        self.upstream, self.reset_after, self.delay = upstream, reset_after, delay
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.stopped = threading.Event()
        self.sockets: list[socket.socket] = []
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _accept(self) -> None:
        while not self.stopped.is_set():
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(self.upstream)
            self.sockets += [client, upstream]
            threading.Thread(target=self._pump, args=(client, upstream, True), daemon=True).start()
            threading.Thread(target=self._pump, args=(upstream, client, False), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket, request: bool) -> None:
        sent = 0
        try:
            while data := src.recv(65536):
                if request and self.reset_after is not None and sent + len(data) > self.reset_after:
                    for s in (src, dst):  # RST, not FIN: linger 0 then close
                        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
                        s.close()
                    return
                if not request and self.delay:
                    time.sleep(self.delay)
                dst.sendall(data)
                sent += len(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def close(self) -> None:
        self.stopped.set()
        self.listener.close()
        for s in self.sockets:
            try:
                s.close()
            except OSError:
                pass


def _state(store: ArtefactStore, item_id: int) -> dict:
    return {
        "rows": db.session.execute(select(func.count(Artefact.id))).scalar(),
        "events": db.session.execute(select(func.count(AuditEvent.id))).scalar(),
        "version": db.session.execute(select(ProcessInstance.version)
                                      .where(ProcessInstance.item_id == item_id)).scalar(),
        "objects": {(o.key, o.version_id) for o in store.iter_objects(f"contracts/SH-YWTB-2025/items/{item_id}/")},
    }


@pytest.fixture
def item(world):
    item_id = world.new_item("FAULT-1", channels=["pc"])["id"]
    world.headers("impl")  # log in first: a token is an audited event of its own
    return item_id


def _with_store(app, store, fn):
    good = app.extensions["itemgate_store"]
    app.extensions["itemgate_store"] = store
    try:
        return fn()
    finally:
        app.extensions["itemgate_store"] = good
        store.close()


@pytest.mark.parametrize("fault", ["reset", "slow"])
def test_store_resetting_or_too_slow_mid_upload(world, app, store, item, s3_server, fault):
    host, port = s3_server.endpoint.removeprefix("http://").split(":")
    proxy = FaultProxy((host, int(port)), reset_after=256 * 1024 if fault == "reset" else None,
                       delay=3.0 if fault == "slow" else 0.0)
    try:
        before = _state(store, item)
        flaky = ArtefactStore(proxy.endpoint, s3_server.access_key, s3_server.secret_key, store.bucket,
                              read_timeout=1.0)
        started = time.monotonic()
        r = _with_store(app, flaky, lambda: world.upload("impl", item, "requirement_letter", BIG_PDF, "big.pdf"))
        elapsed = time.monotonic() - started
    finally:
        proxy.close()
    # Outcome: 503 with a clear code within seconds; no row, no audit event, no object, instance unchanged.
    assert r.status_code == 503 and r.get_json()["code"] == "store_unavailable", r.get_json()
    assert "nothing was recorded" in r.get_json()["detail"]
    assert elapsed < 20
    after = _state(store, item)
    assert {k: v for k, v in after.items() if k != "objects"} == {k: v for k, v in before.items() if k != "objects"}
    # A reset aborts the PUT: nothing is stored. A slow store may finish the PUT after we gave up: that
    # object has no row, and fsck --repair sweeps it once it is older than the grace period.
    new = after["objects"] - before["objects"]
    assert len({key for key, _ in new}) == (0 if fault == "reset" else 1)  # (a retried PUT: 2 versions)
    fsck(db.session, store, repair=True, grace_hours=24, now=datetime.now(UTC) + timedelta(hours=25))
    assert not _state(store, item)["objects"] & new
    # The same upload succeeds once the store behaves.
    assert world.upload("impl", item, "requirement_letter", BIG_PDF, "big.pdf").status_code == 201


def test_database_commit_failing_after_upload(world, app, store, item, monkeypatch):
    from flask import has_request_context, request
    from sqlalchemy.orm import Session

    real_commit = Session.commit

    def failing_commit(self):
        if has_request_context() and request.method == "POST" and request.path.endswith("/artefacts"):
            raise OperationalError("COMMIT", {}, Exception("server closed the connection unexpectedly"))
        return real_commit(self)

    before = _state(store, item)
    monkeypatch.setattr(Session, "commit", failing_commit)
    r = world.upload("impl", item, "requirement_letter", BIG_PDF, "big.pdf")
    monkeypatch.undo()
    # Outcome: 503 database_unavailable; the object that was stored is removed again; nothing recorded.
    assert r.status_code == 503 and r.get_json()["code"] == "database_unavailable", r.get_json()
    assert _state(store, item) == before


KILLED_UPLOAD = """
import io, os, signal, sys
from api.app import create_app
from api.config import load_settings
from api.extensions import db
from engine.trust import audit
from engine.evidence.artefacts import upload_artefact
from storage.models import User, WorkItem

app = create_app(load_settings(testing=True, log_json=False))
with app.app_context():
    store = app.extensions["itemgate_store"]
    user = db.session.get(User, int(sys.argv[2]))
    item = db.session.get(WorkItem, int(sys.argv[1]))
    body = b"%PDF-1.4\\n" + os.urandom(4096)
    upload_artefact(db.session, store, audit.Actor.of(user), user, item, "requirement_letter", "k.pdf",
                    io.BytesIO(body), len(body), 1 << 20)
    print("uploaded, not committed", flush=True)
    os.kill(os.getpid(), signal.SIGKILL)
"""


def test_process_killed_between_upload_and_commit(world, app, store, item):
    from storage.models import User

    impl = db.session.execute(select(User.id).where(User.username == "impl")).scalar()
    settings = app.config["ITEMGATE"]
    env = dict(os.environ, ITEMGATE_DATABASE_URL=app.config["SQLALCHEMY_DATABASE_URI"],
               ITEMGATE_S3_ENDPOINT=settings.s3_endpoint, ITEMGATE_S3_ACCESS_KEY=settings.s3_access_key,
               ITEMGATE_S3_SECRET_KEY=settings.s3_secret_key, ITEMGATE_S3_BUCKET=settings.s3_bucket)
    before = _state(store, item)
    db.session.remove()  # SQLite: do not hold a read snapshot while the child writes
    proc = subprocess.run([sys.executable, "-c", KILLED_UPLOAD, str(item), str(impl)], env=env, cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    assert "uploaded, not committed" in proc.stdout
    after = _state(store, item)
    # Outcome: no row, no audit event, instance unchanged — and one orphaned object …
    assert {k: v for k, v in after.items() if k != "objects"} == {k: v for k, v in before.items() if k != "objects"}
    orphans = after["objects"] - before["objects"]
    assert len(orphans) == 1
    report = fsck(db.session, store)
    assert orphans <= {(o.key, o.version_id) for o in report.orphans}
    # … which fsck --repair leaves alone inside the grace period and sweeps after it.
    fsck(db.session, store, repair=True, grace_hours=24)
    assert _state(store, item)["objects"] == after["objects"]
    fsck(db.session, store, repair=True, grace_hours=24, now=datetime.now(UTC) + timedelta(hours=25))
    swept = _state(store, item)
    assert not swept["objects"] & orphans
    assert {k: v for k, v in swept.items() if k != "objects"} == {k: v for k, v in before.items() if k != "objects"}

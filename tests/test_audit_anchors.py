"""Audit anchors: the chain's head is written under object lock (CLI, serve's loop, settlement approvals, evidence
bundles); `audit verify` names the first anchor a tampered chain contradicts; bundles verify against anchors."""
from __future__ import annotations

import csv
import hashlib
import io
import json
import sqlite3
import threading
import zipfile
from types import SimpleNamespace
from typing import Any

import psycopg
import pytest
from sqlalchemy import select

from api.extensions import db
from engine.money.bundle import ANCHOR, MANIFEST
from engine.trust import anchors, audit
from storage.artefact_store import ArtefactStore, StoreUnavailable
from storage.models import AuditEvent, Settlement
from tests.settlement_helpers import completed_items, drive_to_approved
from tests.test_settlement import open_settlement
from tests.test_trust_audit import raw_sql


def _make_events(world: Any, n: int = 2, prefix: str = "ANC") -> None:
    for i in range(n):
        item = world.new_item(f"{prefix}-{i}")
        assert world.upload("impl", item["id"], "requirement_letter").status_code == 201


def _ids() -> list[int]:
    return list(db.session.scalars(select(AuditEvent.id).order_by(AuditEvent.id)))


def _anchor_cli(cli: Any) -> int:
    result = cli("audit", "anchor")
    assert result.exit_code == 0, result.output
    assert "held under object lock" in result.output
    return int(result.output.split("anchored audit event ")[1].split()[0])


def _raw_many(app: Any, statements: list[tuple[str, tuple[Any, ...]]]) -> None:
    """Several writes behind the application's back in one transaction, triggers disabled (a superuser)."""
    url = app.config["SQLALCHEMY_DATABASE_URI"]
    db.session.remove()
    if url.startswith("sqlite"):
        with sqlite3.connect(url.removeprefix("sqlite:///")) as conn:
            for sql, params in statements:
                conn.execute(sql.replace("%s", "?"), params)
    else:
        with psycopg.connect(url.replace("postgresql+psycopg://", "postgresql://")) as conn:
            conn.execute("SET session_replication_role = replica")
            for sql, params in statements:
                conn.execute(sql, params)


def test_deleting_the_newest_events_is_detected(world, app, store, cli):
    _make_events(world)
    anchored = _anchor_cli(cli)
    assert anchored == _ids()[-1]  # the anchor covers the request for it too
    stored = anchors.stored_anchors(store).anchors
    assert [a.event_id for a in stored] == [anchored] and store.is_held(stored[0].key, stored[0].version_id)
    result = cli("audit", "verify")
    assert result.exit_code == 0 and "anchors OK: 1 anchors agree" in result.output, result.output

    # A superuser deletes the newest rows with the trigger off: the remaining chain is still a valid chain …
    cut = _ids()[-3]
    raw_sql(app, "DELETE FROM audit_events WHERE id >= %s", (cut,))
    assert audit.verify_database(db.session).ok
    # … but it contradicts the anchor.
    result = cli("audit", "verify")
    assert result.exit_code == 1, result.output
    assert f"CONTRADICTS anchor {stored[0].key}" in result.output
    assert f"audit event {anchored} is missing" in result.output


def _rechain_from(app: Any, victim: int) -> None:
    """Change one event and recompute every later hash, as someone who can write the table would."""
    rows = list(db.session.scalars(select(AuditEvent).order_by(AuditEvent.id)))
    prev = None
    statements = []
    for row in rows:
        copy = SimpleNamespace(**{c: getattr(row, c) for c in ("id", "at", "user_id", "username", "role",
                                                               "event_type", "target_type", "target_id", "outcome",
                                                               "request_id", "detail", "prev_hash")})
        if row.id == victim:
            copy.outcome = "failure"
        if prev is not None:
            copy.prev_hash = prev
        new_hash = audit.event_hash(copy.prev_hash, copy)
        if row.id >= victim:
            statements.append(("UPDATE audit_events SET outcome = %s, prev_hash = %s, hash = %s WHERE id = %s",
                               (copy.outcome, copy.prev_hash, new_hash, row.id)))
        prev = new_hash
    _raw_many(app, statements)


def test_a_changed_and_rechained_event_names_the_first_contradicted_anchor(world, app, store, cli):
    _make_events(world, 1, "ANC-A")
    first = _anchor_cli(cli)
    _make_events(world, 2, "ANC-B")
    second = _anchor_cli(cli)
    _make_events(world, 1, "ANC-C")
    victim = next(i for i in _ids() if first < i < second)
    _rechain_from(app, victim)
    assert audit.verify_database(db.session).ok  # the chain alone no longer shows it
    stored = {a.event_id: a for a in anchors.stored_anchors(store).anchors}
    result = cli("audit", "verify")
    assert result.exit_code == 1, result.output
    assert f"CONTRADICTS anchor {stored[second].key}" in result.output
    assert f"audit event {second} has a different hash" in result.output
    assert "1 of 2 anchors contradicted" in result.output


def test_the_periodic_anchor_writes_only_when_the_head_moved(world, app, store):
    from api.cli import _anchor_loop

    _make_events(world, 1)
    head = _ids()[-1]
    first = anchors.anchor_if_moved(db.session, store, None)
    assert first is not None and first.event_id == head and first.reason == "periodic" and first.held
    assert anchors.anchor_if_moved(db.session, store, first.event_id) is None  # idle: no new anchor
    # serve's loop: one round at start (stop already set, so it returns after it).
    _make_events(world, 1, "ANC-P")
    db.session.remove()
    stop = threading.Event()
    stop.set()
    _anchor_loop(app, 5, stop)
    latest = anchors.stored_anchors(store).anchors[-1]
    assert latest.reason == "periodic" and latest.event_id == _ids()[-1] > head


def test_an_anchor_names_only_committed_events(world, app, store):
    _make_events(world, 1)
    committed = _ids()[-1]
    audit.record(db.session, audit.SYSTEM, "test.pending")
    audit.write_pending(db.session)  # flushed into this transaction, not committed
    assert anchors.anchor_now(db.session, store, "test").event_id == committed
    db.session.rollback()


@pytest.fixture
def approved(world: Any, store: Any) -> dict[str, Any]:
    world.user("buyer2", "buyer")
    completed_items(2, prefix="ANS", store=store)
    settlement = open_settlement(world)
    return drive_to_approved(world, settlement["id"])


def test_an_approved_settlement_carries_its_anchor(approved, world, store):
    anchor = approved["anchor"]
    assert anchor and anchor["reason"] == "settlement_approval"
    stored = anchors.read_anchor(store, anchor["key"], anchor["version_id"])
    assert store.is_held(anchor["key"], anchor["version_id"])
    assert stored.detail["settlement_id"] == approved["id"]
    assert stored.detail["net"] == f"{approved['figures']['net']:.2f}"
    approval = db.session.execute(select(AuditEvent).where(
        AuditEvent.event_type == "settlement.final_approve")).scalar_one()
    # Made under the head as of the previous commit: it names an event that existed before the approval …
    assert stored.event_id < approval.id and approval.detail["anchor"] == anchor
    assert db.session.get(Settlement, approved["id"]).anchor == anchor
    # … and once the approval committed, its own events were anchored too.
    after = [a for a in anchors.stored_anchors(store).anchors if a.reason == "settlement_approved"]
    assert after and after[-1].event_id >= approval.id


def test_approval_waits_when_the_anchor_cannot_be_written(world, store, monkeypatch):
    world.user("buyer2", "buyer")
    completed_items(1, prefix="ANF", store=store)
    sid = open_settlement(world)["id"]
    for who, url, body in (("pm", "submit", {}), ("auditor", "accept", {"comment": "ok"}),
                           ("buyer", "first-review", {"decision": "approve"})):
        assert world.post(who, f"/api/v1/settlements/{sid}/{url}", json=body).status_code == 200
    monkeypatch.setattr(ArtefactStore, "put_locked", lambda *a, **k: (_ for _ in ()).throw(
        StoreUnavailable("store down")))
    r = world.post("buyer2", f"/api/v1/settlements/{sid}/final-approval", json={"decision": "approve"})
    assert r.status_code == 503
    assert world.get("pm", f"/api/v1/settlements/{sid}").get_json()["status"] == "final_approval"


def _rewrite_zip(src: Any, dst: Any, replace: dict[str, bytes]) -> None:
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w") as zout:
        for info in zin.infolist():
            zout.writestr(info.filename, replace.get(info.filename, zin.read(info.filename)))


def test_a_bundle_carries_its_anchor_and_verifies_against_the_store(approved, world, app, store, tmp_path, cli):
    r = world.get("auditor", f"/api/v1/settlements/{approved['id']}/evidence.zip")
    assert r.status_code == 200
    bundle = tmp_path / "bundle.zip"
    bundle.write_bytes(r.data)
    with zipfile.ZipFile(bundle) as zf:
        manifest = zf.read(MANIFEST)
        carried = json.loads(zf.read(ANCHOR))
    assert carried["manifest_sha256"] == hashlib.sha256(manifest).hexdigest()
    stored = anchors.read_anchor(store, carried["anchor"]["key"], carried["anchor"]["version_id"])
    assert stored.detail["manifest_sha256"] == carried["manifest_sha256"] and stored.reason == "evidence_bundle"

    result = cli("evidence", "verify", str(bundle), "--quiet", "--against-anchors")
    assert result.exit_code == 0 and "anchor OK" in result.output, result.output

    # Someone swaps a file and fixes its line in the manifest: the files match the manifest again …
    with zipfile.ZipFile(bundle) as zf:
        name = next(n for n in zf.namelist() if n.endswith(".pdf"))
    forged = b"%PDF-1.4 a different document"
    rows = list(csv.reader(io.StringIO(manifest.decode("utf-8-sig"))))
    column = {c: i for i, c in enumerate(rows[0])}
    for row in rows[1:]:
        if row[column["file"]] == name:
            row[column["size"]], row[column["sha256"]] = str(len(forged)), hashlib.sha256(forged).hexdigest()
    text = io.StringIO()
    csv.writer(text).writerows(rows)
    swapped = tmp_path / "swapped.zip"
    _rewrite_zip(bundle, swapped, {name: forged, MANIFEST: ("\ufeff" + text.getvalue()).encode("utf-8")})
    result = cli("evidence", "verify", str(swapped), "--quiet")
    assert result.exit_code == 0, result.output
    # … but no anchor in the store carries that manifest.
    result = cli("evidence", "verify", str(swapped), "--quiet", "--against-anchors")
    assert result.exit_code == 1 and "ANCHOR MISMATCH" in result.output, result.output


def test_anchors_of_pruned_events_are_set_apart(world, app, store):
    """After a prune, anchors of exported events are counted apart (`--exports` checks that part of the chain);
    an anchor of the checkpoint's own last event is compared with the checkpoint's hash."""
    from datetime import UTC, datetime, timedelta

    from engine.trust.retention import prune

    _make_events(world, 2)
    assert anchors.anchor_now(db.session, store, "test") is not None
    _make_events(world, 1, "ANC-L")
    at_head = anchors.anchor_now(db.session, store, "test")
    prune(db.session, store, audit.Actor(None, "cli", "admin"), 180, now=datetime.now(UTC) + timedelta(days=400))
    db.session.commit()
    assert audit.latest_checkpoint(db.session).last_event_id == at_head.event_id
    report = anchors.verify_against(db.session, anchors.stored_anchors(store).anchors)
    assert report.ok and (report.before_checkpoint, report.checked) == (1, 1)

"""Tamper-evident audit: the chain verifies, tampering is named, rows are append-only, pruning exports first."""
from __future__ import annotations

import json
import sqlite3
from datetime import UTC, datetime, timedelta

import psycopg
import pytest
from sqlalchemy import func, select, text

from api.extensions import db
from engine.trust import audit
from engine.trust.retention import prune, verify_exports
from storage.models import AuditCheckpoint, AuditEvent


def raw_sql(app, sql: str, params: tuple = ()) -> None:
    """Write behind the application's back, as a DBA or an attacker with database access would."""
    url = app.config["SQLALCHEMY_DATABASE_URI"]
    db.session.remove()
    if url.startswith("sqlite"):
        with sqlite3.connect(url.removeprefix("sqlite:///")) as conn:
            conn.execute(sql.replace("%s", "?"), params)
    else:
        with psycopg.connect(url.replace("postgresql+psycopg://", "postgresql://"), autocommit=False) as conn:
            # Superuser only: disables triggers for this session, i.e. someone bypassing the trigger.
            conn.execute("SET session_replication_role = replica")
            conn.execute(sql, params)


def _make_events(world, n_items: int = 2) -> None:
    for i in range(n_items):
        item = world.new_item(f"AUD-{i}")
        world.upload("impl", item["id"], "requirement_letter")


def _ids() -> list[int]:
    return list(db.session.scalars(select(AuditEvent.id).order_by(AuditEvent.id)))


def test_chain_verifies_and_cli_says_ok(world, app, cli):
    _make_events(world)
    assert audit.verify_database(db.session).ok
    result = cli("audit", "verify")
    assert result.exit_code == 0, result.output
    assert "audit chain OK" in result.output


def test_tampered_content_is_named(world, app, cli):
    _make_events(world)
    ids = _ids()
    victim = ids[len(ids) // 2]
    raw_sql(app, "UPDATE audit_events SET outcome = %s WHERE id = %s", ("failure", victim))
    report = audit.verify_database(db.session)
    assert report.first_broken_id == victim and "content" in report.reason
    result = cli("audit", "verify")
    assert result.exit_code == 1
    assert f"BROKEN at audit event {victim}" in result.output


def test_deleted_event_breaks_the_next_link(world, app, monkeypatch):
    _make_events(world)
    ids = _ids()
    raw_sql(app, "DELETE FROM audit_events WHERE id = %s", (ids[3],))
    report = audit.verify_database(db.session)
    assert report.first_broken_id == ids[4] and "prev_hash" in report.reason


def test_application_cannot_update_or_delete_audit_rows(world, app):
    _make_events(world, 1)
    event = db.session.scalars(select(AuditEvent).limit(1)).one()
    event.outcome = "failure"
    with pytest.raises(audit.AuditTampering):
        db.session.flush()
    db.session.rollback()
    with pytest.raises(audit.AuditTampering):
        db.session.execute(text("UPDATE audit_events SET outcome = 'x'"))
    db.session.rollback()
    with pytest.raises(audit.AuditTampering):
        db.session.execute(text("DELETE FROM audit_events"))
    db.session.rollback()
    event = db.session.scalars(select(AuditEvent).limit(1)).one()
    db.session.delete(event)
    with pytest.raises(audit.AuditTampering):
        db.session.flush()
    db.session.rollback()
    # Even inside the prune window an UPDATE stays refused.
    audit.allow_prune(db.session)
    with pytest.raises(audit.AuditTampering):
        db.session.execute(text("UPDATE audit_events SET outcome = 'x'"))
    db.session.rollback()
    assert audit.verify_database(db.session).ok


def test_postgresql_trigger_refuses_update_and_delete(world, app, backend):
    if backend != "postgresql":
        pytest.skip("the trigger is PostgreSQL only; SQLite relies on the application guard")
    _make_events(world, 1)
    url = app.config["SQLALCHEMY_DATABASE_URI"].replace("postgresql+psycopg://", "postgresql://")
    db.session.remove()
    with psycopg.connect(url) as conn:
        for sql in ("UPDATE audit_events SET outcome = 'x'", "DELETE FROM audit_events",
                    "TRUNCATE audit_events"):
            with pytest.raises(psycopg.errors.InsufficientPrivilege, match="append-only"):
                conn.execute(sql)
            conn.rollback()
        # The controlled way: deletes (never updates) inside a transaction that set the prune flag.
        conn.execute("SET LOCAL itemgate.allow_prune = 'on'")
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("UPDATE audit_events SET outcome = 'x'")
        conn.rollback()
    assert audit.verify_database(db.session).ok


def test_retention_setting_has_a_floor():
    from api.config import ConfigError, load_settings

    with pytest.raises(ConfigError, match="180"):
        load_settings({"ITEMGATE_AUDIT_RETENTION_DAYS": "90"}, testing=True)
    assert load_settings({}, testing=True).audit_retention_days == 180


def test_prune_exports_then_deletes_and_the_chain_still_verifies(world, app, store, cli):
    _make_events(world)
    before = _ids()
    last_hash = db.session.scalars(select(AuditEvent.hash).order_by(AuditEvent.id.desc()).limit(1)).one()
    future = datetime.now(UTC) + timedelta(days=200)  # every event so far is older than 180 days then
    actor = audit.Actor(None, "test", "admin")
    with pytest.raises(Exception, match="180"):
        prune(db.session, store, actor, 30, now=future)
    result = prune(db.session, store, actor, 180, now=future)
    db.session.commit()
    assert result.pruned == len(before)
    remaining = list(db.session.scalars(select(AuditEvent).order_by(AuditEvent.id)))
    assert [e.event_type for e in remaining] == ["audit.pruned"]
    assert remaining[0].prev_hash == last_hash  # the prune record links to the old head
    checkpoint = db.session.scalars(select(AuditCheckpoint)).one()
    assert checkpoint.last_event_id == before[-1] and checkpoint.last_hash == last_hash
    # The export holds exactly the pruned events, byte-identical to what the checkpoint recorded.
    with store.iter_content(checkpoint.export_key, checkpoint.export_version_id) as chunks:
        lines = b"".join(chunks).decode().splitlines()
    assert [json.loads(line)["id"] for line in lines] == before
    assert verify_exports(db.session, store).ok
    report = audit.verify_database(db.session)
    assert report.ok and report.checked == 1
    # The chain goes on after a prune; verify still walks it from the checkpoint.
    world.new_item("AUD-after")
    assert audit.verify_database(db.session).ok
    result = cli("audit", "verify", "--exports")
    assert result.exit_code == 0, result.output
    assert "from checkpoint" in result.output and "exports OK" in result.output
    # Nothing is old enough with the real clock: the CLI prunes nothing.
    result = cli("audit", "prune")
    assert result.exit_code == 0 and "nothing older" in result.output, result.output


def test_prune_refuses_a_broken_chain(world, app, store):
    _make_events(world)
    ids = _ids()
    raw_sql(app, "UPDATE audit_events SET username = %s WHERE id = %s", ("mallory", ids[2]))
    with pytest.raises(Exception, match=f"broken at event {ids[2]}"):
        prune(db.session, store, audit.Actor(None, "test", "admin"), 180,
              now=datetime.now(UTC) + timedelta(days=200))
    db.session.rollback()
    assert db.session.execute(select(func.count(AuditEvent.id))).scalar() == len(ids)
    assert db.session.execute(select(func.count(AuditCheckpoint.id))).scalar() == 0

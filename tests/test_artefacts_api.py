"""Artefact upload and download over HTTP against the real S3 server, including bad input and an S3 outage."""
from __future__ import annotations

import hashlib

import pytest
from sqlalchemy import func, select

from api.demo import demo_pdf
from api.extensions import db
from storage.models import Artefact, AuditEvent, WorkloadEntry


def test_upload_and_download_roundtrip(world, store):
    item_id = world.new_item("SH-UP-1")["id"]
    body = demo_pdf("hello")
    r = world.upload("impl", item_id, "requirement_letter", body, "需求函（盖章）.pdf")
    assert r.status_code == 201, r.get_json()
    art = r.get_json()
    assert art["sha256"] == hashlib.sha256(body).hexdigest()
    assert art["size"] == len(body) and art["media_type"] == "application/pdf"
    assert art["filename"] == "需求函（盖章）.pdf" and art["uploaded_by"] == "impl" and art["version_id"]
    row = db.session.get(Artefact, art["id"])
    assert row.key.startswith(f"contracts/SH-YWTB-2025/items/{item_id}/requirement_letter/")
    assert "需求函" not in row.key  # server-generated key, never the user's filename
    assert store.hash_object(row.key, row.version_id) == (len(body), art["sha256"])
    got = world.get("auditor", f"/api/v1/artefacts/{art['id']}/content")
    assert got.status_code == 200 and got.data == body
    assert got.headers["Content-Type"] == "application/pdf"
    assert "filename*=UTF-8''" in got.headers["Content-Disposition"]
    # Another department's reviewer cannot download it.
    assert world.get("rev_b", f"/api/v1/artefacts/{art['id']}/content").status_code == 404


def _rows():
    return db.session.execute(select(func.count(Artefact.id))).scalar()


def test_bad_uploads_are_refused_and_leave_no_row(world, app):
    item_id = world.new_item("SH-BAD")["id"]
    exe = b"MZ\x90\x00\x03\x00\x00\x00" + b"\x00" * 200
    r = world.upload("impl", item_id, "requirement_letter", exe, "letter.pdf")
    assert r.status_code == 415 and r.get_json()["code"] == "unsupported_media_type"
    r = world.upload("impl", item_id, "not_a_kind")
    assert r.status_code == 422 and r.get_json()["code"] == "unknown_kind"
    r = world.post("impl", f"/api/v1/items/{item_id}/artefacts", data={"kind": "survey_form"},
                   content_type="multipart/form-data")
    assert r.status_code == 422
    assert _rows() == 0


def test_oversized_upload_gets_413(world, app):
    item_id = world.new_item("SH-BIG")["id"]
    settings = app.config["ITEMGATE"]
    limit = settings.max_upload_bytes
    big = b"%PDF-1.4\n" + b"0" * (limit + 2 * 1024 * 1024)
    r = world.upload("impl", item_id, "requirement_letter", big, "big.pdf")
    assert r.status_code == 413
    assert r.mimetype == "application/problem+json"
    assert _rows() == 0


@pytest.fixture
def small_limit(app):
    from dataclasses import replace

    settings = app.config["ITEMGATE"]
    app.config["ITEMGATE"] = replace(settings, max_upload_mb=1)
    yield
    app.config["ITEMGATE"] = settings


def test_size_limit_is_configurable(world, app, small_limit):
    item_id = world.new_item("SH-LIMIT")["id"]
    body = b"%PDF-1.4\n" + b"0" * (1024 * 1024 + 10)
    r = world.upload("impl", item_id, "requirement_letter", body, "a.pdf")
    assert r.status_code == 413 and r.get_json()["code"] == "too_large"
    assert _rows() == 0


def test_s3_stopped_gives_503_and_nothing_recorded(world, app, tmp_path):
    from storage.artefact_store import ArtefactStore
    from storage.s3server import EmbeddedS3

    item_id = world.new_item("SH-S3DOWN", channels=["pc"])["id"]
    good = app.extensions["itemgate_store"]
    server = EmbeddedS3(tmp_path / "s3", "AKDOWN", "secret-down-123", "down", log_path=tmp_path / "w.log")
    server.start()
    down = ArtefactStore(server.endpoint, "AKDOWN", "secret-down-123", "down")
    down.ensure_bucket()
    server.stop()
    app.extensions["itemgate_store"] = down
    try:
        world.headers("impl")  # log in first: a token is an audited event of its own
        before_events = db.session.execute(select(func.count(AuditEvent.id))).scalar()
        r = world.upload("impl", item_id, "requirement_letter")
        assert r.status_code == 503 and r.get_json()["code"] == "store_unavailable"
        assert _rows() == 0
        after_events = db.session.execute(select(func.count(AuditEvent.id))).scalar()
        assert after_events == before_events
        # With the store down, a gate cannot be verified either: 503, and the task stays open.
        r = world.get("pm", "/readyz")
        assert r.status_code == 503 and r.get_json()["checks"]["object_store"] == "unreachable"
    finally:
        app.extensions["itemgate_store"] = good
        down.close()
    assert db.session.execute(select(func.count(WorkloadEntry.id))).scalar() == 0
    assert world.task_named(item_id, "intake")["status"] == "ready"


def test_upload_is_hashed_while_it_is_received_not_read_again(world, store, monkeypatch):
    from storage import artefact_store as module

    def no_second_pass(*_args, **_kwargs):
        raise AssertionError("the spooled upload was read once more just to hash it")

    monkeypatch.setattr(module, "_hash_stream", no_second_pass)
    item_id = world.new_item("SH-ONEPASS")["id"]
    body = demo_pdf("one pass") + b"%" + b"\x00" * (3 * 1024 * 1024)  # large enough to spool to disk
    r = world.upload("impl", item_id, "test_report", body, "report.pdf")
    assert r.status_code == 201, r.get_json()
    art = r.get_json()
    assert art["sha256"] == hashlib.sha256(body).hexdigest() and art["size"] == len(body)
    row = db.session.get(Artefact, art["id"])
    assert store.hash_object(row.key, row.version_id) == (len(body), art["sha256"])

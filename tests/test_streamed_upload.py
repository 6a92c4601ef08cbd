"""Uploads parsed and stored while they arrive (multipart body read by the view, parts sent to S3 on the way),
against the real S3 server: the stored bytes, the ETag-based gate check, and no leftovers on every refusal."""
from __future__ import annotations

import hashlib
import io
import os
import time
import zipfile

import pytest
from sqlalchemy import func, select, update

from api.extensions import db
from engine.evidence.artefacts import verify_artefact
from engine.evidence.integrity import fsck
from storage.artefact_store import PART_SIZE, ArtefactStore
from storage.models import Artefact, AuditEvent

MiB = 1024 * 1024
CONTRACT = "SH-YWTB-2025"


def big_pdf(size: int) -> bytes:
    # Random bytes without "P" never hold "PK", so the sniffer's zip-polyglot check finds nothing by chance.
    return b"%PDF-1.4\n" + os.urandom(size - 9).replace(b"P", b"p")


def zip_bytes() -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as archive:
        archive.writestr("hidden.html", "<script>alert(1)</script>")
    return out.getvalue()


def _prefix(item_id: int) -> str:
    return f"contracts/{CONTRACT}/items/{item_id}/"


def stored_state(store: ArtefactStore, item_id: int) -> dict:
    """Rows, audit events, object versions and in-progress multipart uploads of one item: what must be unchanged
    after a refused upload (objects are compared as sets, since item ids repeat across tests in one bucket)."""
    uploads = store._client._list_multipart_uploads(store.bucket, prefix=_prefix(item_id)).uploads
    return {
        "rows": db.session.execute(select(func.count(Artefact.id))).scalar(),
        "events": db.session.execute(select(func.count(AuditEvent.id))).scalar(),
        "objects": {(o.key, o.version_id) for o in store.iter_objects(_prefix(item_id))},
        "uploads": {(u.object_name, u.upload_id) for u in uploads},
    }


@pytest.fixture
def aborted(monkeypatch) -> list[str]:
    """Keys of the multipart uploads aborted during the test: proof that a refusal came after parts were sent."""
    from storage import artefact_store

    keys: list[str] = []
    real = artefact_store._MultipartUpload.abort

    def abort(self) -> None:
        keys.append(self._key)
        real(self)

    monkeypatch.setattr(artefact_store._MultipartUpload, "abort", abort)
    return keys


@pytest.fixture
def item(world):
    item_id = world.new_item("STREAM-1", channels=["pc"])["id"]
    world.headers("impl")  # log in first: a token is an audited event of its own
    return item_id


def test_large_upload_is_stored_while_received_with_its_etag(world, store, item):
    body = big_pdf(2 * PART_SIZE + 12345)  # three parts, the last one short
    r = world.upload("impl", item, "requirement_letter", body, "大文件.pdf")
    assert r.status_code == 201, r.get_json()
    art = r.get_json()
    assert art["sha256"] == hashlib.sha256(body).hexdigest() and art["size"] == len(body)
    assert art["media_type"] == "application/pdf" and art["filename"] == "大文件.pdf"
    row = db.session.get(Artefact, art["id"])
    found = store.stat_object(row.key, row.version_id)
    # A multipart upload: the ETag names the part count, and the object has no SHA-256 metadata.
    assert row.etag and row.etag == found.etag and row.etag.endswith("-3")
    assert "sha256" not in found.metadata and found.metadata["content-type"] == "application/pdf"
    assert store.hash_object(row.key, row.version_id) == (len(body), art["sha256"])
    assert verify_artefact(store, row)
    got = world.get("auditor", f"/api/v1/artefacts/{art['id']}/content")
    assert got.status_code == 200 and hashlib.sha256(got.data).hexdigest() == art["sha256"]
    assert not fsck(db.session, store, deep=False).problems
    assert not fsck(db.session, store).problems


def test_large_office_document_is_typed_from_its_directory(world, store, item):
    # A zip container's type is only known from its central directory, at the end: the object is created as a
    # zip (its head says so), and the row records what the whole file is.
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as docx:
        docx.writestr("[Content_Types].xml", "<Types/>")
        docx.writestr("word/document.xml", "<w:document/>")
        docx.writestr("word/media/scan.png", os.urandom(PART_SIZE + MiB), compress_type=zipfile.ZIP_STORED)
    r = world.upload("impl", item, "requirement_letter", out.getvalue(), "letter.docx")
    assert r.status_code == 201, r.get_json()
    assert r.get_json()["media_type"] == "application/vnd.openxmlformats-officedocument.wordprocessingml.document"
    row = db.session.get(Artefact, r.get_json()["id"])
    found = store.stat_object(row.key, row.version_id)
    assert found.metadata["content-type"] == "application/zip" and row.etag == found.etag
    assert verify_artefact(store, row)


def test_small_upload_keeps_its_sha256_metadata(world, store, item):
    body = big_pdf(PART_SIZE)  # exactly one part: one PUT, as before
    r = world.upload("impl", item, "requirement_letter", body, "a.pdf")
    assert r.status_code == 201, r.get_json()
    row = db.session.get(Artefact, r.get_json()["id"])
    found = store.stat_object(row.key, row.version_id)
    assert found.metadata["sha256"] == row.sha256 == hashlib.sha256(body).hexdigest()
    assert row.etag == found.etag and "-" not in row.etag
    assert verify_artefact(store, row)


def test_gate_passes_on_streamed_evidence(world, store, item):
    r = world.upload("impl", item, "requirement_letter", big_pdf(PART_SIZE + 1), "letter.pdf")
    assert r.status_code == 201, r.get_json()
    world.complete_task_as("impl", item, "intake", {"summary": "x"})
    assert db.session.get(Artefact, r.get_json()["id"]).etag.endswith("-2")


@pytest.mark.parametrize("tamper", ["replaced", "missing"])
def test_gate_fails_when_streamed_object_is_replaced_or_missing(world, store, item, tamper):
    body = big_pdf(PART_SIZE + 4096)
    r = world.upload("impl", item, "requirement_letter", body, "letter.pdf")
    assert r.status_code == 201, r.get_json()
    row = db.session.get(Artefact, r.get_json()["id"])
    if tamper == "replaced":
        # Same key and size, other bytes, no metadata: only the ETag tells it from the recorded object.
        other = big_pdf(len(body))
        put = store._client.put_object(store.bucket, row.key, io.BytesIO(other), len(other),
                                       content_type="application/pdf")
        db.session.execute(update(Artefact).where(Artefact.id == row.id).values(version_id=put.version_id))
    else:
        store.delete(row.key, row.version_id)
    db.session.commit()
    db.session.expire_all()
    row = db.session.get(Artefact, row.id)
    assert not verify_artefact(store, row)
    problems = {p.artefact_id: p.problem for p in fsck(db.session, store, deep=False).problems}
    assert problems[row.id] == ("ETag differs from recorded" if tamper == "replaced" else "object missing")
    task = world.task_named(item, "intake")
    world.upload("impl", item, "complexity_statement")
    r = world.complete("impl", task["id"], {"summary": "x"})
    assert r.status_code == 422 and r.get_json()["code"] == "gate_unmet", r.get_json()
    assert r.get_json()["missing"] == ["requirement_letter"]


def test_a_row_with_an_etag_is_not_verified_on_size_alone(world, store, item):
    body = big_pdf(PART_SIZE + 1)
    row = db.session.get(Artefact, world.upload("impl", item, "requirement_letter", body, "a.pdf").get_json()["id"])
    db.session.execute(update(Artefact).where(Artefact.id == row.id).values(etag="0" * 32 + "-2"))
    db.session.commit()
    db.session.expire_all()
    assert not verify_artefact(store, db.session.get(Artefact, row.id))


@pytest.mark.parametrize("refused", ["pdf_zip_polyglot", "executable"])
def test_refused_type_leaves_nothing(world, store, item, refused, aborted):
    # A polyglot is refused only once the whole file is in (parts were sent by then); an executable at its head.
    body = (big_pdf(2 * PART_SIZE) + zip_bytes() if refused == "pdf_zip_polyglot"
            else b"MZ\x90\x00" + os.urandom(2 * PART_SIZE))
    before = stored_state(store, item)
    r = world.upload("impl", item, "requirement_letter", body, "letter.pdf")
    assert r.status_code == 415 and r.get_json()["code"] == "unsupported_media_type", r.get_json()
    assert len(aborted) == (1 if refused == "pdf_zip_polyglot" else 0)
    assert stored_state(store, item) == before


def test_refused_head_before_an_unknown_kind_answers_for_the_kind(world, store, item):
    # The kind is checked first, as when the form is parsed before the view runs.
    before = stored_state(store, item)
    exe = b"MZ\x90\x00" + os.urandom(PART_SIZE + 10)
    r = world.multipart("impl", f"/api/v1/items/{item}/artefacts",
                        {"file": (io.BytesIO(exe), "x.pdf"), "kind": "no_such_kind"})
    assert r.status_code == 422 and r.get_json()["code"] == "unknown_kind"
    r = world.multipart("impl", f"/api/v1/items/{item}/artefacts",
                        {"file": (io.BytesIO(exe), "x.pdf"), "kind": "requirement_letter"})
    assert r.status_code == 415
    assert stored_state(store, item) == before


@pytest.fixture
def limit_12mb(app):
    from dataclasses import replace

    settings = app.config["ITEMGATE"]
    app.config["ITEMGATE"] = replace(settings, max_upload_mb=12)
    yield 12 * MiB
    app.config["ITEMGATE"] = settings


def test_too_large_midway_is_413_and_aborted(world, store, item, limit_12mb, aborted):
    # Content-Length passes the app-wide bound; counting while streaming stops it after parts were sent.
    before = stored_state(store, item)
    r = world.upload("impl", item, "requirement_letter", big_pdf(limit_12mb + MiB), "big.pdf")
    assert r.status_code == 413 and r.get_json()["code"] == "too_large", r.get_json()
    assert len(aborted) == 1
    assert stored_state(store, item) == before


def test_too_large_content_length_is_413_before_reading(world, app, store, item, monkeypatch):
    monkeypatch.setitem(app.config, "MAX_CONTENT_LENGTH", 4 * MiB)
    before = stored_state(store, item)
    r = world.upload("impl", item, "requirement_letter", big_pdf(PART_SIZE), "big.pdf")
    assert r.status_code == 413 and r.get_json()["code"] == "too_large", r.get_json()
    assert stored_state(store, item) == before


@pytest.mark.parametrize("order", ["kind_first", "kind_last"])
def test_unknown_kind_is_422_and_leaves_nothing(world, store, item, order):
    before = stored_state(store, item)
    file = (io.BytesIO(big_pdf(PART_SIZE + 100)), "a.pdf")
    data = {"kind": "no_such_kind", "file": file} if order == "kind_first" else {"file": file,
                                                                                 "kind": "no_such_kind"}
    r = world.multipart("impl", f"/api/v1/items/{item}/artefacts", data)
    assert r.status_code == 422 and r.get_json()["code"] == "unknown_kind", r.get_json()
    assert stored_state(store, item) == before


def test_kind_and_task_after_the_file_still_work(world, store, item):
    body = big_pdf(2 * PART_SIZE + 1)
    task = world.task_named(item, "intake")
    r = world.multipart("impl", f"/api/v1/items/{item}/artefacts",
                        {"file": (io.BytesIO(body), "late.pdf"), "kind": "requirement_letter",
                         "task_id": str(task["id"])})
    assert r.status_code == 201, r.get_json()
    row = db.session.get(Artefact, r.get_json()["id"])
    assert row.kind == "requirement_letter" and row.task_id == task["id"]
    assert row.key.startswith(_prefix(item) + "requirement_letter/")
    assert store.hash_object(row.key, row.version_id) == (len(body), hashlib.sha256(body).hexdigest())
    assert verify_artefact(store, row)


def test_missing_file_is_422(world, store, item):
    r = world.multipart("impl", f"/api/v1/items/{item}/artefacts", {"kind": "requirement_letter"})
    assert r.status_code == 422 and r.get_json()["code"] == "invalid_form"


class _DroppedBody(io.BytesIO):
    """A body whose end the test client measures (seek to the end, tell) as `claimed` bytes, but which ends
    early when read: what a server sees of a client that went away mid-upload."""

    def __init__(self, data: bytes, claimed: int) -> None:
        super().__init__(data)
        self._claimed = claimed
        self._at_claimed_end = False

    def seek(self, pos: int, whence: int = 0) -> int:
        self._at_claimed_end = whence == io.SEEK_END
        return self._claimed if self._at_claimed_end else super().seek(pos, whence)

    def tell(self) -> int:
        return self._claimed if self._at_claimed_end else super().tell()


@pytest.mark.parametrize("server", ["werkzeug", "gunicorn"])
def test_client_gone_midway_leaves_nothing(world, client, store, item, server, aborted):
    from werkzeug.datastructures import FileStorage, MultiDict
    from werkzeug.test import stream_encode_multipart

    fields = MultiDict([("kind", "requirement_letter"),
                        ("file", FileStorage(io.BytesIO(big_pdf(3 * PART_SIZE)), "a.pdf", name="file"))])
    stream, length, boundary = stream_encode_multipart(fields)
    with stream:
        body = stream.read()
    before = stored_state(store, item)
    # The body stops after two parts' worth, though Content-Length promised all of it. A server that terminates
    # the input itself (gunicorn says so in the environ) hands the app a short body instead of an error.
    r = client.post(f"/api/v1/items/{item}/artefacts", headers=world.headers("impl"),
                    input_stream=_DroppedBody(body[: 2 * PART_SIZE + MiB], length),
                    content_type=f'multipart/form-data; boundary="{boundary}"',
                    environ_overrides={"wsgi.input_terminated": True} if server == "gunicorn" else {})
    assert r.status_code == 400, r.get_json()
    assert len(aborted) == 1
    assert stored_state(store, item) == before


def test_store_failing_midway_is_503_and_nothing_recorded(world, app, store, item, s3_server, aborted):
    from tests.test_faults import FaultProxy

    host, port = s3_server.endpoint.removeprefix("http://").split(":")
    proxy = FaultProxy((host, int(port)), reset_after=256 * 1024)
    before = stored_state(store, item)
    flaky = ArtefactStore(proxy.endpoint, s3_server.access_key, s3_server.secret_key, store.bucket,
                          read_timeout=2.0)
    app.extensions["itemgate_store"] = flaky
    try:
        started = time.monotonic()
        r = world.upload("impl", item, "requirement_letter", big_pdf(4 * PART_SIZE), "big.pdf")
        elapsed = time.monotonic() - started
    finally:
        app.extensions["itemgate_store"] = store
        flaky.close()
        proxy.close()
    assert r.status_code == 503 and r.get_json()["code"] == "store_unavailable", r.get_json()
    assert "nothing was recorded" in r.get_json()["detail"]
    assert elapsed < 30
    assert len(aborted) == 1
    assert stored_state(store, item) == before


def test_web_form_upload_still_takes_the_parsed_form_path(world, store, item, monkeypatch):
    """When something read the form first (the web's CSRF check does), the view stores werkzeug's spool."""
    from api import uploads

    def no_streaming(*_args, **_kwargs):
        raise AssertionError("the streamed path ran although the form was parsed")

    monkeypatch.setattr(uploads, "receive_artefact_form", no_streaming)

    def _read_form() -> None:  # what the web's CSRF check does before every web view
        from flask import request

        request.form  # noqa: B018

    # Appended directly: Flask refuses new setup hooks once the app has served a request.
    world.app.before_request_funcs.setdefault(None, []).append(_read_form)
    try:
        body = big_pdf(PART_SIZE + 1)
        r = world.upload("impl", item, "requirement_letter", body, "a.pdf")
    finally:
        world.app.before_request_funcs[None].remove(_read_form)
    assert r.status_code == 201, r.get_json()
    row = db.session.get(Artefact, r.get_json()["id"])
    assert store.stat_object(row.key, row.version_id).metadata["sha256"] == hashlib.sha256(body).hexdigest()
    assert verify_artefact(store, row)


# ---------------------------------------------------------------- the store's side: StreamedPut


def _uploads(store: ArtefactStore, key: str) -> list:
    return list(store._client._list_multipart_uploads(store.bucket, prefix=key).uploads)


def _part_threads() -> list:
    import threading

    return [t for t in threading.enumerate() if t.name.startswith("s3-part") and t.is_alive()]


def test_streamed_put_sends_parts_before_the_last_byte(artefact_store):
    data = os.urandom(3 * PART_SIZE + PART_SIZE // 2)
    key = ArtefactStore.new_key("SP", 1, "test_report")
    put = artefact_store.streamed_put(64 * MiB)
    put.start(key, "application/pdf")
    cut = 2 * PART_SIZE + 1
    for at in range(0, cut, MiB):
        put.write(data[at : min(at + MiB, cut)])
    # Two parts are complete and a byte beyond them has arrived: the upload exists while the rest is unwritten.
    assert put.multipart and [u.object_name for u in _uploads(artefact_store, key)] == [key]
    for at in range(cut, len(data), MiB):
        put.write(data[at : at + MiB])
    put.end()
    assert hashlib.sha256(put.spool.read()).hexdigest() == hashlib.sha256(data).hexdigest()
    stored = put.finish("application/pdf")
    assert stored.sha256 == hashlib.sha256(data).hexdigest() and stored.size == len(data)
    assert stored.etag and stored.etag.endswith("-4")
    assert artefact_store.stat_object(key, stored.version_id).etag == stored.etag
    assert artefact_store.hash_object(key, stored.version_id) == (len(data), stored.sha256)
    assert not _uploads(artefact_store, key) and not _part_threads()


def test_streamed_put_named_late_and_aborted_leaves_nothing(artefact_store):
    data = os.urandom(2 * PART_SIZE + 3)
    key = ArtefactStore.new_key("SP", 2, "test_report")
    put = artefact_store.streamed_put(64 * MiB)
    put.write(data)
    assert not put.multipart  # no key yet: the parts wait in the spool
    put.end()
    put.start(key, "application/pdf")
    assert put.multipart
    put.abort()
    put.abort()  # idempotent
    assert not _uploads(artefact_store, key) and not _part_threads()
    assert not list(artefact_store.iter_objects(key))


def test_streamed_put_refuses_more_than_the_limit(artefact_store):
    from storage.artefact_store import TooLarge

    put = artefact_store.streamed_put(PART_SIZE + 10)
    put.start(ArtefactStore.new_key("SP", 3, "test_report"), "application/pdf")
    put.write(os.urandom(PART_SIZE))
    with pytest.raises(TooLarge):
        put.write(os.urandom(11))
    put.abort()

"""Hostile input over the API: filenames, zip bombs and polyglots, odd JSON, and login guessing."""
from __future__ import annotations

import io
import json
import unicodedata
import zipfile

import pytest
from sqlalchemy import func, select

from api.extensions import db
from storage.models import Artefact, AuditEvent, LoginAttempt
from tests.conftest import PASSWORD, make_app

NASTY_NAMES = [
    "../../../etc/passwd.pdf",
    "..\\..\\windows\\system32\\evil.pdf",
    "/absolute/path/report.pdf",
    "line\r\nX-Injected: yes\r\n.pdf",
    "nul\x00byte\x07bell.pdf",
    "quote\"semi;colon\\back.pdf",
    "\u202egpj.exe.pdf",            # right-to-left override disguising an extension
    "\u200f\u200eزارة\u2066x\u2069.pdf",  # bidi marks and isolates
    "x" * 1000 + ".pdf",
    "...",
    "",
    "测试报告（终稿）.pdf",
]


def test_hostile_filenames_are_stored_and_served_safely(world):
    item_id = world.new_item("HOSTILE-FN")["id"]
    for name in NASTY_NAMES:
        _check_filename(world, item_id, name)


def _check_filename(world, item_id, name):
    r = world.upload("impl", item_id, "requirement_letter", filename=name)
    if r.status_code != 201:
        # A CR/LF in the name breaks the multipart header itself: the file part is lost on the way in.
        assert r.status_code == 422 and "\n" in name, r.get_json()
        return
    body = r.get_json()
    stored = body["filename"]
    assert "/" not in stored and "\\" not in stored and stored not in ("", ".", "..")
    assert not any(unicodedata.category(c)[0] == "C" for c in stored)  # no control, format (bidi) chars
    assert len(stored) <= 180
    artefact = db.session.get(Artefact, body["id"])
    assert artefact.key.startswith(f"contracts/SH-YWTB-2025/items/{item_id}/requirement_letter/")
    assert name.strip("./") == "" or name[:8] not in artefact.key  # the key never carries the user's name
    r = world.get("auditor", f"/api/v1/artefacts/{body['id']}/content")
    assert r.status_code == 200
    disposition = r.headers["Content-Disposition"]
    assert disposition.isascii() and disposition.isprintable()
    assert "\r" not in disposition and "\n" not in disposition
    plain = disposition.split('filename="', 1)[1].split('"', 1)[0]
    assert all(c not in plain for c in '"\\;/')
    assert "filename*=UTF-8''" in disposition
    r.close()


def _zip_bytes(members: dict[str, bytes], compression: int = zipfile.ZIP_DEFLATED) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression) as z:
        for name, data in members.items():
            z.writestr(name, data)
    return buf.getvalue()


def test_zip_bomb_is_refused(world):
    item_id = world.new_item("HOSTILE-ZIP")["id"]
    bomb = _zip_bytes({"[Content_Types].xml": b"<Types/>", "word/document.xml": b"\0" * (60 * 1024 * 1024)})
    assert len(bomb) < 200 * 1024
    r = world.upload("impl", item_id, "requirement_letter", bomb, "bomb.docx")
    assert r.status_code == 415 and r.get_json()["code"] == "unsupported_media_type"
    assert "bomb" in r.get_json()["detail"]
    assert db.session.execute(select(func.count(Artefact.id))).scalar() == 0


@pytest.mark.parametrize("kind", ["pdf_with_zip", "zip_with_pdf", "exe_as_pdf", "html_as_pdf"])
def test_polyglots_and_disguised_files_are_refused(world, kind):
    item_id = world.new_item("HOSTILE-POLY")["id"]
    archive = _zip_bytes({"a.txt": b"hello"})
    body = {
        "pdf_with_zip": b"%PDF-1.4\n1 0 obj<<>>endobj\n%%EOF\n" + archive,
        "zip_with_pdf": b"%PDF-1.4\n" + archive,
        "exe_as_pdf": b"MZ\x90\x00" + b"\0" * 200,
        "html_as_pdf": b"<html><script>alert(1)</script></html>",
    }[kind]
    r = world.upload("impl", item_id, "requirement_letter", body, "innocent.pdf")
    assert r.status_code == 415, r.get_json()
    assert db.session.execute(select(func.count(Artefact.id))).scalar() == 0


# ---------------------------------------------------------------- JSON bodies

def _post_raw(world, url: str, data: bytes | str, content_type: str = "application/json"):
    return world.client.post(url, data=data, content_type=content_type, headers=world.headers("pm"))


def test_huge_json_body_is_413(world):
    blob = json.dumps({"contract": "x" * (300 * 1024)})
    r = _post_raw(world, "/api/v1/items", blob)
    assert r.status_code == 413 and r.get_json()["code"] == "too_large"


@pytest.mark.parametrize("depth", [40, 5000, 200_000])
def test_deeply_nested_json_is_400(world, depth):
    item_id = world.new_item("HOSTILE-JSON")["id"]
    task_id = world.open_tasks(item_id)[0]["id"]
    nested = '{"data": ' + '{"a": ' * depth + "1" + "}" * depth + "}"
    if len(nested) > 256 * 1024:
        nested = '{"data": ' + "[" * depth + "]" * depth + "}"
    r = _post_raw(world, f"/api/v1/tasks/{task_id}/complete", nested)
    assert 400 <= r.status_code < 500, r.status_code


WRONG_BODIES = [
    "[]", '"text"', "12", "null", "true", "{", "{\"data\": ", "\xff\xfe", '{"data": "notadict"}',
    '{"data": [1, 2]}', '{"data": {"summary": {"nested": 1}}}', '{"data": {"summary": 1e999}}',
    '{"data": {"summary": NaN}}', '{"data": {"\\ud800": "lone surrogate"}}',
]


def test_wrongly_typed_json_is_4xx(world):
    item_id = world.new_item("HOSTILE-TYPES")["id"]
    task_id = world.open_tasks(item_id)[0]["id"]
    for body in WRONG_BODIES:
        _check_body(world, task_id, body)


def _check_body(world, task_id, body):
    for url in (f"/api/v1/tasks/{task_id}/complete", "/api/v1/items", f"/api/v1/tasks/{task_id}/handover",
                "/api/v1/auth/token", "/api/v1/users"):
        r = _post_raw(world, url, body)
        assert 400 <= r.status_code < 500, (url, body, r.status_code, r.get_data(as_text=True)[:300])


def test_wrong_content_type_is_4xx(world):
    r = _post_raw(world, "/api/v1/items", "contract=x", "application/x-www-form-urlencoded")
    assert 400 <= r.status_code < 500
    r = _post_raw(world, "/api/v1/items", "<xml/>", "text/xml")
    assert 400 <= r.status_code < 500


# ---------------------------------------------------------------- login rate limit

def _login(client, username: str, password: str, ip: str = "203.0.113.7"):
    return client.post("/api/v1/auth/token", json={"username": username, "password": password},
                       environ_base={"REMOTE_ADDR": ip})


def test_login_is_rate_limited_per_user_and_ip_across_workers(world, app, s3_server, backend, tmp_path):
    client = app.test_client()
    for _ in range(5):
        assert _login(client, "impl", "wrong-password").status_code == 401
    r = _login(client, "impl", PASSWORD)  # even the right password waits out the window
    assert r.status_code == 429 and r.get_json()["code"] == "rate_limited"
    assert int(r.headers["Retry-After"]) >= 1
    # Another worker (a second app on the same database) sees the same count.
    other = make_app(app.config["SQLALCHEMY_DATABASE_URI"], s3_server, app.config["ITEMGATE"].s3_bucket)
    try:
        with other.app_context():
            assert _login(other.test_client(), "impl", PASSWORD).status_code == 429
            db.session.remove()
    finally:
        with other.app_context():
            db.engine.dispose()
    # Other addresses and other users are not locked out by this guesser.
    assert _login(client, "impl", PASSWORD, ip="198.51.100.9").status_code == 200
    assert _login(client, "impl2", PASSWORD).status_code == 200
    refused = db.session.execute(select(func.count(AuditEvent.id)).where(
        AuditEvent.event_type == "auth.token", AuditEvent.outcome == "rate_limited")).scalar()
    assert refused == 2
    # Each failure counts for this user from this address, for this user, and for this address.
    assert db.session.execute(select(func.count(LoginAttempt.id))).scalar() == 15


def test_web_login_shares_the_limit(world, app):
    from tests.test_web import Browser

    client = app.test_client()
    for _ in range(5):
        assert _login(client, "rev_a", "wrong-password", ip="127.0.0.1").status_code == 401
    b = Browser(app)
    r = b.login("rev_a", PASSWORD)
    assert r.status_code == 429

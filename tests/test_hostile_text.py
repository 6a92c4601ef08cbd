"""Text no field can hold — NUL characters anywhere, unpaired UTF-16 surrogates in JSON — is refused with 422
before it reaches the database, in query strings, JSON bodies, web forms and web page filters alike, on both
backends (PostgreSQL refuses NUL in text; psycopg cannot encode a lone surrogate). Nothing is recorded."""
from __future__ import annotations

import io
import json

import pytest
from sqlalchemy import func, select

from api.extensions import db
from storage.models import AuditEvent, WorkItem
from tests.test_web import HTML, Browser

NUL = "\x00"
LONE = "\ud800"  # a high surrogate with no low surrogate after it

QUERIES = [
    "/api/v1/items?q=a%00b",
    "/api/v1/items?department=DA%00",
    "/api/v1/items?stage=%00",
    "/api/v1/items?contract=SH%00&service_line=1",
    "/api/v1/tasks?scope=group%00",
    "/api/v1/workload?contract=SH-YWTB-2025%00",
    "/api/v1/workload?department=%00DA",
    "/api/v1/workload?service_line=1%00",
    "/api/v1/settlements?contract=%00",
    "/api/v1/settlements?status=draft%00",
    "/api/v1/exports/workload.csv?department=DA%00",
    "/api/v1/exports/workload.xlsx?contract=%00",
    "/api/v1/exports/counts?service_line=%00",
    "/api/v1/exports/counts.csv?department=%00",
    "/api/v1/notifications?page=1&x%00=1",
]


def _refused(r, where: str | None = None) -> None:
    assert r.status_code == 422, (r.status_code, r.get_data(as_text=True)[:300])
    body = r.get_json()
    assert body["code"] == "invalid_characters", body
    if where:
        assert body["field"] == where, body


@pytest.mark.parametrize("url", QUERIES)
def test_nul_in_a_query_parameter_is_422(world, url):
    _refused(world.get("pm", url))


ITEM = {"contract": "SH-YWTB-2025", "service_line": "1", "name": "驾驶证补领", "code": "SH-GA-0100",
        "department": "DA", "channels": ["pc"], "mode": "new", "difficulty": 1.0}


@pytest.mark.parametrize(("field", "value", "where"), [
    ("name", f"驾驶证{NUL}补领", "name"),
    ("name", f"驾驶证{LONE}补领", "name"),
    ("code", f"SH{NUL}", "code"),
    ("department", LONE, "department"),
    ("attributes", {"departments": ["DA", f"DB{NUL}"]}, "attributes.departments.1"),
    ("attributes", {f"key{LONE}": 1}, "attributes"),
])
def test_nul_or_lone_surrogate_in_json_is_422_and_nothing_is_created(world, field, value, where):
    body = json.dumps(dict(ITEM, **{field: value}))  # json.dumps writes "\u0000" and "\ud800" escapes
    r = world.client.post("/api/v1/items", data=body, content_type="application/json",
                          headers=world.headers("pm"))
    _refused(r, where)
    assert db.session.execute(select(func.count(WorkItem.id))).scalar() == 0


def test_nul_in_json_elsewhere(world):
    item_id = world.new_item("NUL-1")["id"]
    task = world.task_named(item_id, "intake")
    _refused(world.post("impl", f"/api/v1/tasks/{task['id']}/complete", json={"data": {"summary": f"a{NUL}"}}),
             "data.summary")
    _refused(world.client.post("/api/v1/auth/token", json={"username": f"pm{NUL}", "password": "x"}), "username")
    r = world.client.post("/api/v1/auth/token", data='{"username": "pm", "password": "\\udfff"}',
                          content_type="application/json")
    _refused(r, "password")
    _refused(world.post("pm", "/api/v1/settlements", json={"contract": f"SH{NUL}", "period_start": "2026-01-01",
                                                           "period_end": "2026-06-30"}), "contract")
    assert db.session.execute(select(func.count(AuditEvent.id)).where(
        AuditEvent.event_type == "task.completed")).scalar() == 0


def test_nul_in_web_forms_and_page_filters(world, app):
    browser = Browser(app, "pm")
    for url in ("/items?q=a%00b", "/items?department=%00", "/items?stage=x%00", "/ledger?department=%00",
                "/inbox?q=%00", "/settlements?contract=%00"):
        r = browser.get(url)
        assert r.status_code == 422 and r.mimetype == "text/html", (url, r.status_code)
        assert "不能包含" in r.get_data(as_text=True)
    # A web form: the ledger reversal's reason, and sign-in itself.
    browser.get("/ledger")
    r = browser.post("/ledger/1/reverse", {"reason": f"原因{NUL}"})
    assert r.status_code == 422 and r.mimetype == "text/html"
    anonymous = Browser(app)
    anonymous.get("/login")
    r = anonymous.post("/login", {"username": f"pm{NUL}", "password": "x"})
    assert r.status_code == 422, r.status_code
    r = anonymous.client.get("/items?q=%00", headers=HTML)  # not signed in: sent to sign in first, as always
    assert r.status_code == 302 and "/login" in r.headers["Location"]


def test_nul_in_a_multipart_field(world):
    item_id = world.new_item("NUL-2")["id"]
    r = world.multipart("impl", f"/api/v1/items/{item_id}/artefacts",
                        {"kind": f"requirement_letter{NUL}", "file": (io.BytesIO(b"%PDF-1.4\n"), "a.pdf")})
    assert r.status_code == 422, r.get_json()


def test_nul_in_an_imported_spreadsheet_is_a_row_error(world):
    csv = ("事项编码,事项名称,服务类别,需求部门,渠道,接入方式,难度系数\n"
           f"SH-IMP-1,驾驶证{NUL}补领,1,DA,pc,new,1.0\n").encode()
    r = world.multipart("pm", "/api/v1/items/import?contract=SH-YWTB-2025",
                        {"file": (io.BytesIO(csv), "items.csv")})
    assert r.status_code in (200, 422), r.get_data(as_text=True)[:300]
    assert db.session.execute(select(func.count(WorkItem.id))).scalar() == 0


def test_ids_beyond_the_integer_range_are_422(world):
    """Ids are INTEGER columns: a larger id in a JSON body or a query names no row and is refused as invalid
    (before, the driver could not bind it: a 500, or a CSV/ZIP download that broke off after its headers)."""
    from tests.settlement_helpers import adhoc_contract, completed_items

    completed_items(1, prefix="BIG")
    adhoc_contract()
    r = world.post("pm", "/api/v1/settlements", json={"contract": "SH-YWTB-2025", "period_start": "2026-01-01",
                                                      "period_end": "2026-12-31"})
    sid = r.get_json()["id"]
    big = 2**70
    for method, url, body in (
            ("post", f"/api/v1/settlements/{sid}/lines", {"entry_ids": [big], "reason": "补充"}),
            ("post", f"/api/v1/settlements/{sid}/lines/remove", {"entry_ids": [2**31], "reason": "移出"}),
            ("post", f"/api/v1/settlements/{sid}/comments", {"entry_id": big, "text": "意见"}),
            ("get", f"/api/v1/exports/counts?settlement={big}", None),
            ("get", f"/api/v1/exports/counts.csv?settlement={big}", None),
            ("get", f"/api/v1/exports/counts.xlsx?settlement={big}", None),
            ("get", f"/api/v1/exports/evidence.zip?settlement={big}", None)):
        user = "auditor" if url.endswith("/comments") else "pm"
        r = getattr(world, method)(user, url, **({"json": body} if body is not None else {}))
        assert r.status_code == 422, (url, r.status_code, r.get_data()[:200])
        assert r.get_json()["code"] == "invalid_request", r.get_json()
    # The web forms skip what cannot be an id, as they skip what is not a number.
    browser = Browser(world.app, "pm")
    browser.get(f"/settlements/{sid}")
    r = browser.post(f"/settlements/{sid}/lines", {"entry_ids": f"{big} {2**31}", "reason": "补充", "op": "add"})
    assert r.status_code == 302, r.status_code

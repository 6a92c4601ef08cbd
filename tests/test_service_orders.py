"""Service orders (运营服务单): a department reviewer or the buyer files a request with its 需求函; the PM accepts it
into an item (the letter becomes the item's 需求函, the order and requester are kept on the item) or declines it with
a reason. REST API on SQLite and PostgreSQL; the web pages; scope and races."""
from __future__ import annotations

import io
from typing import Any

from api.demo import demo_pdf
from tests.test_web import Browser

LETTER = demo_pdf("需求函 驾驶证补领")


def file_order(world: Any, username: str, *, department: str = "DA", title: str = "驾驶证补领接入",
               body: bytes = LETTER, filename: str = "需求函.pdf", **extra: Any) -> Any:
    data: dict[str, Any] = {"contract": "SH-YWTB-2025", "department": department, "title": title,
                            "description": "请接入驾驶证补领", "service_line": "1", "mode": "new",
                            "channels": "pc,mobile", **extra}
    data["file"] = (io.BytesIO(body), filename)
    return world.multipart(username, "/api/v1/service-orders", data)


def test_department_files_and_pm_accepts_into_an_item(world):
    r = file_order(world, "rev_a")
    assert r.status_code == 201, r.get_json()
    order = r.get_json()
    assert order["status"] == "submitted" and order["requested_by"] == "rev_a" and order["department"] == "DA"
    assert order["file"]["sha256"] and order["channels"] == ["pc", "mobile"]
    # The PM finds it and reads the letter.
    listed = world.get("pm", "/api/v1/service-orders?status=submitted").get_json()
    assert [o["id"] for o in listed["service_orders"]] == [order["id"]] and listed["total"] == 1
    content = world.get("pm", f"/api/v1/service-orders/{order['id']}/file")
    assert content.status_code == 200 and content.data == LETTER
    # Accepted: the item exists, its process started, the letter is its 需求函 uploaded by the requester.
    r = world.post("pm", f"/api/v1/service-orders/{order['id']}/accept",
                   json={"service_line": "1", "code": "SH-SO-1", "channels": ["pc", "mobile"], "difficulty": 1.1})
    assert r.status_code == 201, r.get_json()
    item = r.get_json()
    assert item["name"] == "驾驶证补领接入" and item["department"] == "DA"
    assert item["attributes"]["service_order"]["id"] == order["id"]
    assert item["attributes"]["service_order"]["requested_by"] == "rev_a"
    letters = [a for a in item["artefacts"] if a["kind"] == "requirement_letter"]
    assert len(letters) == 1 and letters[0]["uploaded_by"] == "rev_a" and letters[0]["sha256"] == \
        order["file"]["sha256"]
    assert world.get("pm", f"/api/v1/artefacts/{letters[0]['id']}/content").data == LETTER
    # The implementer's intake step already has the 需求函.
    task = world.task_named(item["id"], "intake")
    detail = world.get("impl", f"/api/v1/tasks/{task['id']}").get_json()
    assert {r["kind"]: r["present"] for r in detail["required_artefacts"]}["requirement_letter"] is True
    done = world.get("rev_a", f"/api/v1/service-orders/{order['id']}").get_json()
    assert done["status"] == "accepted" and done["item_id"] == item["id"] and done["decided_by"] == "pm"
    # A second decision is refused.
    r = world.post("pm", f"/api/v1/service-orders/{order['id']}/decline", json={"reason": "重复"})
    assert r.status_code == 409 and r.get_json()["code"] == "order_decided"


def test_pm_declines_with_a_reason_and_scope_holds(world):
    order = file_order(world, "buyer", department="DB", title="户籍迁移").get_json()
    assert order["department"] == "DB" and order["requested_by"] == "buyer"
    r = world.post("pm", f"/api/v1/service-orders/{order['id']}/decline", json={"reason": ""})
    assert r.status_code == 422
    r = world.post("pm", f"/api/v1/service-orders/{order['id']}/decline", json={"reason": "不在本合同范围"})
    assert r.status_code == 200 and r.get_json()["status"] == "declined"
    assert r.get_json()["decline_reason"] == "不在本合同范围"
    # Department DA's reviewer neither sees DB's order nor files for DB.
    assert world.get("rev_a", f"/api/v1/service-orders/{order['id']}").status_code == 404
    assert world.get("rev_a", "/api/v1/service-orders").get_json()["total"] == 0
    assert world.get("rev_b", "/api/v1/service-orders").get_json()["total"] == 1
    r = file_order(world, "rev_a", department="DB")
    assert r.status_code == 422 and "department" in r.get_json()["errors"]
    # Roles that do not file: the implementer and the PM.
    assert file_order(world, "impl").status_code == 403
    assert file_order(world, "pm").status_code == 403
    # The reviewer cannot accept.
    assert world.post("rev_b", f"/api/v1/service-orders/{order['id']}/accept",
                      json={"service_line": "1", "code": "X", "channels": ["pc"]}).status_code == 403


def test_bad_requests_store_nothing(world, app):
    from sqlalchemy import func, select

    from api.extensions import db
    from storage.models import ServiceOrder

    assert file_order(world, "rev_a", body=b"MZ\x90\x00binary", filename="x.exe").status_code == 415
    r = file_order(world, "rev_a", title="")
    assert r.status_code == 422 and "title" in r.get_json()["errors"]
    r = world.multipart("rev_a", "/api/v1/service-orders", {"contract": "SH-YWTB-2025", "department": "DA",
                                                            "title": "无文件"})
    assert r.status_code == 422 and "file" in r.get_json()["errors"]
    assert db.session.execute(select(func.count()).select_from(ServiceOrder)).scalar_one() == 0
    # An acceptance the item form refuses (a channel the line lacks) leaves the order open.
    order = file_order(world, "rev_a").get_json()
    r = world.post("pm", f"/api/v1/service-orders/{order['id']}/accept",
                   json={"service_line": "3", "code": "SH-SO-K", "channels": ["kiosk"]})
    assert r.status_code == 422
    assert world.get("pm", f"/api/v1/service-orders/{order['id']}").get_json()["status"] == "submitted"


def test_web_department_files_and_pm_accepts(world, app):
    rev = Browser(app, "rev_a")
    page = rev.get("/service-orders/new")
    assert page.status_code == 200 and "需求函" in page.get_data(as_text=True)
    bad = rev.post("/service-orders/new", {"contract": "SH-YWTB-2025", "title": "", "mode": "new"},
                   content_type="multipart/form-data")
    assert bad.status_code == 422 and "此项必填。" in bad.get_data(as_text=True)
    r = rev.post("/service-orders/new", {"contract": "SH-YWTB-2025", "title": "社保卡申领接入", "mode": "new",
                                         "service_line": "1", "channels": ["pc"], "description": "急",
                                         "file": (io.BytesIO(LETTER), "需求函.pdf")},
                 content_type="multipart/form-data")
    assert r.status_code == 302, r.get_data(as_text=True)[:1500]
    order_url = r.headers["Location"]
    assert "已提交运营服务单" in rev.get(order_url).get_data(as_text=True)
    pm = Browser(app, "pm")
    inbox = pm.get("/inbox?scope=all").get_data(as_text=True)
    assert 'id="service-orders-waiting"' in inbox and "社保卡申领接入" in inbox
    page = pm.get(order_url).get_data(as_text=True)
    assert "受理为事项" in page and "不予受理" in page
    r = pm.post(order_url + "/accept", {"service_line": "1", "code": "SH-SO-W1", "channels": ["pc"],
                                        "mode": "new", "difficulty": "1.0"})
    assert r.status_code == 302, r.get_data(as_text=True)[:1500]
    item_page = pm.get(r.headers["Location"]).get_data(as_text=True)
    assert "来源运营服务单" in item_page and "社保卡申领接入" in item_page and "rev_a" in item_page
    assert "已受理" in rev.get(order_url).get_data(as_text=True)


def test_two_decisions_at_once_one_wins(world, app, backend):
    """Two PMs accept one order at the same instant, or one accepts while the other declines: one wins, the
    loser gets 409 order_decided, and exactly one item exists for the order (PostgreSQL: real concurrent writers)."""
    import pytest
    from sqlalchemy import func, select

    from api.extensions import db
    from storage.models import ServiceOrder, WorkItem
    from tests.test_concurrency import post, race

    if backend != "postgresql":
        pytest.skip("PostgreSQL only: SQLite serialises writers")
    world.user("pm2", "pm")
    a, b = world.headers("pm"), world.headers("pm2")
    for i in range(10):
        order_id = file_order(world, "rev_a", title=f"并发 {i}").get_json()["id"]
        url = f"/api/v1/service-orders/{order_id}"
        second = post(f"{url}/decline", b, {"reason": "并发拒绝"}) if i % 2 else \
            post(f"{url}/accept", b, {"service_line": "1", "code": f"RACE-SO-{i}-B", "channels": ["pc"]})
        outcome = race(app, [post(f"{url}/accept", a, {"service_line": "1", "code": f"RACE-SO-{i}-A",
                                                       "channels": ["pc"]}), second])
        statuses = sorted(s for s, _ in outcome)
        assert statuses in ([200, 409], [201, 409]), f"round {i}: {outcome}"
        assert [c for s, c in outcome if s == 409] == ["order_decided"], f"round {i}: {outcome}"
        order = db.session.get(ServiceOrder, order_id)
        items = db.session.execute(select(func.count()).select_from(WorkItem).where(
            WorkItem.code.like(f"RACE-SO-{i}-%"))).scalar_one()
        assert (order.status, items) in (("accepted", 1), ("declined", 0)), f"round {i}: {order.status} {items}"
        db.session.remove()

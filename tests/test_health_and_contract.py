"""Health endpoints, auth failures, the OpenAPI document and problem+json shapes."""
from __future__ import annotations


def test_health(client):
    assert client.get("/healthz").get_json() == {"status": "ok"}
    r = client.get("/readyz")
    assert r.status_code == 200 and r.get_json()["checks"] == {"database": "ok", "object_store": "ok"}
    assert r.headers["X-Request-Id"]


def test_auth_errors(world, client):
    r = client.post("/api/v1/auth/token", json={"username": "impl", "password": "wrong-password"})
    assert r.status_code == 401 and r.mimetype == "application/problem+json"
    assert client.post("/api/v1/auth/token", json={"username": "nobody", "password": "x"}).status_code == 401
    assert client.get("/api/v1/items").status_code == 401
    assert client.get("/api/v1/items", headers={"Authorization": "Bearer nonsense"}).status_code == 401
    r = client.get("/api/v1/items", headers=world.headers("pm"))
    assert r.status_code == 200 and r.get_json() == {"items": [], "total": 0, "page": 1, "per_page": 50}


def test_admin_creates_users(world):
    r = world.post("admin", "/api/v1/users", json={"username": "newbie", "password": "long-enough-1",
                                                   "role": "dept_reviewer", "department": "DC"})
    assert r.status_code == 201 and r.get_json()["department"] == "DC"
    assert world.post("pm", "/api/v1/users", json={"username": "x2", "password": "long-enough-1",
                                                   "role": "pm"}).status_code == 403
    r = world.post("admin", "/api/v1/users", json={"username": "x3", "password": "short", "role": "pm"})
    assert r.status_code == 422 and r.get_json()["code"] == "invalid_request"


def test_catalog_and_openapi(world, client):
    cat = world.get("impl", "/api/v1/catalog").get_json()
    contract = next(c for c in cat["contracts"] if c["code"] == "SH-YWTB-2025")
    line1 = next(sl for sl in contract["service_lines"] if sl["code"] == "1")
    assert line1["unit_prices"] == {"pc": 45000, "mobile": 72000, "kiosk": 45000}
    spec = client.get("/api/v1/openapi.json").get_json()
    for path in ("/api/v1/items", "/api/v1/tasks/{task_id}/complete", "/api/v1/items/{item_id}/artefacts",
                 "/api/v1/workload", "/api/v1/auth/token"):
        assert path in spec["paths"], path


def test_invalid_item_is_422_with_fields(world):
    r = world.post("pm", "/api/v1/items", json={"contract": "SH-YWTB-2025", "service_line": "3", "name": "x",
                                                "code": "c", "department": "DA", "channels": ["kiosk"],
                                                "mode": "new"})
    assert r.status_code == 422 and "channels" in r.get_json()["errors"]
    r = world.post("pm", "/api/v1/items", json={"contract": "NOPE", "service_line": "1", "name": "x",
                                                "code": "c", "department": "ZZ", "channels": ["pc"], "mode": "new"})
    assert r.status_code == 422 and {"contract", "department"} <= set(r.get_json()["errors"])
    assert world.post("impl", "/api/v1/items", json={"contract": "SH-YWTB-2025", "service_line": "1",
                                                     "name": "x", "code": "c", "department": "DA",
                                                     "channels": ["pc"], "mode": "new"}).status_code == 403

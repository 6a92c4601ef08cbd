"""The admin console's REST side on SQLite and PostgreSQL: users, departments with lead reviewers, catalogue
uploads checked line by line and compared before loading, calendar years, system status; everything audited."""
from __future__ import annotations

import io
from typing import Any

from sqlalchemy import select

from bpmn import CATALOG_DIR

SHANGHAI = (CATALOG_DIR / "shanghai.toml").read_text(encoding="utf-8")


def events(kind: str) -> list[Any]:
    from api.extensions import db
    from storage.models import AuditEvent

    db.session.remove()
    return list(db.session.scalars(select(AuditEvent).where(AuditEvent.event_type == kind).order_by(AuditEvent.id)))


def upload(world: Any, url: str, text: str, filename: str = "catalog.toml", **fields: str) -> Any:
    data: dict[str, Any] = dict(fields)
    data["file"] = (io.BytesIO(text.encode("utf-8")), filename)
    return world.multipart("admin", url, data)


def test_users_are_listed_created_changed_and_deactivated(world):
    r = world.get("admin", "/api/v1/users?role=implementer")
    assert r.status_code == 200 and [u["username"] for u in r.get_json()["users"]] == ["impl", "impl2"]
    r = world.post("admin", "/api/v1/users", json={"username": "zhang", "password": "long-enough-pw",
                                                    "role": "dept_reviewer", "department": "DA"})
    assert r.status_code == 201
    # A claimed task goes back to the queue when its holder is deactivated.
    item = world.new_item("ADM-U-1")
    task = world.open_tasks(item["id"])[0]
    assert world.post("impl", f"/api/v1/tasks/{task['id']}/claim").status_code == 200
    r = world.client.patch("/api/v1/users/impl", headers=world.headers("admin"), json={"active": False})
    assert r.status_code == 200 and r.get_json()["tasks_released"] == [task["id"]]
    assert world.get("pm", f"/api/v1/tasks/{task['id']}").get_json()["assignee"] is None
    assert world.get("admin", "/api/v1/users?active=false").get_json()["total"] == 1
    r = world.client.patch("/api/v1/users/zhang", headers=world.headers("admin"), json={"department": "DB"})
    assert r.status_code == 200 and r.get_json()["department"] == "DB"
    assert [e.detail["changes"] for e in events("user.changed")][-1] == {"department": ["DA", "DB"]}
    assert world.get("pm", "/api/v1/users").status_code == 403


def test_departments_with_their_lead_reviewer(world):
    r = world.post("admin", "/api/v1/departments", json={"code": "SHGA", "name": "上海市公安局"})
    assert r.status_code == 201 and r.get_json() == {"code": "SHGA", "name": "上海市公安局", "lead_reviewer": None}
    assert world.post("admin", "/api/v1/departments", json={"code": "SHGA", "name": "重复"}).status_code == 409
    r = world.client.patch("/api/v1/departments/DA", headers=world.headers("admin"),
                           json={"name": "甲部门", "lead_reviewer": "rev_a"})
    assert r.status_code == 200 and r.get_json() == {"code": "DA", "name": "甲部门", "lead_reviewer": "rev_a"}
    # The lead reviewer must be a reviewer of that department.
    r = world.client.patch("/api/v1/departments/DB", headers=world.headers("admin"), json={"lead_reviewer": "rev_a"})
    assert r.status_code == 422 and "lead_reviewer" in r.get_json()["errors"]
    listed = {d["code"]: d for d in world.get("impl", "/api/v1/departments").get_json()["departments"]}
    assert listed["DA"]["lead_reviewer"] == "rev_a" and listed["SHGA"]["name"] == "上海市公安局"
    assert [e.detail["code"] for e in events("department.created")] == ["SHGA"]
    assert events("department.changed")[0].detail["changes"] == {"name": ["DA", "甲部门"],
                                                                 "lead_reviewer": "rev_a"}


def test_a_catalogue_with_errors_lists_each_with_its_line_and_loads_nothing(world):
    broken = SHANGHAI.replace('unit_prices = { pc = 45000, mobile = 72000, kiosk = 45000 }',
                              'unit_prices = { pc = 45000, mobile = 72000 }', 1)
    broken = broken.replace('process = "one_thing"', 'process = "no_such_process"', 1)
    assert broken.count("\n") == SHANGHAI.count("\n") and broken != SHANGHAI
    r = upload(world, "/api/v1/admin/catalogs/check", broken, "shanghai-broken.toml")
    assert r.status_code == 200, r.get_json()
    body = r.get_json()
    assert body["ok"] is False and len(body["problems"]) == 2, body["problems"]
    lines = broken.splitlines()
    for problem in body["problems"]:
        assert problem["line"] is not None
    kiosk, process = body["problems"]
    assert "kiosk" in kiosk["message"] and lines[kiosk["line"] - 1].strip().startswith("unit_prices")
    assert "no_such_process" in process["message"] and "no_such_process" in lines[process["line"] - 1]
    r = upload(world, "/api/v1/admin/catalogs", broken)
    assert r.status_code == 422
    # A TOML syntax error says its line too.
    r = upload(world, "/api/v1/admin/catalogs/check", SHANGHAI.replace('[contract]\n', '[contract\n', 1))
    assert r.get_json()["problems"][0]["line"] == SHANGHAI.splitlines().index("[contract]") + 1


def test_a_catalogue_is_compared_with_the_loaded_version_before_it_is_applied(world):
    changed = SHANGHAI.replace('unit_prices = { pc = 45000, mobile = 72000, kiosk = 45000 }',
                               'unit_prices = { pc = 46000, mobile = 72000, kiosk = 45000 }', 1)
    r = upload(world, "/api/v1/admin/catalogs/check", changed)
    body = r.get_json()
    assert body["ok"] and body["contract"] == "SH-YWTB-2025" and not body["diff"]["new_contract"]
    by_code = {line["code"]: line for line in body["diff"]["lines"]}
    assert by_code["1"]["change"] == "changed"
    assert by_code["1"]["fields"] == {"unit_prices": {"old": {"pc": "45000.00", "mobile": "72000.00",
                                                              "kiosk": "45000.00"},
                                                      "new": {"pc": "46000.00", "mobile": "72000.00",
                                                              "kiosk": "45000.00"}}}
    assert {line["change"] for code, line in by_code.items() if code != "1"} == {"unchanged"}
    # The previewed file's hash must match what is applied.
    r = upload(world, "/api/v1/admin/catalogs", changed, sha256="0" * 64)
    assert r.status_code == 409 and r.get_json()["code"] == "catalog_changed"
    r = upload(world, "/api/v1/admin/catalogs", changed, sha256=body["sha256"])
    assert r.status_code == 200 and r.get_json()["loaded"] is True
    prices = world.get("pm", "/api/v1/catalog").get_json()["contracts"][0]["service_lines"][0]["unit_prices"]
    assert prices["pc"] == 46000
    loaded = events("catalog.loaded")
    assert loaded[-1].detail["lines"] == ["1"] and loaded[-1].username == "admin"
    again = upload(world, "/api/v1/admin/catalogs/check", changed).get_json()
    assert again["diff"]["same_file"] is True
    assert upload(world, "/api/v1/admin/catalogs/check", changed).status_code == 200
    r = world.multipart("pm", "/api/v1/admin/catalogs/check",
                        {"file": (io.BytesIO(changed.encode()), "c.toml")})
    assert r.status_code == 403


def test_calendar_years_show_their_source_and_a_warning_until_covered(world):
    years = {y["year"]: y for y in world.get("admin", "/api/v1/admin/calendar").get_json()["years"]}
    uncovered = [y for y in years.values() if y["source"] == "none"]
    assert uncovered and all(y["warning"] for y in uncovered)
    year = uncovered[0]["year"]
    r = world.post("admin", f"/api/v1/admin/calendar/{year}",
                   json={"holidays": [{"date": f"{year}-01-01", "note": "元旦"}], "workdays": []})
    assert r.status_code == 200, r.get_json()
    years = {y["year"]: y for y in world.get("admin", "/api/v1/admin/calendar").get_json()["years"]}
    assert years[year]["source"] == "admin" and years[year]["warning"] is None
    assert events("calendar.entered")[-1].target_id == str(year)


def test_system_status_reports_readiness_lock_audit_fsck_outbox_and_jobs(world, app):
    from api.extensions import db
    from engine.trust import audit

    body = world.get("admin", "/api/v1/admin/status").get_json()
    assert body["ready"] is True and body["checks"] == {"database": "ok", "object_store": "ok"}
    assert body["evidence_lock"] in ("on", "off", "unknown")
    assert body["audit"]["last_verification"] is None and body["fsck"] is None
    assert body["deliveries"] == {"pending": 0, "sending": 0, "sent": 0, "failed": 0}
    assert body["jobs"]["due_timers"] == 0
    cli = audit.Actor(None, "cli", "admin")
    audit.record(db.session, cli, "audit.verified", target_type="audit", result="ok", checked=12)
    audit.record(db.session, cli, "evidence.fsck", target_type="bucket", outcome="failure", checked=3, problems=1)
    db.session.commit()
    body = world.get("admin", "/api/v1/admin/status").get_json()
    assert body["audit"]["last_verification"]["detail"]["checked"] == 12
    assert body["fsck"]["outcome"] == "failure" and body["fsck"]["detail"]["problems"] == 1
    assert world.get("auditor", "/api/v1/admin/status").status_code == 403

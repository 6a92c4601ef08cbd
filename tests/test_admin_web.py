"""The admin console's pages through the Flask test client (both databases): departments with their lead reviewer
and group robot, a user's role change and password reset, the status page, and who may open them."""
from __future__ import annotations

from sqlalchemy import select

from tests.test_web import Browser


def test_departments_page_sets_the_lead_reviewer_and_the_robot(world, app):
    from api.extensions import db
    from storage.models import AuditEvent, NotificationChannel

    admin = Browser(app, "admin")
    assert admin.get("/admin/departments").status_code == 200
    r = admin.post("/admin/departments", {"code": "SHGA", "name": "上海市公安局"})
    assert r.status_code == 302
    r = admin.post("/admin/departments/DA", {"name": "甲部门", "lead_reviewer": "rev_a",
                                             "robot": "wecombot://secret-robot-key-123"})
    assert r.status_code == 302
    page = admin.get("/admin/departments").get_data(as_text=True)
    assert "甲部门" in page and "上海市公安局" in page
    assert "secret-robot-key-123" not in page  # shown shortened only
    listed = {d["code"]: d for d in world.get("impl", "/api/v1/departments").get_json()["departments"]}
    assert listed["DA"]["lead_reviewer"] == "rev_a"
    db.session.remove()
    robot = db.session.execute(select(NotificationChannel).where(NotificationChannel.owner_type == "department")
                               ).scalar_one()
    assert robot.target == "wecombot://secret-robot-key-123"
    # An empty field keeps the robot; the checkbox removes it.
    admin.post("/admin/departments/DA", {"name": "甲部门", "lead_reviewer": "rev_a"})
    db.session.remove()
    assert db.session.execute(select(NotificationChannel)).scalars().all() != []
    admin.post("/admin/departments/DA", {"name": "甲部门", "lead_reviewer": "rev_a", "robot_clear": "on"})
    db.session.remove()
    assert db.session.execute(select(NotificationChannel)).scalars().all() == []
    kinds = set(db.session.scalars(select(AuditEvent.event_type).where(AuditEvent.username == "admin")))
    assert {"department.created", "department.changed", "notification.channels_set"} <= kinds


def test_users_page_changes_a_role_and_resets_a_password(world, app):
    admin = Browser(app, "admin")
    r = admin.post("/admin/users/impl2", {"role": "pm", "department": ""})
    assert r.status_code == 302
    assert world.get("admin", "/api/v1/users?role=pm").get_json()["total"] == 2
    r = admin.post("/admin/users/impl", {"action": "password", "password": "brand-new-password"})
    assert r.status_code == 302
    assert Browser(app).login("impl", "brand-new-password").status_code == 302
    # The last administrator cannot be deactivated.
    admin.post("/admin/users/admin", {"action": "deactivate"})
    page = admin.get("/admin/users").get_data(as_text=True)
    assert "这是最后一个有效的系统管理员" in page


def test_only_the_admin_opens_the_console(world, app):
    for username in ("impl", "rev_a", "pm", "auditor", "buyer"):
        b = Browser(app, username)
        assert b.get("/admin").status_code == 403, username
        assert b.get("/admin/users").status_code == 403, username
        assert "系统管理" not in b.get("/inbox").get_data(as_text=True), username
        assert b.get("/notifications").status_code == 200, username
    admin = Browser(app, "admin")
    page = admin.get("/admin").get_data(as_text=True)
    assert "就绪" in page and "/admin/processes" in page and 'id="bell"' in page

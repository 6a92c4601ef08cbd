"""Notifications: one row per person with their own read state, the events that raise them, and delivery by e-mail
(a local SMTP sink) and chat webhooks (a local HTTP receiver) through the outbox, retried and visible to the admin."""
from __future__ import annotations

import threading
from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import sessionmaker

from engine.contract.calendar import TZ
from tests.notification_sinks import free_port

RETURN = {"decision": "return", "comment": "调研表缺少办理情形，请补充"}


def notes(world: Any, user: str, kind: str | None = None) -> list[dict[str, Any]]:
    r = world.get(user, "/api/v1/notifications?per_page=200")
    assert r.status_code == 200, r.get_json()
    return [n for n in r.get_json()["notifications"] if kind is None or n["kind"] == kind]


def to_survey_review(world: Any, code: str) -> int:
    item_id = world.new_item(code)["id"]
    world.complete_task_as("impl", item_id, "intake", {})
    world.complete_task_as("pm", item_id, "confirm_difficulty", {"difficulty": "1.00", "complexity_note": "常规"})
    world.complete_task_as("impl", item_id, "survey_sorting", {"item_count": 4})
    return item_id


def test_a_group_notification_is_read_per_person(world):
    """New work reaches each member of the queue; one member reading it leaves it unread for the others."""
    item = world.new_item("N-READ-1")
    intake = world.open_tasks(item["id"])[0]
    mine, theirs = notes(world, "impl", "new_task"), notes(world, "impl2", "new_task")
    assert [(n["task_id"], n["read"]) for n in mine] == [(intake["id"], False)]
    assert [(n["task_id"], n["read"]) for n in theirs] == [(intake["id"], False)]
    assert mine[0]["id"] != theirs[0]["id"]
    # Other roles' queues are not told; the PM who registered it is not told about their own action.
    assert notes(world, "rev_a", "new_task") == [] and notes(world, "auditor") == []

    r = world.post("impl", f"/api/v1/notifications/{mine[0]['id']}/read")
    assert r.status_code == 200 and r.get_json()["read"] is True
    assert [n["read"] for n in notes(world, "impl", "new_task")] == [True]
    assert [n["read"] for n in notes(world, "impl2", "new_task")] == [False]
    assert world.get("impl2", "/api/v1/notifications?unread=1").get_json()["unread"] >= 1
    # Someone else's notification is not found (nor marked) for me.
    assert world.post("impl2", f"/api/v1/notifications/{mine[0]['id']}/read").status_code == 404
    r = world.post("impl2", "/api/v1/notifications/read-all")
    assert r.status_code == 200 and r.get_json()["marked"] >= 1
    assert world.get("impl2", "/api/v1/notifications?unread=1").get_json()["total"] == 0


def test_a_return_goes_to_the_person_whose_work_came_back_with_the_comment(world):
    item_id = to_survey_review(world, "N-RET-1")
    world.complete_task_as("rev_a", item_id, "confirm_survey", RETURN)
    returned = notes(world, "impl", "returned")
    assert len(returned) == 1
    rework = world.task_named(item_id, "survey_sorting")
    assert returned[0]["task_id"] == rework["id"] and returned[0]["comment"] == RETURN["comment"]
    assert "被退回" in returned[0]["message"]
    # Only the implementer who did the step is told, not the whole queue.
    assert notes(world, "impl2", "returned") == []
    assert rework["id"] not in [n["task_id"] for n in notes(world, "impl2")]


def test_review_difficulty_and_handover_notifications(world):
    item_id = world.new_item("N-EV-1")["id"]
    world.complete_task_as("impl", item_id, "intake", {})
    # The PM's difficulty confirmation is flagged as such.
    difficulty = notes(world, "pm", "difficulty")
    assert [n["task_id"] for n in difficulty] == [world.task_named(item_id, "confirm_difficulty")["id"]]
    world.complete_task_as("pm", item_id, "confirm_difficulty", {"difficulty": "1.00", "complexity_note": "常规"})
    survey = world.task_named(item_id, "survey_sorting")
    assert world.post("impl", f"/api/v1/tasks/{survey['id']}/claim").status_code == 200
    r = world.post("impl", f"/api/v1/tasks/{survey['id']}/handover", json={"to": "impl2"})
    assert r.status_code == 200, r.get_json()
    handed = notes(world, "impl2", "handover")
    assert [n["task_id"] for n in handed] == [survey["id"]] and "impl" in handed[0]["message"]
    assert notes(world, "impl", "handover") == []
    world.complete_task_as("impl2", item_id, "survey_sorting", {"item_count": 2})
    # The department review waits in DA's queue: DA's reviewer is told, DB's is not.
    review = world.task_named(item_id, "confirm_survey")
    assert review["id"] in [n["task_id"] for n in notes(world, "rev_a", "new_task")]
    assert review["id"] not in [n["task_id"] for n in notes(world, "rev_b")]


def test_a_settlement_step_waiting_for_my_role_notifies_each_member(world, app):
    from tests.settlement_helpers import adhoc_contract, completed_items

    adhoc_contract()  # an ad-hoc period, not one of the contract's settlement stages
    world.user("auditor2", "auditor")
    completed_items(2, prefix="N-SET")
    r = world.post("pm", "/api/v1/settlements", json={"contract": "SH-YWTB-2025", "period_start": "2020-01-01",
                                                       "period_end": datetime.now(TZ).date().isoformat(),
                                                       "label": "通知测试"})
    assert r.status_code == 201, r.get_json()
    sid = r.get_json()["id"]
    assert world.post("pm", f"/api/v1/settlements/{sid}/submit", json={}).status_code == 200
    for auditor in ("auditor", "auditor2"):
        waiting = notes(world, auditor, "settlement")
        assert [n["settlement_id"] for n in waiting] == [sid], auditor
    assert notes(world, "buyer", "settlement") == []


# ---------------------------------------------------------------- delivery


def _deliver(app: Any, smtp_port: int | None = None, now: datetime | None = None) -> dict[str, int]:
    from api.background import deliver_pending
    from api.extensions import db
    from engine.trust.delivery import SmtpSettings, apprise_sender

    smtp = SmtpSettings(host="127.0.0.1" if smtp_port else None, port=smtp_port or 25,
                        sender="itemgate@example.org", mode="insecure")
    session = sessionmaker(bind=db.engine, expire_on_commit=False)()
    try:
        return deliver_pending(session, apprise_sender(smtp), now=(lambda: now) if now else None)
    finally:
        session.close()


def test_email_and_chat_deliveries_go_out_after_the_request(world, app, smtp_sink, webhook):
    r = world.client.put("/api/v1/me/channels", headers=world.headers("impl"),
                         json={"email": {"target": "impl@example.org"}, "webhook": {"target": webhook.url("/me")}})
    assert r.status_code == 200, r.get_json()
    assert set(r.get_json()["channels"]) == {"email", "webhook"}
    r = world.client.put("/api/v1/departments/DA/channels", headers=world.headers("admin"),
                         json={"webhook": {"target": webhook.url("/da-robot")}})
    assert r.status_code == 200, r.get_json()
    assert r.get_json()["channels"]["webhook"]["target"].endswith("…")  # the robot's key is not shown again

    item = world.new_item("N-OUT-1")
    # Nothing was sent by the request itself: the messages wait in the outbox.
    assert smtp_sink.messages == [] and webhook.posts == []
    counts = _deliver(app, smtp_sink.port)
    assert counts["failed"] == 0 and counts["retry"] == 0 and counts["sent"] == 2
    assert len(smtp_sink.messages) == 1
    message = smtp_sink.messages[0]
    assert message["To"] == "impl@example.org" and "新任务" in str(message["Subject"])
    assert "N-OUT-1" in smtp_sink.bodies()[0]
    assert [path for path, _ in webhook.posts] == ["/me"]
    assert "N-OUT-1" in webhook.posts[0][1]["message"]

    # A return to rev_a's department reaches DA's robot once, however many members are told.
    world.user("rev_a2", "dept_reviewer", "DA")
    world.complete_task_as("impl", item["id"], "intake", {})
    world.complete_task_as("pm", item["id"], "confirm_difficulty", {"difficulty": "1.00", "complexity_note": "常规"})
    _deliver(app, smtp_sink.port)
    webhook.posts.clear()
    world.complete_task_as("impl", item["id"], "survey_sorting", {"item_count": 1})
    _deliver(app, smtp_sink.port)
    assert [path for path, _ in webhook.posts] == ["/da-robot"]
    assert "部门确认" in webhook.posts[0][1]["message"] or "confirm" in webhook.posts[0][1]["message"]
    # Sent is sent: a second round sends nothing again.
    assert _deliver(app, smtp_sink.port)["sent"] == 0


def test_failed_deliveries_are_retried_with_backoff_then_shown_to_the_admin(world, app, webhook):
    from engine.trust.delivery import MAX_ATTEMPTS, backoff

    world.client.put("/api/v1/me/channels", headers=world.headers("impl"),
                     json={"webhook": {"target": f"json://127.0.0.1:{free_port()}/closed"}})
    world.new_item("N-FAIL-1")
    now = datetime.now(UTC)
    first = _deliver(app, now=now)
    assert first == {"sent": 0, "retry": 1, "failed": 0}
    # Not due again until the backoff has passed.
    assert _deliver(app, now=now + backoff(1) - timedelta(seconds=1)) == {"sent": 0, "retry": 0, "failed": 0}
    at = now
    for attempt in range(2, MAX_ATTEMPTS + 1):
        at = at + backoff(attempt - 1) + timedelta(seconds=1)
        counts = _deliver(app, now=at)
        assert counts["retry" if attempt < MAX_ATTEMPTS else "failed"] == 1, (attempt, counts)
    failed = world.get("admin", "/api/v1/admin/deliveries?status=failed").get_json()
    assert failed["total"] == 1
    row = failed["deliveries"][0]
    assert row["attempts"] == MAX_ATTEMPTS and row["last_error"] and row["status"] == "failed"
    assert world.get("admin", "/api/v1/admin/status").get_json()["deliveries"]["failed"] == 1
    assert world.get("impl", "/api/v1/admin/deliveries").status_code == 403
    # The admin sends it again once the receiver is fixed.
    world.client.put("/api/v1/me/channels", headers=world.headers("impl"), json={"webhook": None})
    from api.extensions import db
    from storage.models import NotificationDelivery

    db.session.execute(NotificationDelivery.__table__.update().values(target=webhook.url("/fixed")))
    db.session.commit()
    r = world.post("admin", f"/api/v1/admin/deliveries/{row['id']}/retry")
    assert r.status_code == 200 and r.get_json()["status"] == "pending"
    assert _deliver(app)["sent"] == 1 and [p for p, _ in webhook.posts] == ["/fixed"]
    assert world.post("admin", f"/api/v1/admin/deliveries/{row['id']}/retry").status_code == 404


def test_two_runners_send_each_delivery_once(world, app, webhook):
    from api.background import deliver_pending
    from api.extensions import db
    from storage.models import NotificationDelivery

    for username in ("impl", "impl2"):
        world.client.put("/api/v1/me/channels", headers=world.headers(username),
                         json={"webhook": {"target": webhook.url(f"/{username}")}})
    for i in range(6):
        world.new_item(f"N-RACE-{i}")
    total = db.session.execute(select(func.count(NotificationDelivery.id))).scalar_one()
    assert total == 12
    sent: Counter[int] = Counter()
    lock = threading.Lock()
    barrier = threading.Barrier(2)
    errors: list[BaseException] = []

    def send(row: NotificationDelivery) -> None:
        with lock:
            sent[row.id] += 1

    factory = sessionmaker(bind=db.engine, expire_on_commit=False)

    def runner() -> None:
        session = factory()
        try:
            barrier.wait(timeout=30)
            deliver_pending(session, send)
        except BaseException as exc:  # surfaced below
            errors.append(exc)
        finally:
            session.close()

    threads = [threading.Thread(target=runner) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors, errors
    assert len(sent) == 12 and set(sent.values()) == {1}
    db.session.remove()
    statuses = db.session.execute(select(NotificationDelivery.status, func.count())
                                  .group_by(NotificationDelivery.status)).all()
    assert dict(statuses) == {"sent": 12}


def test_channel_targets_are_checked(world):
    r = world.client.put("/api/v1/me/channels", headers=world.headers("impl"),
                         json={"email": {"target": "not-an-address"}, "webhook": {"target": "ftp://nowhere"}})
    assert r.status_code == 422
    assert set(r.get_json()["errors"]) == {"email", "webhook"}
    r = world.client.put("/api/v1/me/channels", headers=world.headers("impl"),
                         json={"webhook": {"target": "https://qyapi.weixin.qq.com/cgi-bin/webhook/send?key=abc-123"}})
    assert r.status_code == 200, r.get_json()
    assert world.get("impl", "/api/v1/me/channels").get_json()["channels"]["webhook"]["enabled"] is True
    # Another department's robot is the admin's to set.
    r = world.client.put("/api/v1/departments/DA/channels", headers=world.headers("rev_a"),
                         json={"webhook": {"target": "wecombot://abc"}})
    assert r.status_code == 403


def test_notifying_is_audited_with_its_recipients(world):
    from api.extensions import db
    from storage.models import AuditEvent

    world.new_item("N-AUD-1")
    events = db.session.execute(select(AuditEvent.event_type, AuditEvent.detail)
                                .where(AuditEvent.event_type == "notification.new_task")).all()
    assert len(events) == 1 and len(events[0][1]["to_users"]) == 2


def test_tick_sends_the_outbox_with_the_configured_smtp_server(world, app, smtp_sink, cli, monkeypatch):
    from dataclasses import replace

    world.client.put("/api/v1/me/channels", headers=world.headers("impl"),
                     json={"email": {"target": "impl@example.org"}})
    world.new_item("N-TICK-1")
    monkeypatch.setitem(app.config, "ITEMGATE", replace(app.config["ITEMGATE"], smtp_host="127.0.0.1",
                                                        smtp_port=smtp_sink.port, smtp_mode="insecure",
                                                        smtp_from="itemgate@example.org"))
    result = cli("tick")
    assert result.exit_code == 0, result.output
    assert "notifications: 1 sent" in result.output
    assert [m["To"] for m in smtp_sink.messages] == ["impl@example.org"]
    assert smtp_sink.messages[0]["From"] == "itemgate@example.org"


def test_audit_verify_and_fsck_results_reach_the_status_page(world, app, cli):
    world.new_item("N-STATUS-1")
    assert cli("audit", "verify").exit_code == 0
    # The shared test bucket may hold other tests' orphans: fsck's verdict, whichever, is what the page shows.
    fsck = cli("fsck", "--quick")
    body = world.get("admin", "/api/v1/admin/status").get_json()
    verified = body["audit"]["last_verification"]
    assert verified["outcome"] == "success" and verified["detail"]["result"] == "ok"
    assert verified["detail"]["checked"] > 0
    assert body["fsck"]["outcome"] == ("success" if fsck.exit_code == 0 else "failure")
    assert body["fsck"]["detail"]["deep"] is False and body["fsck"]["detail"]["checked"] >= 0

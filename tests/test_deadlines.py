"""Deadlines in working days, overdue timers (reminder + escalation), `tick` from two hosts, admin calendar.

Time is frozen with freezegun; the S3 client keeps real time (its requests are signed with the clock and the
server refuses skewed signatures), which freezegun's `ignore` arranges.
"""
from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import Any

import pytest
from freezegun import freeze_time
from sqlalchemy import func, select

from tests.test_kinds_api import APPROVE

REAL_CLOCK = ["minio", "urllib3"]


@contextmanager
def frozen(moment: str, world: Any = None) -> Iterator[None]:
    """Freeze the clock; bearer tokens issued in another era would be expired (or not yet valid), so the
    World's cached tokens are dropped on the way in and out."""
    if world is not None:
        world.tokens.clear()
    with freeze_time(moment, ignore=REAL_CLOCK):
        yield
    if world is not None:
        world.tokens.clear()


def to_confirm_survey(world: Any, code: str) -> dict[str, Any]:
    """A new line-1 item driven to the department's confirmation of the survey (a 5-working-day review)."""
    item_id = world.new_item(code)["id"]
    world.complete_task_as("impl", item_id, "intake", {})
    world.complete_task_as("pm", item_id, "confirm_difficulty", {"difficulty": "1.00", "complexity_note": "常规"})
    world.complete_task_as("impl", item_id, "survey_sorting", {"item_count": 4})
    return world.task_named(item_id, "confirm_survey")


def tick(app: Any) -> int:
    from api.background import fire_due_timers
    from api.extensions import db

    with app.app_context():
        try:
            return fire_due_timers(db.session)
        finally:
            db.session.remove()


def notifications(world: Any, user: str) -> list[dict[str, Any]]:
    """The user's reminders and escalations (new-work and return notifications are tested in
    tests/test_notifications.py)."""
    r = world.get(user, "/api/v1/notifications?per_page=100")
    assert r.status_code == 200, r.get_json()
    return [n for n in r.get_json()["notifications"] if n["kind"] in ("reminder", "escalation")]


def test_five_working_days_across_national_day_2026(world):
    # Tue 2026-09-29 10:00 in Shanghai; 10-01..10-07 are holidays and Sat 10-10 a make-up workday:
    # Wed 30, Thu 10-08, Fri 10-09, Sat 10-10, Mon 10-12.
    with frozen("2026-09-29 02:00:00", world):
        task = to_confirm_survey(world, "SH-ND-1")
    assert task["due_at"] == "2026-10-12T10:00:00Z"  # Mon 2026-10-12 18:00 Beijing time
    assert task["due_warning"] is None


def test_overdue_review_fires_reminder_and_escalation_once(world, app):
    with frozen("2026-09-29 02:00:00", world):
        task = to_confirm_survey(world, "SH-OD-1")
    with frozen("2026-10-12 09:59:00", world):  # one minute before the deadline
        assert tick(app) == 0
    with frozen("2026-10-12 10:01:00", world):
        assert tick(app) == 1
        assert tick(app) == 0  # a second run finds nothing due
    reminders = notifications(world, "rev_a")
    assert [(n["kind"], n["task_id"]) for n in reminders] == [("reminder", task["id"])]
    assert "超过办理期限" in reminders[0]["message"]
    assert [(n["kind"], n["task_id"]) for n in notifications(world, "pm")] == [("escalation", task["id"])]
    assert notifications(world, "rev_b") == []  # another department's reviewer is not reminded
    assert notifications(world, "impl") == []
    # The timer does not interrupt: the review is still open, with the same id, and can be completed.
    assert world.task_named(task["item_id"], "confirm_survey")["id"] == task["id"]
    r = world.post("rev_a", f"/api/v1/notifications/{reminders[0]['id']}/read")
    assert r.status_code == 200 and r.get_json()["read_at"]
    assert [n["read"] for n in notifications(world, "rev_a")] == [True]
    history = world.get("pm", f"/api/v1/items/{task['item_id']}").get_json()["history"]
    events = [h["event"] for h in history]
    assert events.count("timer.fired") == 1
    assert "task.reminder" in events and "task.escalation" in events
    world.complete_task_as("rev_a", task["item_id"], "confirm_survey", APPROVE)
    with frozen("2026-12-01 00:00:00", world):
        assert tick(app) == 0


def test_reminder_goes_to_the_assignee_when_claimed(world, app):
    with frozen("2026-09-29 02:00:00", world):
        task = to_confirm_survey(world, "SH-OD-2")
        assert world.post("rev_a", f"/api/v1/tasks/{task['id']}/claim").status_code == 200
    with frozen("2026-10-13 01:00:00", world):
        assert tick(app) == 1
    from api.extensions import db
    from storage.models import Notification, User

    rev_a = db.session.execute(select(User).where(User.username == "rev_a")).scalar_one()
    reminder = db.session.execute(select(Notification).where(Notification.kind == "reminder")).scalar_one()
    assert reminder.user_id == rev_a.id and reminder.role is None
    assert [n["kind"] for n in notifications(world, "rev_a")] == ["reminder"]


def test_two_concurrent_ticks_fire_each_timer_once(world, app):
    with frozen("2026-09-29 02:00:00", world):
        tasks = [to_confirm_survey(world, f"SH-CC-{i}") for i in range(4)]
    results: list[int] = []
    errors: list[BaseException] = []
    barrier = threading.Barrier(2)

    def host() -> None:
        try:
            barrier.wait(timeout=30)
            results.append(tick(app))
        except BaseException as exc:  # surfaced below; a thread must not swallow a failure
            errors.append(exc)

    with frozen("2026-10-14 00:00:00", world):
        threads = [threading.Thread(target=host) for _ in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=120)
    assert not errors, errors
    assert sum(results) == 4
    from api.extensions import db
    from storage.models import AuditEvent, Notification

    db.session.remove()
    per_task = dict(db.session.execute(select(Notification.task_id, func.count())
                                       .where(Notification.kind.in_(["reminder", "escalation"]))
                                       .group_by(Notification.task_id)).all())
    assert per_task == {t["id"]: 2 for t in tasks}
    fired = db.session.scalar(select(func.count()).select_from(AuditEvent)
                              .where(AuditEvent.event_type == "timer.fired"))
    assert fired == 4


def test_admin_enters_a_year_and_uncovered_years_warn(world, app):
    # 2027 is beyond the calendar package: Monday–Friday, with a visible warning.
    with frozen("2027-03-01 01:00:00", world):
        task = to_confirm_survey(world, "SH-27-1")
        assert task["due_at"] == "2027-03-08T10:00:00Z"
        assert "2027 年节假日未录入" in task["due_warning"]
        r = world.get("admin", "/api/v1/admin/calendar/2027")
        assert r.status_code == 200 and r.get_json()["source"] == "none" and r.get_json()["warning"]
        assert world.get("pm", "/api/v1/admin/calendar/2027").status_code == 403
        body = {"holidays": [{"date": "2027-03-02", "note": "测试假日"}, {"date": "2027-03-03"}],
                "workdays": [{"date": "2027-03-06", "note": "调休上班"}]}
        assert world.post("pm", "/api/v1/admin/calendar/2027", json=body).status_code == 403
        bad = world.post("admin", "/api/v1/admin/calendar/2027",
                         json={"holidays": [{"date": "2028-01-01"}], "workdays": [{"date": "2027-03-04"}]})
        assert bad.status_code == 422 and set(bad.get_json()["errors"]) == {"holidays.0", "workdays.0"}
        r = world.post("admin", "/api/v1/admin/calendar/2027", json=body)
        assert r.status_code == 200, r.get_json()
        view = r.get_json()
        assert view["source"] == "admin" and view["warning"] is None
        assert [d["date"] for d in view["holidays"]] == ["2027-03-02", "2027-03-03"]
        assert [d["date"] for d in view["workdays"]] == ["2027-03-06"]
        # Thu 4, Fri 5, Sat 6 (make-up), Mon 8, Tue 9 → the fifth working day is Tue 2027-03-09.
        task2 = to_confirm_survey(world, "SH-27-2")
        assert task2["due_at"] == "2027-03-09T10:00:00Z"
        assert task2["due_warning"] is None
    # Re-entering replaces the year's entries.
    with frozen("2027-03-01 01:00:00", world):
        r = world.post("admin", "/api/v1/admin/calendar/2027", json={"holidays": [], "workdays": []})
        assert r.get_json()["holidays"] == [] and r.get_json()["source"] == "admin"


@pytest.mark.parametrize("override", [3])
def test_contract_due_days_override_the_model(world, app, override):
    from api.extensions import db
    from storage.models import Contract

    contract = db.session.execute(select(Contract)).scalars().first()
    contract.settings = {**contract.settings, "due_days": {"confirm_survey": override}}
    db.session.commit()
    with frozen("2026-09-29 02:00:00", world):
        task = to_confirm_survey(world, "SH-OV-1")
    # Tue 09-29 + 3 working days: Wed 30, Thu 10-08, Fri 10-09.
    assert datetime.fromisoformat(task["due_at"].replace("Z", "+00:00")).date().isoformat() == "2026-10-09"


def test_overdue_per_department_confirmations_remind_each_department(world, app):
    from tests.test_kinds_api import do, intake

    with frozen("2026-09-29 02:00:00", world):
        item_id = world.new_item("SH-OD-YJS", line="5", attributes={"departments": ["DA", "DB"]})["id"]
        intake(world, item_id)
        do(world, "impl", item_id, "survey_current", {})
        for dept in ("DA", "DB"):
            do(world, "impl", item_id, "analyse_linked_item", {}, department=dept)
        do(world, "rev_a", item_id, "confirm_linked_item", APPROVE, department="DA")
    with frozen("2026-10-12 10:01:00", world):
        assert tick(app) == 1
    # Only DB's confirmation was still open: DB's reviewers are reminded, not DA's; the PM gets one escalation.
    assert [n["kind"] for n in notifications(world, "rev_b")] == ["reminder"]
    assert notifications(world, "rev_a") == []
    assert [n["kind"] for n in notifications(world, "pm")] == ["escalation"]


def test_rework_to_a_review_gets_a_fresh_deadline(world, app):
    from tests.test_kinds_api import do

    with frozen("2026-09-29 02:00:00", world):
        first = to_confirm_survey(world, "SH-OD-RW")
        item_id = first["item_id"]
        do(world, "rev_a", item_id, "confirm_survey", APPROVE)
        do(world, "impl", item_id, "design", {})
    with frozen("2026-10-20 02:00:00", world):  # long after the first review's deadline
        r = world.post("pm", f"/api/v1/items/{item_id}/rework", json={"to": "confirm_survey", "reason": "重新确认"})
        assert r.status_code == 200, r.get_json()
        again = world.task_named(item_id, "confirm_survey")
        assert again["id"] != first["id"]
        assert again["due_at"] == "2026-10-27T10:00:00Z"  # Tue 10-20 + 5 working days
        assert tick(app) == 0  # the stale deadline did not fire
    with frozen("2026-10-27 10:01:00", world):
        assert tick(app) == 1
    assert [(n["kind"], n["task_id"]) for n in notifications(world, "rev_a")] == [("reminder", again["id"])]


def test_the_cached_calendar_follows_a_year_entered_on_a_host_whose_clock_is_behind(app):
    """The process keeps the calendar it built; a year re-entered elsewhere must be seen here even when that
    host's clock stamped it earlier than another year's entry (the newest stamp alone does not change then)."""
    from datetime import UTC, date

    from api.extensions import db
    from engine.usecases.tasks import work_calendar
    from storage.models import CalendarDay, CalendarYear

    db.session.add_all([CalendarYear(year=2027, entered_at=datetime(2026, 12, 1, tzinfo=UTC)),
                        CalendarYear(year=2028, entered_at=datetime(2026, 12, 5, tzinfo=UTC))])
    db.session.commit()
    monday = date(2027, 3, 1)
    assert work_calendar(db.session).is_workday(monday)[0]
    db.session.add(CalendarDay(day=monday, is_workday=False, note="补录假日"))
    db.session.get(CalendarYear, 2027).entered_at = datetime(2026, 12, 3, tzinfo=UTC)
    db.session.commit()
    assert not work_calendar(db.session).is_workday(monday)[0]

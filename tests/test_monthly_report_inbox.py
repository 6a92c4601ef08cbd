"""Monthly operations reports (月度运营报告, engine/usecases/monthly_report.py) run as work items of the contract
(bpmn/monthly_report.bpmn): once a month has ended the tick opens its item, whose PM step waits in the PM's inbox
due on the report's deadline; submitting (on the reports page, or by completing the task like any other) moves it
to the third party's inbox; a return comes back to the PM due on the revision deadline; acceptance completes the
item, which tallies no workload. Both databases."""
from __future__ import annotations

from datetime import UTC, datetime

import pytest
from sqlalchemy import select

from tests.test_web import Browser


def _report(month: str):
    from api.extensions import db
    from storage.models import ContractTask

    return db.session.execute(select(ContractTask).where(ContractTask.kind == "monthly_report",
                                                         ContractTask.key == month)).scalar_one()


def _open_tasks(item_id: int) -> list:
    from api.extensions import db
    from storage.models import HumanTask

    db.session.expire_all()
    return list(db.session.scalars(select(HumanTask).where(HumanTask.item_id == item_id,
                                                           HumanTask.status == "ready")))


def _queue(browser: Browser) -> str:
    """What waits for this user: their claimed tasks and their group's queue (not the overseers' "all")."""
    return "".join(browser.get(f"/inbox?scope={scope}").get_data(as_text=True) for scope in ("mine", "group"))


def _tick() -> int:
    from api.background import open_monthly_reports
    from api.extensions import db

    return open_monthly_reports(db.session)


def test_monthly_reports_move_between_the_pm_and_the_third_party(world, app):
    from api.extensions import db
    from storage.models import WorkItem, WorkloadEntry

    pm, auditor = Browser(app, "pm"), Browser(app, "auditor")
    assert "MR-2025-03" not in _queue(pm)   # not opened before the tick
    opened = _tick()
    report = _report("2025-03")
    assert opened >= 3 and report.item_id is not None
    assert _tick() == 0                                                   # once
    item = db.session.get(WorkItem, report.item_id)
    assert (item.code, item.service_line_id, item.department_id, item.stage) == ("MR-2025-03", None, None, "report")
    [task] = _open_tasks(item.id)
    assert (task.form, task.role, task.department_id, task.due_at) == ("monthly_report", "pm", None, report.due_at)
    inbox = _queue(pm)
    assert f'data-task-id="{task.id}"' in inbox and "MR-2025-03" in inbox
    assert f'data-task-id="{task.id}"' not in _queue(auditor)
    assert "月度运营报告" in pm.get(f"/items/{item.id}").get_data(as_text=True)
    page = pm.get("/monthly-reports?month=2025-03").get_data(as_text=True)
    assert 'data-month="2025-03" data-status="open"' in page and f'href="/items/{item.id}"' in page
    # Submitting without a narrative is refused, in Chinese, and nothing moves.
    r = pm.post(f"/monthly-reports/{report.id}/submit", {"narrative": ""})
    assert "请先填写报告正文。" in pm.get(r.headers["Location"]).get_data(as_text=True)
    assert [t.id for t in _open_tasks(item.id)] == [task.id]
    pm.post(f"/monthly-reports/{report.id}/submit", {"narrative": "三月接入事项 12 项，完成 9 项。"})
    [review] = _open_tasks(item.id)
    assert (review.form, review.role) == ("report_review", "auditor")
    assert f'data-task-id="{review.id}"' in _queue(auditor)
    # The third party reviews from the task page (a phone): the files as submitted are linked there.
    assert f'/monthly-reports/{report.id}/report.xlsx' in auditor.get(f"/tasks/{review.id}").get_data(as_text=True)
    assert "MR-2025-03" not in _queue(pm)
    r = auditor.post(f"/monthly-reports/{report.id}/review", {"decision": "return", "comment": ""})
    assert "退回时必须填写审核意见。" in auditor.get(r.headers["Location"]).get_data(as_text=True)
    auditor.post(f"/monthly-reports/{report.id}/review", {"decision": "return", "comment": "缺少工单统计"})
    db.session.expire_all()
    report = _report("2025-03")
    [again] = _open_tasks(item.id)
    assert report.status == "returned" and again.form == "monthly_report"
    assert again.return_comment == "缺少工单统计" and again.due_at == report.revision_due_at
    assert again.assignee_id is not None                # back to the PM who submitted it, already claimed
    inbox = _queue(pm)
    assert f'data-task-id="{again.id}"' in inbox and "badge-returned" in inbox
    # The revision goes through the task page like any task: the hook keeps the report in step.
    page = pm.get(f"/tasks/{again.id}").get_data(as_text=True)
    assert "运营情况说明" in page and "三月接入事项 12 项，完成 9 项。</textarea>" in page
    pm.post(f"/tasks/{again.id}/complete", {"narrative": "三月接入事项 12 项，完成 9 项；工单 40 张。"})
    db.session.expire_all()
    report = _report("2025-03")
    assert report.status == "submitted" and report.narrative.endswith("工单 40 张。")
    assert [s["round"] for s in report.data["submissions"]] == [1, 2]
    auditor.post(f"/monthly-reports/{report.id}/review", {"decision": "accept", "comment": ""})
    db.session.expire_all()
    item = db.session.get(WorkItem, report.item_id)
    assert (_report("2025-03").status, item.status, item.stage) == ("accepted", "completed", "done")
    assert _open_tasks(item.id) == []
    assert db.session.scalar(select(WorkloadEntry.id).where(WorkloadEntry.item_id == item.id)) is None
    assert "MR-2025-03" not in _queue(pm)
    assert "MR-2025-03" not in _queue(auditor)
    assert Browser(app, "impl").get("/monthly-reports").status_code == 403
    assert auditor.post(f"/monthly-reports/{report.id}/submit", {"narrative": "x"}).status_code == 403


def test_a_month_not_over_has_no_report_to_submit(world, app):
    from api.extensions import db
    from engine.contract.calendar import TZ
    from engine.errors import Conflict
    from engine.usecases import monthly_report as mr
    from engine.usecases.tasks import Ctx
    from storage.models import User

    report = _report("2025-03")
    pm = db.session.execute(select(User).where(User.username == "pm")).scalar_one()
    during = datetime(2025, 3, 31, 20, 0, tzinfo=TZ)
    ctx = Ctx(session=db.session, user=pm, now=during.astimezone(UTC))
    mr.write(ctx, report, "月中草稿")
    with pytest.raises(Conflict) as refused:
        mr.submit(ctx, report)
    assert refused.value.code == "month_not_over"
    db.session.rollback()
    assert _report("2025-03").item_id is None and _report("2025-03").status == "open"


def test_the_report_runs_through_the_task_api_and_moves_only_by_its_steps(world, app):
    """Any client that completes tasks completes the report's too (POST /api/v1/tasks/<id>/complete): the
    hook keeps the report row, its clocks and its stored files in step, in the same transaction. A refusal
    (no narrative) leaves task, report and store untouched; a report item can't be cancelled or reworked."""
    from api.extensions import db

    w = world
    _tick()
    report = _report("2025-04")
    [task] = _open_tasks(report.item_id)
    r = w.complete("pm", task.id, {})
    assert r.status_code == 422 and r.get_json()["code"] == "narrative_required"
    db.session.expire_all()
    assert (_report("2025-04").status, _report("2025-04").data.get("submissions")) == ("open", None)
    assert [t.id for t in _open_tasks(report.item_id)] == [task.id]
    assert w.complete("auditor", task.id, {"narrative": "x"}).status_code in (403, 404)
    r = w.complete("pm", task.id, {"narrative": "四月运营情况。"})
    assert r.status_code == 200, r.get_json()
    got = w.get("auditor", f"/api/v1/monthly-reports/{report.id}").get_json()
    assert got["status"] == "submitted" and got["narrative"] == "四月运营情况。" and got["item_id"] == report.item_id
    assert [s["round"] for s in got["submissions"]] == [1] and "xlsx" in got["submissions"][0]["files"]
    item = w.get("pm", f"/api/v1/items/{report.item_id}").get_json()
    assert (item["service_line"], item["department"], item["stage"]) == (None, None, "report_review")
    [review] = _open_tasks(report.item_id)
    assert w.complete("auditor", review.id, {"decision": "return"}).status_code == 422  # a return needs a comment
    assert w.complete("auditor", review.id, {"decision": "return", "comment": "补充工单"}).status_code == 200
    assert w.get("pm", f"/api/v1/monthly-reports/{report.id}").get_json()["status"] == "returned"
    for path, body in (("cancel", {"reason": "不需要"}), ("rework", {"to": "prepare_report", "reason": "重写"})):
        r = w.post("pm", f"/api/v1/items/{report.item_id}/{path}", json=body)
        assert r.status_code == 409 and r.get_json()["code"] == "contract_item", path
    # Not among the service items the PM exports or the dashboard counts.
    import io

    import openpyxl

    book = openpyxl.load_workbook(io.BytesIO(w.get("pm", "/api/v1/exports/items.xlsx?contract=SH-YWTB-2025").data))
    cells = {str(c) for sheet in book.worksheets for row in sheet.iter_rows(values_only=True) for c in row}
    assert not any(c.startswith("MR-") for c in cells)
    dash = Browser(app, "pm").get("/dashboard").get_data(as_text=True)
    assert "编写月报" not in dash and "第三方审核" not in dash


def test_reports_from_before_work_items_are_adopted_in_their_state(world, app):
    """A database upgraded with reports already submitted, returned or accepted: each gets its work item with
    the process where the report stands (the PM's step for a returned one, with the comment and the revision
    deadline; the review for a submitted one; completed for an accepted one)."""
    from api.extensions import db
    from engine.contract.calendar import TZ
    from storage.models import WorkItem

    stamp = datetime(2025, 6, 5, 2, 0, tzinfo=UTC)
    states = {"2025-01": "submitted", "2025-02": "returned", "2025-03": "accepted"}
    for month, status in states.items():
        report = _report(month)
        report.status, report.submitted_at, report.updated_at = status, stamp, stamp
        report.revision_due_at = datetime(2025, 6, 19, 16, 0, tzinfo=TZ)
        if status != "submitted":
            report.data = {"reviews": [{"decision": "return" if status == "returned" else "accept",
                                        "comment": "请补充" if status == "returned" else None, "by": "auditor",
                                        "at": stamp.isoformat()}]}
    db.session.commit()
    _tick()
    db.session.expire_all()
    submitted, returned, accepted = (_report(m) for m in states)
    [review] = _open_tasks(submitted.item_id)
    assert (review.form, review.role) == ("report_review", "auditor")
    [revise] = _open_tasks(returned.item_id)
    assert (revise.form, revise.return_comment, revise.due_at) == ("monthly_report", "请补充",
                                                                   returned.revision_due_at)
    done = db.session.get(WorkItem, accepted.item_id)
    assert (done.status, done.stage, done.completed_at) == ("completed", "done", stamp)
    assert _open_tasks(accepted.item_id) == []
    assert db.session.get(WorkItem, _report("2025-04").item_id).stage == "report"


def test_two_hosts_opening_the_same_months_make_one_item_each(world, app, backend):
    """Two ticks at once (two hosts): each month's report gets one work item, whichever tick wins the row."""
    import threading

    from api.background import open_monthly_reports
    from api.extensions import db
    from storage.models import ContractTask, WorkItem

    if backend != "postgresql":
        pytest.skip("PostgreSQL only: SQLite serialises writers, so there is no real race to test")
    db.session.remove()  # the main thread holds no snapshot or connection during the race
    results: list[int] = []
    errors: list[BaseException] = []
    barrier = threading.Barrier(2)

    def tick() -> None:
        with app.app_context():
            try:
                barrier.wait()
                results.append(open_monthly_reports(db.session))
            except BaseException as exc:  # noqa: BLE001 - reported below
                errors.append(exc)
            finally:
                db.session.remove()

    threads = [threading.Thread(target=tick) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors
    db.session.expire_all()
    reports = list(db.session.scalars(select(ContractTask).where(ContractTask.kind == "monthly_report",
                                                                 ContractTask.item_id.is_not(None))))
    items = list(db.session.scalars(select(WorkItem).where(WorkItem.service_line_id.is_(None))))
    assert (sum(results), len(reports), len(items)) == (len(reports), len(reports), len(reports)) and reports
    assert sorted(r.item_id for r in reports) == sorted(i.id for i in items)


def test_an_overdue_report_reminds_the_pm(world, app):
    """The PM's step has the model's overdue reminder, armed at the report's own deadline: a tick just before it
    fires nothing, the tick after it reminds the PM's queue and escalates to the PMs, once."""
    from api.background import fire_due_timers
    from api.extensions import db
    from storage.models import Notification
    from tests.test_deadlines import frozen

    report = _report("2025-05")
    assert report.due_at == datetime(2025, 6, 16, 15, 59, 59, tzinfo=UTC)   # 23:59:59 Beijing, 10 working days
    with frozen("2025-06-02 01:00:00", world):                              # the month has ended
        assert _tick() >= 1
        [task] = _open_tasks(_report("2025-05").item_id)
        assert task.due_at == report.due_at
    with frozen("2025-06-16 15:58:00", world):
        assert fire_due_timers(db.session) == 0
    with frozen("2025-06-16 16:01:00", world):
        assert fire_due_timers(db.session) == 1
        assert fire_due_timers(db.session) == 0
    kinds = [n.kind for n in db.session.scalars(select(Notification).where(Notification.task_id == task.id))]
    assert (kinds.count("reminder"), kinds.count("escalation")) == (1, 1)   # the one PM, reminded once

"""The third party's bulk difficulty confirmation page: pending confirmations, filtered, several confirmed at once.

Each ticked confirmation is an ordinary completion of its task (verdict "confirm"), in a unit of work of its own,
so one refusal never undoes the others; setting another level stays on the task page, one at a time, with a reason."""
from __future__ import annotations

from typing import Any

from flask import render_template, request
from sqlalchemy import select

from api.extensions import db
from api.web.auth import me, web_ctx
from api.web.i18n import _
from api.web.views import bp, refusal
from engine.errors import DomainError, FormInvalid, NotFound
from engine.trust.access import load_task_for
from engine.usecases.difficulty import REVIEW_FORM, pending_reviews
from engine.usecases.tasks import complete_task
from storage.models import Contract, Department, HumanTask, ServiceLine
from storage.unit_of_work import unit_of_work

MAX_TICKED = 100


def _filters() -> dict[str, str]:
    return {k: (request.values.get(k) or "").strip()[:100] for k in ("contract", "line", "department", "q")}


def _page(results: list[dict[str, Any]] | None = None, status: int = 200) -> Any:
    user = me()
    filters = _filters()
    rows = pending_reviews(db.session, user, **filters)
    contracts = list(db.session.scalars(select(Contract).order_by(Contract.code)))
    # Only lines whose contract declares difficulty levels have confirmations to filter by.
    lines = [(sl.code, sl.name, code) for sl, code in db.session.execute(
        select(ServiceLine, Contract.code).join(Contract, ServiceLine.contract_id == Contract.id)
        .order_by(Contract.code, ServiceLine.id)) if sl.difficulty_levels]
    departments = list(db.session.scalars(select(Department).order_by(Department.code)))
    return render_template("web/difficulty.html", rows=rows, filters=filters, contracts=contracts,
                           lines=[ln for ln in lines if not filters["contract"] or ln[2] == filters["contract"]],
                           departments=departments, results=results or []), status


@bp.get("/difficulty")
def difficulty_reviews() -> Any:
    return _page()


@bp.post("/difficulty")
def difficulty_confirm() -> Any:
    """确认所选: confirm every ticked task through the ordinary task completion, one unit of work each."""
    ids: list[int] = []
    for raw in request.form.getlist("task_id")[:MAX_TICKED]:
        if raw.isdigit() and int(raw) not in ids:
            ids.append(int(raw))
    results: list[dict[str, Any]] = []
    if not ids:
        results.append({"task_id": None, "item": None, "ok": False, "why": _("请先勾选要确认的事项。")})
        return _page(results, 422)
    for task_id in ids:
        try:
            row: HumanTask | None = load_task_for(db.session, me(), task_id, "task.read")
        except NotFound:
            row = None
        label = f"{row.item.code}「{row.item.name}」" if row is not None and row.form == REVIEW_FORM else None
        if label is None:
            results.append({"task_id": task_id, "item": f"#{task_id}", "ok": False, "why": _("所指的任务无效。")})
            continue
        try:
            with unit_of_work(db.session):
                complete_task(web_ctx(), task_id, {"verdict": "confirm"})
            results.append({"task_id": task_id, "item": label, "ok": True, "why": ""})
        except NotFound:
            db.session.rollback()
            results.append({"task_id": task_id, "item": label, "ok": False, "why": _("所指的任务无效。")})
        except FormInvalid as err:
            db.session.rollback()
            problems = "；".join(str(m) for msgs in (err.extra.get("errors") or {}).values() for m in msgs)
            results.append({"task_id": task_id, "item": label, "ok": False,
                            "why": _("提交的内容有误。") + (f"（{problems}）" if problems else "")})
        except DomainError as err:
            db.session.rollback()
            results.append({"task_id": task_id, "item": label, "ok": False, "why": refusal(err)})
    failed = any(not r["ok"] for r in results)
    return _page(results, 200 if not failed or any(r["ok"] for r in results) else 409)

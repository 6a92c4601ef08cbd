"""Web pages for service orders (运营服务单): a department reviewer or the buyer files one with its 需求函; the PM
accepts it into an item or declines it. The same engine use cases as /api/v1/service-orders."""
from __future__ import annotations

import math
from decimal import Decimal
from typing import Any

from flask import current_app, flash, redirect, render_template, request, url_for
from sqlalchemy import func, select

from api.extensions import db
from api.rest.service_orders import new_order_from, order_file_response
from api.uploads import file_stream, record_upload, stream_length
from api.web.auth import me, web_ctx
from api.web.formfields import finite_decimal
from api.web.i18n import _, form_message
from api.web.pm import field_text
from api.web.views import PER_PAGE, _page, bp, refusal
from engine.contract.registration import is_metered, line_fields
from engine.errors import DomainError, FormInvalid, NotFound, ServiceUnavailable
from engine.trust.access import authorize
from engine.trust.policy import DEPARTMENT, may, scope_of
from engine.usecases.service_orders import (
    STATUSES,
    Acceptance,
    accept_order,
    decline_order,
    file_order,
    load_order_for,
    order_scope,
)
from storage.models import CHANNELS, Contract, Department, ServiceLine, ServiceOrder
from storage.unit_of_work import unit_of_work

ORDER_STATUS = {"submitted": "待受理", "accepted": "已受理", "declined": "不予受理"}


def _messages(errors: dict[str, list[str]]) -> dict[str, list[str]]:
    return {k: [form_message(field_text(m)) for m in v] for k, v in errors.items()}


@bp.get("/service-orders")
def service_orders() -> Any:
    user = me()
    status = request.args.get("status") or ""
    query = select(ServiceOrder).where(order_scope(user))
    if status in STATUSES:
        query = query.where(ServiceOrder.status == status)
    else:
        status = ""
    total = int(db.session.execute(select(func.count()).select_from(query.subquery())).scalar_one())
    pages = max(1, math.ceil(total / PER_PAGE))
    page = min(_page(), pages)
    rows = list(db.session.scalars(query.order_by(ServiceOrder.id.desc()).offset((page - 1) * PER_PAGE)
                                   .limit(PER_PAGE)))
    return render_template("web/service_orders.html", orders=rows, status=status, total=total, page=page,
                           pages=pages, statuses=ORDER_STATUS,
                           may_file=may(user, "service_order.file"))


def _new_page(values: dict[str, Any], errors: dict[str, list[str]], status: int = 200) -> Any:
    user = me()
    contracts = list(db.session.scalars(select(Contract).order_by(Contract.code)))
    query = select(Department).order_by(Department.code)
    if scope_of(user.role, "service_order.file") == DEPARTMENT:  # files for their own department only
        query = query.where(Department.id == user.department_id)
    return render_template("web/service_order_new.html", contracts=contracts,
                           departments=list(db.session.scalars(query)), values=values, errors=errors,
                           channels=CHANNELS, max_upload_mb=current_app.config["ITEMGATE"].max_upload_mb), status


@bp.route("/service-orders/new", methods=["GET", "POST"])
def service_order_new() -> Any:
    user = me()
    own_department = authorize(user, "service_order.file") == DEPARTMENT
    if request.method == "GET":
        return _new_page({"mode": "new", "channels": [],
                          "department": user.department_code if own_department else ""}, {})
    values: dict[str, Any] = {k: (request.form.get(k) or "").strip() for k in
                              ("contract", "department", "title", "description", "service_line", "mode",
                               "wanted_by")}
    values["channels"] = request.form.getlist("channels")
    if own_department:
        values["department"] = user.department_code or ""
    errors: dict[str, list[str]] = {}
    if not values["title"]:
        errors["title"] = [_("此项必填。")]
    upload = request.files.get("file")
    if upload is None or not upload.filename:
        errors["file"] = [_("请上传需求函。")]
    context = web_ctx()
    try:
        form = request.form.copy()
        form["department"] = values["department"]
        spec = new_order_from(form)
        if errors:
            raise FormInvalid(errors)
        assert upload is not None
        store = context.store
        if store is None:
            raise ServiceUnavailable("no evidence store is configured")
        order = record_upload(db.session, store, lambda: file_order(
            context, store, spec, upload.filename, file_stream(upload), stream_length(upload.stream),
            current_app.config["ITEMGATE"].max_upload_bytes))
    except FormInvalid as err:
        db.session.rollback()
        found = _messages(err.extra.get("errors") or {})
        found.update(errors)
        return _new_page(values, found, 422)
    except NotFound:
        raise
    except DomainError as err:
        db.session.rollback()
        return _new_page(values, {"file": [refusal(err)]}, 422)
    flash(_("已提交运营服务单，等待项目经理受理"), "ok")
    return redirect(url_for("web.service_order", order_id=order.id))


def _order_page(order: ServiceOrder, errors: dict[str, list[str]] | None = None,
                values: dict[str, Any] | None = None, status: int = 200) -> Any:
    user = me()
    # Accepting an order registers work to be done, never a metered line's record of units in a period (those
    # are registered on 登记事项 or imported): the lines offered and their attributes.
    lines = [sl for sl in sorted(order.contract.service_lines, key=lambda s: (s.position, s.code))
             if sl.process_id and not is_metered(sl)]
    fields_by_line = {sl.code: [f for f in line_fields(sl) if f.is_attribute] for sl in lines}
    all_fields: dict[str, Any] = {}
    for specs in fields_by_line.values():
        for spec in specs:
            all_fields.setdefault(spec.name, spec)
    if values is None:
        values = {"service_line": order.service_line or "", "channels": list(order.channels), "mode": order.mode,
                  "name": order.title, "code": "", "difficulty": "1.0", "attr_departments": [], "attr_parts": [],
                  "attr_flags": []}
    return render_template(
        "web/service_order.html", order=order, statuses=ORDER_STATUS, lines=lines, fields_by_line=fields_by_line,
        all_fields=all_fields, departments=list(db.session.scalars(select(Department).order_by(Department.code))),
        channels=CHANNELS, values=values, errors=errors or {},
        may_decide=may(user, "service_order.decide") and order.status == "submitted"), status


@bp.get("/service-orders/<int:order_id>")
def service_order(order_id: int) -> Any:
    return _order_page(load_order_for(db.session, me(), order_id))


@bp.get("/service-orders/<int:order_id>/file")
def service_order_file(order_id: int) -> Any:
    user = me()
    order = load_order_for(db.session, user, order_id)
    return order_file_response(order, user, inline=request.args.get("inline") == "1"
                               and order.media_type.startswith("application/pdf"))


@bp.post("/service-orders/<int:order_id>/accept")
def service_order_accept(order_id: int) -> Any:
    user = me()
    order = load_order_for(db.session, user, order_id)
    form = request.form
    values: dict[str, Any] = {k: (form.get(k) or "").strip() for k in
                              ("service_line", "code", "name", "mode", "difficulty")}
    values["channels"] = form.getlist("channels")
    values["attr_departments"] = form.getlist("attr_departments")
    values["attr_parts"] = form.getlist("attr_parts")
    values["attr_flags"] = form.getlist("attr_flags")
    errors: dict[str, list[str]] = {}
    difficulty = finite_decimal(values["difficulty"], "1.0")
    if difficulty is None:
        errors["difficulty"] = [_("请输入有效的数字。")]
        difficulty = Decimal("1.0")
    if not values["code"]:
        errors["code"] = [_("此项必填。")]
    line = db.session.execute(select(ServiceLine).where(ServiceLine.contract_id == order.contract_id,
                                                        ServiceLine.code == values["service_line"])).scalar()
    if line is None:
        errors["service_line"] = [_("请选择服务类别。")]
    attributes: dict[str, Any] = {}
    if line is not None:
        for spec in line_fields(line):
            if not spec.is_attribute:
                continue
            if spec.kind == "departments":
                chosen = [d for d in values["attr_departments"] if d]
                if chosen and order.department.code not in chosen:
                    chosen.insert(0, order.department.code)
                if spec.required and not chosen:
                    errors[f"attributes.{spec.name}"] = [_("请选择参与部门。")]
                attributes[spec.name] = chosen
            elif spec.kind == "choices":
                attributes[spec.name] = [p for p in values["attr_parts"] if p]
            else:
                attributes[spec.name] = spec.name in values["attr_flags"]
    if errors:
        return _order_page(order, errors, values, 422)
    context = web_ctx()
    try:
        with unit_of_work(db.session):
            item = accept_order(context, context.store, order_id, Acceptance(
                service_line=values["service_line"], code=values["code"], name=values["name"] or None,
                channels=[c for c in CHANNELS if c in values["channels"]], mode=values["mode"] or None,
                difficulty=difficulty, attributes=attributes))
    except FormInvalid as err:
        db.session.rollback()
        return _order_page(order, _messages(err.extra.get("errors") or {}), values, 422)
    except NotFound:
        raise
    except DomainError as err:
        db.session.rollback()
        flash(_("操作未执行：") + refusal(err), "error")
        return redirect(url_for("web.service_order", order_id=order_id))
    flash(_("已受理运营服务单，事项已登记，流程已启动"), "ok")
    return redirect(url_for("web.item", item_id=item.id))


@bp.post("/service-orders/<int:order_id>/decline")
def service_order_decline(order_id: int) -> Any:
    load_order_for(db.session, me(), order_id)
    try:
        with unit_of_work(db.session):
            decline_order(web_ctx(), order_id, request.form.get("reason"))
        flash(_("已不予受理"), "ok")
    except NotFound:
        raise
    except DomainError as err:
        db.session.rollback()
        problems = [field_text(m) for msgs in (err.extra.get("errors") or {}).values() for m in msgs]
        flash(_("操作未执行：") + " ".join(problems) if problems else refusal(err), "error")
    return redirect(url_for("web.service_order", order_id=order_id))

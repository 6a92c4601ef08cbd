"""The admin console (/admin): system status, users, departments, contract catalogues and the working-day calendar.
Every change goes through the same use cases as the REST API and is audited there."""
from __future__ import annotations

import base64
import math
import re
from datetime import UTC, date, datetime
from typing import Any

from flask import Blueprint, flash, redirect, render_template, request, url_for
from sqlalchemy import func, select

from api.auth import hash_password
from api.extensions import db
from api.rest.admin import delivery_json, delivery_query, departments_json, system_status, user_query
from api.web.auth import me, web_ctx
from api.web.i18n import _
from api.web.views import refusal
from engine.contract.holidays import MAX_YEAR, MIN_YEAR, calendar_years, enter_year, year_view
from engine.errors import DomainError, FormInvalid, Invalid, PayloadTooLarge
from engine.trust import audit, delivery
from engine.trust.access import authorize
from engine.trust.accounts import create_user
from engine.trust.policy import ROLES, needs_department
from engine.usecases import admin
from storage.models import Department, NotificationDelivery, User
from storage.unit_of_work import unit_of_work

bp = Blueprint("admin_web", __name__, url_prefix="/admin")

PER_PAGE = 30
USERNAME = re.compile(r"^[A-Za-z0-9_.\-]{2,64}$")
_ADMIN_REFUSALS = {
    "last_admin": "这是最后一个有效的系统管理员，请先设置另一个管理员。",
    "user_exists": "该用户名已存在。",
    "department_exists": "该部门代码已存在。",
    "unknown_user": "找不到该用户。",
    "catalog_changed": "文件与预览时不同，请重新检查。",
}


def _refusal(err: DomainError) -> str:
    if err.code in _ADMIN_REFUSALS:
        return _(_ADMIN_REFUSALS[err.code])
    if isinstance(err, FormInvalid) or err.code == "invalid_form":
        errors = err.extra.get("errors", {})
        return _("提交的内容有误：") + "；".join(f"{k}: {', '.join(map(str, v))}" for k, v in errors.items())
    return refusal(err)


def _departments() -> list[Department]:
    return list(db.session.scalars(select(Department).order_by(Department.code)))


# ---------------------------------------------------------------- status

@bp.get("")
def status() -> Any:
    authorize(me(), "ops.maintain")
    failed = list(db.session.scalars(delivery_query("failed").order_by(NotificationDelivery.id.desc())
                                     .limit(20)))
    return render_template("web/admin/status.html", status=system_status(),
                           failed=[delivery_json(r) for r in failed], years=calendar_years(db.session))


@bp.post("/deliveries/<int:delivery_id>/retry")
def delivery_retry(delivery_id: int) -> Any:
    authorize(me(), "ops.maintain")
    if delivery.retry(db.session, delivery_id, datetime.now(UTC)):
        with unit_of_work(db.session):
            audit.record(db.session, web_ctx().actor, "notification.delivery_retried", target_type="delivery",
                         target_id=delivery_id)
        flash(_("已重新排队发送"), "ok")
    else:
        flash(_("该发送记录不是失败状态。"), "error")
    return redirect(url_for("admin_web.status"))


# ---------------------------------------------------------------- users

@bp.get("/users")
def users() -> Any:
    authorize(me(), "user.manage")
    args = {"role": request.args.get("role") or None, "department": request.args.get("department") or None,
            "q": (request.args.get("q") or "").strip()[:64] or None,
            "active": {"1": True, "0": False}.get(request.args.get("active") or "")}
    if args["role"] not in ROLES:
        args["role"] = None
    query = user_query(args)
    total = int(db.session.execute(select(func.count()).select_from(query.subquery())).scalar_one())
    pages = max(1, math.ceil(total / PER_PAGE))
    page = max(1, min(request.args.get("page", type=int) or 1, pages))
    rows = list(db.session.scalars(query.order_by(User.username).offset((page - 1) * PER_PAGE).limit(PER_PAGE)))
    return render_template("web/admin/users.html", rows=rows, total=total, page=page, pages=pages, args=args,
                           roles=ROLES, departments=_departments())


@bp.post("/users")
def user_create() -> Any:
    user = me()
    authorize(user, "user.manage")
    form = request.form
    username = (form.get("username") or "").strip()
    password = form.get("password") or ""
    role = form.get("role") or ""
    department = (form.get("department") or "").strip() or None
    try:
        with unit_of_work(db.session):
            errors: dict[str, list[str]] = {}
            if not USERNAME.match(username):
                errors["username"] = [_("2–64 位字母、数字、._-")]
            if not 8 <= len(password) <= 256:
                errors["password"] = [_("密码至少 8 位")]
            if errors:
                raise FormInvalid(errors)
            if department and db.session.execute(select(Department.id).where(Department.code == department)
                                                 ).scalar() is None:
                raise FormInvalid({"department": [_("未知部门")]})
            created = create_user(db.session, username, hash_password(password), role, department,
                                  (form.get("display_name") or "").strip()[:100] or None)
            audit.record(db.session, web_ctx().actor, "user.created", target_type="user", target_id=created.id,
                         username=created.username, role=created.role)
        flash(_("已创建用户 {name}", name=username), "ok")
    except DomainError as err:
        db.session.rollback()
        flash(_refusal(err), "error")
    return redirect(url_for("admin_web.users"))


@bp.post("/users/<string:username>")
def user_change(username: str) -> Any:
    user = me()
    authorize(user, "user.manage")
    form = request.form
    action = form.get("action")
    body: dict[str, Any] = {}
    if action == "deactivate":
        body["active"] = False
    elif action == "activate":
        body["active"] = True
    elif action == "password":
        body["password"] = form.get("password") or ""
    else:
        if form.get("role"):
            body["role"] = form.get("role")
        if "department" in form:
            body["department"] = (form.get("department") or "").strip() or None
    try:
        with unit_of_work(db.session):
            if "password" in body and not 8 <= len(body["password"]) <= 256:
                raise FormInvalid({"password": [_("密码至少 8 位")]})
            if body.get("role") is not None and body["role"] not in ROLES:
                raise FormInvalid({"role": [_("未知角色")]})
            result = admin.change_user_by_name(db.session, web_ctx().actor, username, body,
                                         hash_password(body["password"]) if "password" in body else None)
        done = {"deactivate": _("已停用 {name}", name=username), "activate": _("已启用 {name}", name=username),
                "password": _("已重置 {name} 的密码，其所有登录已结束", name=username)}.get(
            action or "", _("已保存 {name}", name=username))
        if result.released:
            done += _("；{n} 个已认领任务已退回队列", n=len(result.released))
        flash(done, "ok")
    except DomainError as err:
        db.session.rollback()
        flash(_refusal(err), "error")
    after = request.form.get("next") or ""
    return redirect(after if after.startswith("/admin/") else url_for("admin_web.users"))


# ---------------------------------------------------------------- departments

@bp.get("/departments")
def departments() -> Any:
    authorize(me(), "user.manage")
    rows = departments_json()
    ids = {d.code: d.id for d in _departments()}
    robots = {code: admin.channels_of(db.session, "department", ids[code]).get("webhook") for code in ids}
    # A lead reviewer is a reviewer of that department: a user of a department-bound role (engine/trust/policy.py).
    reviewers = [u for u in db.session.scalars(select(User).where(User.active.is_(True),
                                                                  User.department_id.is_not(None))
                                               .order_by(User.username)) if needs_department(u.role)]
    by_dept: dict[int | None, list[User]] = {}
    for r in reviewers:
        by_dept.setdefault(r.department_id, []).append(r)
    return render_template("web/admin/departments.html", rows=rows, ids=ids, robots=robots,
                           reviewers=by_dept, mask=delivery.mask)


@bp.post("/departments")
def department_create() -> Any:
    try:
        with unit_of_work(db.session):
            admin.create_department(db.session, web_ctx().actor, me(), request.form.get("code") or "",
                                    request.form.get("name") or "")
        flash(_("已创建部门"), "ok")
    except DomainError as err:
        db.session.rollback()
        flash(_refusal(err), "error")
    return redirect(url_for("admin_web.departments"))


@bp.post("/departments/<string:code>")
def department_change(code: str) -> Any:
    form = request.form
    try:
        with unit_of_work(db.session):
            context = web_ctx()
            department = admin.change_department(db.session, context.actor, me(), code, name=form.get("name"),
                                                 lead_reviewer=form.get("lead_reviewer") or None, lead_given=True)
            # The robot's key is never shown again: an empty field keeps it, a new URL replaces it.
            robot = (form.get("robot") or "").strip()
            if form.get("robot_clear") == "on":
                admin.set_channels(db.session, context.actor, "department", department.id, {"webhook": None})
            elif robot:
                admin.set_channels(db.session, context.actor, "department", department.id,
                                   {"webhook": {"target": robot, "enabled": True}})
        flash(_("已保存部门 {code}", code=code), "ok")
    except DomainError as err:
        db.session.rollback()
        flash(_refusal(err), "error")
    return redirect(url_for("admin_web.departments"))


# ---------------------------------------------------------------- catalogues

@bp.get("/catalogs")
def catalogs() -> Any:
    authorize(me(), "catalog.manage")
    from storage.models import Contract

    contracts = list(db.session.scalars(select(Contract).order_by(Contract.code)))
    return render_template("web/admin/catalogs.html", contracts=contracts, check=None, text_b64=None)


def _catalog_text() -> tuple[str, str]:
    upload = request.files.get("file")
    if upload is not None and upload.filename:
        raw = upload.stream.read(1024 * 1024 + 1)
        if len(raw) > 1024 * 1024:
            raise PayloadTooLarge("a catalogue file is at most 1 MiB")
        try:
            return raw.decode("utf-8"), upload.filename[:200]
        except UnicodeDecodeError as exc:
            raise FormInvalid({"file": [_("文件不是 UTF-8 文本（TOML）")]}) from exc
    # The previewed file comes back byte for byte (base64: a textarea would change its line endings).
    encoded = request.form.get("text_b64") or ""
    try:
        text = base64.b64decode(encoded.encode("ascii"), validate=True).decode("utf-8")
    except (ValueError, UnicodeError) as exc:
        raise FormInvalid({"file": [_("请选择目录文件")]}) from exc
    if not text:
        raise FormInvalid({"file": [_("请选择目录文件")]})
    return text, (request.form.get("filename") or "catalog.toml")[:200]


@bp.post("/catalogs/check")
def catalog_check() -> Any:
    user = me()
    authorize(user, "catalog.manage")
    from storage.models import Contract

    contracts = list(db.session.scalars(select(Contract).order_by(Contract.code)))
    try:
        text, filename = _catalog_text()
    except DomainError as err:
        flash(_refusal(err), "error")
        return redirect(url_for("admin_web.catalogs"))
    check = admin.check_catalog(db.session, user, text, filename)
    status = 200 if check.ok else 422
    return render_template("web/admin/catalogs.html", contracts=contracts, check=check,
                           text_b64=base64.b64encode(text.encode("utf-8")).decode("ascii")), status


@bp.post("/catalogs/apply")
def catalog_apply() -> Any:
    user = me()
    try:
        with unit_of_work(db.session):
            text, filename = _catalog_text()
            check, changed = admin.apply_catalog(db.session, web_ctx().actor, user, text, filename,
                                                 request.form.get("sha256") or None)
        flash(_("已载入合同 {code} 的服务目录", code=check.code) if changed
              else _("合同 {code} 的服务目录与已载入的版本相同，未做更改", code=check.code), "ok")
    except DomainError as err:
        db.session.rollback()
        flash(_refusal(err), "error")
    return redirect(url_for("admin_web.catalogs"))


# ---------------------------------------------------------------- calendar

_DAY_LINE = re.compile(r"^\s*(\d{4}-\d{2}-\d{2})\s*(.*)$")


def _day_lines(text: str, field: str, errors: dict[str, list[str]]) -> list[dict[str, Any]]:
    out = []
    for number, line in enumerate((text or "").splitlines(), start=1):
        if not line.strip():
            continue
        match = _DAY_LINE.match(line)
        try:
            if match is None:
                raise ValueError(line)
            out.append({"date": date.fromisoformat(match.group(1)), "note": match.group(2).strip()[:100] or None})
        except ValueError:
            errors.setdefault(field, []).append(_("第 {n} 行不是“YYYY-MM-DD 备注”：{line}", n=number,
                                                  line=line.strip()[:40]))
    return out


@bp.route("/calendar", methods=["GET", "POST"])
def calendar() -> Any:
    user = me()
    authorize(user, "catalog.manage")
    now = datetime.now(UTC)
    year = request.values.get("year", type=int) or now.year + 1
    year = max(MIN_YEAR, min(year, MAX_YEAR))
    errors: dict[str, list[str]] = {}
    form_text = {"holidays": "", "workdays": ""}
    if request.method == "POST":
        form_text = {k: request.form.get(k, "")[:20000] for k in form_text}
        holidays = _day_lines(form_text["holidays"], "holidays", errors)
        workdays = _day_lines(form_text["workdays"], "workdays", errors)
        if not errors:
            try:
                with unit_of_work(db.session):
                    enter_year(db.session, web_ctx().actor, user, year, holidays, workdays)
                flash(_("已保存 {year} 年的工作日历", year=year), "ok")
                return redirect(url_for("admin_web.calendar", year=year))
            except Invalid as err:
                db.session.rollback()
                for key, messages in err.extra.get("errors", {}).items():
                    errors.setdefault(key.split(".")[0], []).extend(messages)
    view = year_view(db.session, year)
    if request.method == "GET":
        form_text = {"holidays": "\n".join(f"{d['date']} {d['note'] or ''}".strip() for d in view["holidays"]),
                     "workdays": "\n".join(f"{d['date']} {d['note'] or ''}".strip() for d in view["workdays"])}
    return render_template("web/admin/calendar.html", year=year, view=view, years=calendar_years(db.session),
                           errors=errors, form_text=form_text), 422 if errors else 200

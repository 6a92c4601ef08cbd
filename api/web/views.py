"""Web pages: login, inbox, task, item, item list, dashboard; each calls the engine's use cases."""
from __future__ import annotations

import logging
import math
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from flask import (
    Blueprint,
    current_app,
    flash,
    g,
    jsonify,
    redirect,
    render_template,
    request,
    session,
    url_for,
)
from flask_login import current_user, login_user, logout_user
from markupsafe import Markup
from sqlalchemy import func, select
from werkzeug.datastructures import MultiDict

from api.auth import authenticate
from api.downloads import artefact_response, sheet_response
from api.extensions import db, login_manager
from api.serializers import artefact_json, item_detail_json
from api.uploads import file_stream, record_upload, stream_length
from api.web.auth import SessionUser, end_web_session, me, start_web_session, web_ctx
from api.web.formfields import data_from, fields_for
from api.web.i18n import STAGES, _, form_message, lang
from engine.errors import Conflict, DomainError, FormInvalid, GateUnmet, Invalid, NotFound, ServiceUnavailable
from engine.evidence.artefacts import submitted_evidence, upload_artefact
from engine.evidence.preview import MAX_BYTES as PREVIEW_MAX_BYTES
from engine.evidence.preview import PREVIEWABLE_DOCUMENTS, NotPreviewable, document_preview
from engine.evidence.sheets import SHEETS
from engine.money.dashboard import build_dashboard
from engine.runtime.diagram import render_svg
from engine.runtime.guidance import step_guidance
from engine.trust import audit
from engine.trust.access import authorize, load_artefact_for, load_item_for, load_task_for, may_act_on
from engine.trust.policy import DEPARTMENT, may, scope_of
from engine.usecases.drafts import load_draft, save_draft
from engine.usecases.inbox import settlement_steps
from engine.usecases.items import item_detail
from engine.usecases.lifecycle import difficulty_adjustable, reworkable
from engine.usecases.lists import filtered_items, task_query
from engine.usecases.rounds import artefact_versions, review_rounds, step_records
from engine.usecases.tasks import claim, complete_task, hand_over, optional_statuses, task_requirements, unclaim
from storage.artefact_store import ObjectMissing, StoreUnavailable
from storage.models import Department, HumanTask, ProcessInstance, ServiceLine, User, WorkItem
from storage.unit_of_work import unit_of_work

log = logging.getLogger("itemgate.web")

bp = Blueprint("web", __name__)

PER_PAGE = 20
ACCEPTED_EXTENSIONS = (".pdf", ".doc", ".docx", ".xls", ".xlsx", ".png", ".jpg", ".jpeg", ".zip", ".ofd", ".txt")
PREVIEWABLE = ("application/pdf", "image/png", "image/jpeg")
QUIET_EVENTS = ("task.claimed", "task.unclaimed", "artefact.downloaded")
# Domain refusals people meet in normal work, said in their language (the engine's detail is English).
_REFUSALS = {
    "claimed_by_other": "此任务已由他人认领。",
    "task_not_ready": "此任务已结束，无需处理。",
    "not_your_task": "您不能处理此任务。",
    "version_conflict": "数据已被他人更改，请刷新后重试。",
    "separation_of_duties": "您提交了此交付物，不能由您本人审核。",
    "unknown_user": "找不到该用户。",
    "item_not_active": "事项已结束，不能再修改。",
    "too_large": "文件太大。",
    "unsupported_media_type": "不支持此文件类型。",
    "unknown_kind": "未知的交付物类型。",
    "store_unavailable": "服务暂时不可用，请稍后再试。",
    "role_required": "您没有权限执行此操作。",
    "under_review": "该交付物已提交审核，审核结束前不能替换。",
    "task_required": "多个部门的任务都需要此交付物，请在对应任务页面上传。",
    "invalid_task_id": "所指的任务无效。",
    "unknown_task": "所指的任务无效。",
    "task_not_open": "所指的任务已结束，不能再上传交付物。",
    "kind_not_for_task": "此任务不需要该类交付物。",
    "not_your_department": "这是其他部门的交付物，您不能上传。",
    "entry_under_review": "该分录所在的结算申报正在审核中，不能冲销；请待申报退回后先将其移出申报。",
    "already_reversed": "该分录已被冲销。",
    "difficulty_confirmed": "第三方已确认难度系数，不能再调整建议值。",
    "order_decided": "该运营服务单已处理。",
}


def refusal(err: DomainError) -> str:
    return _(_REFUSALS.get(err.code, "出现了错误。"))


def act_and_flash(action: Callable[[], Any], done: str, explain: Callable[[DomainError], str] = refusal) -> bool:
    """A form post's use case in its own unit of work: flash `done` when it ran, or the refusal in people's words
    (`explain`) when the engine refused (rolled back); NotFound goes on as a 404. True when it ran."""
    try:
        with unit_of_work(db.session):
            action()
    except NotFound:
        raise
    except DomainError as err:
        flash(explain(err), "error")
        return False
    flash(done, "ok")
    return True


def _safe_next(default: str) -> str:
    target = request.values.get("next") or ""
    if target.startswith("/") and not target.startswith("//") and "\\" not in target:
        return target
    return default


def _page() -> int:
    page = request.args.get("page", type=int) or 1
    return max(1, min(page, 100_000))


def _count(query: Any) -> int:
    return int(db.session.execute(select(func.count()).select_from(query.subquery())).scalar_one())


# ---------------------------------------------------------------- session

@bp.before_request
def _require_login() -> Any:
    if request.endpoint == "web.login":
        return None
    if not current_user.is_authenticated:
        return login_manager.unauthorized()
    g.user = current_user.row  # for the request log
    return None


@bp.route("/login", methods=["GET", "POST"])
def login() -> Any:
    error = None
    username = ""
    if request.method == "POST":
        username = (request.form.get("username") or "").strip()[:64]
        password = (request.form.get("password") or "")[:256]
        from api.limits import TooManyAttempts, check_login_allowed, record_login_failure, remember_device

        try:
            check_login_allowed(username)  # the same limits as the API's token endpoint
        except TooManyAttempts:
            with unit_of_work(db.session):
                audit.record(db.session, audit.Actor(None, username or None, None, g.get("request_id")),
                             "auth.login", outcome="rate_limited")
            raise
        user = authenticate(username, password) if username and password else None
        actor = audit.Actor(user.id if user else None, username or None, user.role if user else None,
                            g.get("request_id"))
        if user is None:
            with unit_of_work(db.session):
                record_login_failure(username)
                audit.record(db.session, actor, "auth.login", outcome="failure")
            # One message for both halves, so a guesser cannot tell which was wrong.
            error = _("用户名或密码错误")
        else:
            with unit_of_work(db.session):
                lang = session.get("lang")
                session.clear()  # a fresh session at sign-in: nothing carried over from before
                if lang:
                    session["lang"] = lang
                session.permanent = True  # expires after ITEMGATE_SESSION_MINUTES of inactivity
                start_web_session(user)
                login_user(SessionUser(user))
                audit.record(db.session, actor, "auth.login", target_type="user", target_id=user.id)
            return remember_device(redirect(_safe_next(url_for("web.inbox"))), user.username)
    return render_template("web/login.html", error=error, username=username), 200 if error is None else 401


@bp.post("/logout")
def logout() -> Any:
    with unit_of_work(db.session):
        end_web_session()
        audit.record(db.session, audit.Actor.of(me(), g.get("request_id")), "auth.logout", target_type="user",
                     target_id=me().id)
    lang = session.get("lang")
    logout_user()
    session.clear()
    if lang:
        session["lang"] = lang
    flash(_("您已退出登录"), "ok")
    return redirect(url_for("web.login"))


# ---------------------------------------------------------------- inbox

def _colleagues(tasks: list[HumanTask], user: User) -> dict[int, list[User]]:
    """Who each task may be handed to: active users the engine would let act on it, except me."""
    roles = {t.role for t in tasks}
    if not roles:
        return {}
    people = list(db.session.scalars(select(User).where(User.role.in_(roles), User.active.is_(True),
                                                        User.id != user.id).order_by(User.username)))
    return {t.id: [p for p in people if may_act_on(p, t)] for t in tasks}


def _departments() -> dict[int, Department]:
    """Every department by id, loaded once per request (pages show them in several places)."""
    if "departments" not in g:
        g.departments = {d.id: d for d in db.session.scalars(select(Department).order_by(Department.code))}
    return g.departments  # type: ignore[no-any-return]


def _visible_departments(user: User) -> list[Department]:
    departments = list(_departments().values())
    if scope_of(user.role, "item.read") == DEPARTMENT:
        return [d for d in departments if d.id == user.department_id]
    return departments


@bp.get("/inbox")
def inbox() -> Any:
    user = me()
    scopes = ["mine", "group"] + (["all"] if may(user, "task.queue_all") else [])
    counts = {s: _count(task_query(user, s)) for s in scopes}
    scope = request.args.get("scope")
    if scope not in scopes:
        # Open where the work is: my claimed tasks, else my queue, else (for roles who oversee) everything.
        scope = next((s for s in scopes if counts[s]), "group")
    steps = settlement_steps(db.session, user)
    # The third party's difficulty confirmations can be done in bulk on their own page: the inbox says how many.
    difficulty_waiting = _count(task_query(user, "group").where(HumanTask.form == "difficulty_review")) \
        if may(user, "difficulty.review") else 0
    waiting_orders: list[Any] = []
    if may(user, "service_order.decide"):  # service orders wait for the PM to accept or decline them
        from storage.models import ServiceOrder

        waiting_orders = list(db.session.scalars(select(ServiceOrder).where(ServiceOrder.status == "submitted")
                                                 .order_by(ServiceOrder.id).limit(50)))
    query = task_query(user, scope).join(WorkItem, HumanTask.item_id == WorkItem.id)
    q = (request.args.get("q") or "").strip()[:100]
    if q:
        like = f"%{q}%"
        query = query.where(WorkItem.code.like(like) | WorkItem.name.like(like))
    stage = request.args.get("stage") or ""
    if stage:
        query = query.where(HumanTask.stage == stage)
    department = request.args.get("department") or ""
    if department:
        query = query.join(Department, HumanTask.department_id == Department.id).where(
            Department.code == department)
    now = datetime.now(UTC)
    overdue_only = request.args.get("overdue") == "1"
    if overdue_only:
        query = query.where(HumanTask.due_at.is_not(None), HumanTask.due_at < now)
    sort = request.args.get("sort") or "due"
    if sort == "created":
        query = query.order_by(HumanTask.created_at, HumanTask.id)
    elif sort == "item":
        query = query.order_by(WorkItem.code, HumanTask.id)
    else:
        sort = "due"
        # Undated last, as an index in this order gives them (ix_human_tasks_*_due_queue): no sort of the queue.
        query = query.order_by(HumanTask.due_at.asc().nulls_last(), HumanTask.created_at, HumanTask.id)
    # Without a filter the page's total is its scope's count, already taken.
    filtered = bool(q or stage or department or overdue_only)
    total = _count(query) if filtered else counts[scope]
    pages = max(1, math.ceil(total / PER_PAGE))
    page = min(_page(), pages)
    tasks = list(db.session.scalars(query.offset((page - 1) * PER_PAGE).limit(PER_PAGE)))
    departments = _departments()
    return render_template(
        "web/inbox.html", tasks=tasks, scope=scope, scopes=scopes, counts=counts, q=q, stage=stage,
        department=department, overdue_only=overdue_only, sort=sort, page=page, pages=pages, total=total,
        now=now, departments=departments, department_options=_visible_departments(user), stages=STAGES,
        colleagues=_colleagues(tasks, user), may_act=lambda t: may_act_on(user, t), me=user,
        settlement_steps=steps, waiting_orders=waiting_orders,
        difficulty_waiting=difficulty_waiting)


def _report_of(item: WorkItem) -> Any:
    """A contract-level item's monthly report (its files and narrative are shown with the item), else None."""
    if not item.contract_level:
        return None
    from engine.usecases.monthly_report import report_of

    return report_of(db.session, item)


def _act(task_id: int, action: Any, done: str) -> Any:
    act_and_flash(action, done)
    return redirect(_safe_next(url_for("web.task", task_id=task_id)))


@bp.post("/tasks/<int:task_id>/claim")
def task_claim(task_id: int) -> Any:
    return _act(task_id, lambda: claim(web_ctx(), task_id), _("已认领任务"))


@bp.post("/tasks/<int:task_id>/unclaim")
def task_unclaim(task_id: int) -> Any:
    return _act(task_id, lambda: unclaim(web_ctx(), task_id), _("已放回任务"))


@bp.post("/tasks/<int:task_id>/handover")
def task_handover(task_id: int) -> Any:
    to = (request.form.get("to") or "").strip()[:64]
    return _act(task_id, lambda: hand_over(web_ctx(), task_id, to), _("已转交给 {name}", name=to))


# ---------------------------------------------------------------- task page

def _previous_data(task: HumanTask) -> dict[str, Any]:
    """What was entered the last time this step was done (a rework task starts from it). Decisions are
    never carried over: a reviewer judges each submission afresh."""
    if task.data:
        return dict(task.data)
    if task.form in ("review", "cosign"):
        return {}
    row = db.session.scalars(select(HumanTask.data).where(
        HumanTask.item_id == task.item_id, HumanTask.spec_name == task.spec_name,
        HumanTask.status == "completed", HumanTask.id != task.id).order_by(HumanTask.id.desc()).limit(1)).first()
    return dict(row or {})


def _versions(item_id: int) -> dict[int, int]:
    return artefact_versions(db.session, item_id)


def render_task(task: HumanTask, *, errors: dict[str, list[str]] | None = None,
                values: MultiDict[str, str] | dict[str, Any] | None = None, missing: list[str] | None = None,
                status: int = 200) -> Any:
    user = me()
    item = task.item
    gate = task_requirements(db.session, task) if task.status == "ready" else []
    # A review shows exactly what was submitted to it (from the gate pass), in its own department's scope.
    review = submitted_evidence(db.session, task) if task.review_of else []
    unmet = [s.kind for s in gate if s.artefact is None]
    # The step's optional working documents are listed (and uploadable) after what it requires.
    optional = optional_statuses(db.session, task) if task.status == "ready" else []
    gate = gate + [s for s in optional if s.kind not in {g.kind for g in gate}]
    if missing:
        unmet = list(dict.fromkeys(unmet + missing))
    may_act = may_act_on(user, task)
    held_by_other = task.assignee_id is not None and task.assignee_id != user.id
    settings = current_app.config["ITEMGATE"]
    fields = fields_for(task.form)
    draft = load_draft(db.session, task, user) if task.status == "ready" else None
    report = _report_of(item)
    if values is None:
        # What this person typed last (kept as they type), else what the step recorded the last time it was done.
        values = draft if draft is not None else _previous_data(task)
        if report is not None and report.narrative and not (values or {}).get("narrative"):
            values = {**(values or {}), "narrative": report.narrative}  # what the PM wrote on the reports page
    elif isinstance(values, MultiDict):
        # Re-show what was just submitted, shaped like stored task data.
        values = {f.name: values.getlist(f.name) if f.widget == "checkboxes" else values.get(f.name)
                  for f in fields}
    departments = _departments()
    titles = {f.name: (f.title_en if lang() == "en" else f.title) for f in fields}
    # What this step recorded once done; for a review, every round so far with what changed between them.
    record = next(iter(step_records(db.session, user, item.id, [task.id])), None) \
        if task.status == "completed" else None
    rounds = review_rounds(db.session, user, task) if task.review_of else []
    return render_template(
        "web/task.html", task=task, item=item, gate=gate, review=review, unmet=unmet, record=record,
        report=report,
        guidance=step_guidance(db.session, task),
        draft_restored=draft is not None and status == 200,
        rounds=rounds,
        fields=fields, errors={k: [form_message(m, titles.get(k)) for m in v] for k, v in (errors or {}).items()},
        values=values, may_act=may_act, held_by_other=held_by_other,
        can_complete=task.status == "ready" and may_act and not held_by_other,
        colleagues=_colleagues([task], user).get(task.id, []), versions=_versions(item.id),
        max_upload_mb=settings.max_upload_mb, accepted=",".join(ACCEPTED_EXTENSIONS), previewable=PREVIEWABLE,
        previewable_documents=PREVIEWABLE_DOCUMENTS,
        task_department=departments.get(task.department_id or 0), now=datetime.now(UTC), me=user,
        sheet_kinds=set(SHEETS), optional_kinds={s.kind for s in optional},
        status_code=status,
    ), status


@bp.get("/tasks/<int:task_id>")
def task(task_id: int) -> Any:
    return render_task(load_task_for(db.session, me(), task_id))


@bp.post("/tasks/<int:task_id>/draft")
def task_draft(task_id: int) -> Any:
    """Keep what the person has typed so far (the task page sends it as they type and before an upload)."""
    user = me()
    task = load_task_for(db.session, user, task_id)
    if request.is_json:
        body = request.get_json(silent=True) or {}
        data = body.get("data") if isinstance(body, dict) else None
    else:
        data = {f.name: request.form.getlist(f.name) if f.widget == "checkboxes" else request.form.get(f.name)
                for f in fields_for(task.form) if f.name in request.form or f.widget == "checkboxes"}
    with unit_of_work(db.session):
        saved = save_draft(db.session, task, user, data, datetime.now(UTC))
    return jsonify({"saved": True, "fields": sorted(saved)}), 200


@bp.post("/tasks/<int:task_id>/complete")
def task_complete(task_id: int) -> Any:
    task = load_task_for(db.session, me(), task_id)
    data = data_from(task.form, request.form)
    try:
        with unit_of_work(db.session):
            complete_task(web_ctx(), task_id, data)
    except FormInvalid as err:
        db.session.rollback()
        return render_task(task, errors=err.extra.get("errors", {}), values=request.form, status=422)
    except GateUnmet as err:
        db.session.rollback()
        return render_task(task, values=request.form, missing=err.extra.get("missing", []), status=422)
    except NotFound:
        raise
    except DomainError as err:
        db.session.rollback()
        flash(refusal(err), "error")
        return redirect(url_for("web.task", task_id=task_id))
    flash(_("任务已提交"), "ok")
    return redirect(url_for("web.inbox"))


# ---------------------------------------------------------------- artefacts

def _wants_json() -> bool:
    return request.accept_mimetypes.best == "application/json"



@bp.post("/items/<int:item_id>/artefacts")
def artefact_upload(item_id: int) -> Any:
    """Upload in place from the task page: XMLHttpRequest gets JSON, a plain form post a redirect."""
    user = me()
    context = web_ctx()
    back = _safe_next(url_for("web.item", item_id=item_id))
    try:
        item = load_item_for(db.session, user, item_id, "artefact.upload")
        upload = request.files.get("file")
        if upload is None or not upload.filename:
            raise Invalid("send the file as multipart field 'file'", code="invalid_form",
                          errors={"file": ["required"]})
        if item.status != "active":
            raise Conflict(f"item {item.id} is {item.status}", code="item_not_active")
        if context.store is None:
            raise ServiceUnavailable("no evidence store is configured")
        store = context.store
        artefact = record_upload(db.session, store, lambda: upload_artefact(
            db.session, store, context.actor, user, item, request.form.get("kind", ""), upload.filename,
            file_stream(upload), stream_length(upload.stream), current_app.config["ITEMGATE"].max_upload_bytes,
            request.form.get("task_id"), request.form.get("verification_code")))
    except DomainError as err:
        if isinstance(err, NotFound):
            raise
        db.session.rollback()
        if _wants_json():
            # The task page's script shows `detail` to the person: said in their language, with the same code.
            # What the refusal names (the kind under review, the tasks to choose from) comes back as the REST
            # API gives it.
            body = {**err.extra, "type": "about:blank", "title": refusal(err), "status": err.status,
                    "code": err.code, "detail": refusal(err)}
            response = jsonify(body)
            response.status_code = err.status
            response.mimetype = "application/problem+json"
            return response
        flash(refusal(err), "error")
        return redirect(back)
    if _wants_json():
        return jsonify(artefact_json(artefact)), 201
    flash(_("上传成功") + f": {artefact.filename}", "ok")
    return redirect(back)


@bp.get("/items/<int:item_id>/sheets/<string:kind>.pdf")
def item_sheet(item_id: int, kind: str) -> Any:
    """The sign-off sheet the task page's button asks for (the same PDF as the REST API's)."""
    user = me()
    item = load_item_for(db.session, user, item_id, "item.read")
    return sheet_response(web_ctx().actor, user, item, kind)


@bp.get("/artefacts/<int:artefact_id>")
def artefact_content(artefact_id: int) -> Any:
    user = me()
    artefact = load_artefact_for(db.session, user, artefact_id)
    media_type = artefact.media_type.split(";")[0]
    inline = request.args.get("inline") == "1" and media_type in PREVIEWABLE
    response = artefact_response(artefact, user, current_app.extensions.get("itemgate_store"), inline)
    # An uploaded file must never run script in our origin, even when shown inline. (PDFs are left to the
    # browser's viewer, which a restrictive policy on the document would switch off.)
    if media_type != "application/pdf":
        response.headers["Content-Security-Policy"] = "default-src 'none'; img-src 'self'; style-src 'unsafe-inline'"
    return response


@bp.get("/artefacts/<int:artefact_id>/preview")
def artefact_preview(artefact_id: int) -> Any:
    """A .docx or .xlsx read in the browser (text and tables), so a reviewer need not download it. Audited as a
    read of the evidence, like a download."""
    user = me()
    artefact = load_artefact_for(db.session, user, artefact_id)
    media_type = artefact.media_type.split(";")[0]
    preview = None
    if media_type in PREVIEWABLE_DOCUMENTS and artefact.size <= PREVIEW_MAX_BYTES:
        store = current_app.extensions.get("itemgate_store")
        if store is None:
            raise ServiceUnavailable("no evidence store is configured")
        try:
            stream = store.iter_content(artefact.key, artefact.version_id)
            try:
                data = b"".join(stream)
            finally:
                stream.close()
            preview = document_preview(data, media_type)
        except (ObjectMissing, StoreUnavailable, NotPreviewable):  # the page offers the download instead
            log.info("no preview", extra={"artefact": artefact.id})
        with unit_of_work(db.session):
            audit.record(db.session, audit.Actor.of(user, g.get("request_id")), "artefact.downloaded",
                         target_type="artefact", target_id=artefact.id, item_id=artefact.item_id, preview=True)
    return render_template("web/preview.html", artefact=artefact, preview=preview,
                           item=db.session.get(WorkItem, artefact.item_id))


# ---------------------------------------------------------------- items

@bp.get("/items")
def items() -> Any:
    user = me()
    args = {k: (request.args.get(k) or None) for k in ("department", "service_line", "status", "stage", "q")}
    if args["status"] not in (None, "active", "completed", "cancelled"):
        args["status"] = None
    if args["q"]:
        args["q"] = args["q"][:100]
    query = filtered_items(user, args)
    total = _count(query)
    pages = max(1, math.ceil(total / PER_PAGE))
    page = min(_page(), pages)
    rows = list(db.session.scalars(query.order_by(WorkItem.id.desc()).offset((page - 1) * PER_PAGE)
                                   .limit(PER_PAGE)))
    lines = db.session.execute(select(ServiceLine.code, ServiceLine.name).distinct()
                               .order_by(ServiceLine.code)).all()
    return render_template("web/items.html", items=rows, args=args, total=total, page=page, pages=pages,
                           department_options=_visible_departments(user), line_options=lines, stages=STAGES)


def _diagram(item: WorkItem, tasks: list[dict[str, Any]]) -> Markup | None:
    instance = db.session.execute(select(ProcessInstance).where(ProcessInstance.item_id == item.id)).scalar()
    if instance is None:
        return None
    states = {t["name"]: "done" for t in tasks if t["status"] == "completed"}
    states.update({t["name"]: "current" for t in tasks if t["status"] == "ready"})
    try:
        svg = render_svg(instance.definition.bpmn_xml, instance.definition.process_id, states)
    except Exception:  # a drawing problem must not take the item page down with it
        log.exception("diagram failed", extra={"item": item.id})
        return None
    # The SVG is built by ElementTree from the stored model, so its text is already escaped.
    return Markup(svg)  # noqa: S704


@bp.get("/items/<int:item_id>")
def item(item_id: int) -> Any:
    user = me()
    item = load_item_for(db.session, user, item_id)
    detail = item_detail_json(item_detail(db.session, item, user))
    titles = {t["name"]: t["title"] for t in detail["tasks"]}
    versions = _versions(item.id)
    artefacts = [{**a, "version": versions.get(a["id"], 1)} for a in detail["artefacts"]]
    artefacts.sort(key=lambda a: (a["kind"], a["department"] or "", -a["version"]))
    departments = {d.code: d.name for d in _departments().values()}
    open_tasks = [t for t in detail["tasks"] if t["status"] == "ready"]
    pm_actions = None
    if may(user, "item.cancel") and item.status == "active":
        # What the PM may do here: rework to a completed step (latest first, once each), reassign open tasks,
        # adjust the proposed difficulty until the third party has confirmed it.
        done_steps: dict[str, str] = {}
        for t in reversed(detail["tasks"]):
            if t["status"] == "completed" and t["name"] not in done_steps and reworkable(t["form_key"]) \
                    and not item.contract_level:
                done_steps[t["name"]] = t["title"]
        rows = list(db.session.scalars(select(HumanTask).where(HumanTask.item_id == item.id,
                                                              HumanTask.status == "ready").order_by(HumanTask.id)))
        pm_actions = {
            "rework_to": done_steps,
            "colleagues": _colleagues(rows, user) if rows else {},
            "difficulty_open": difficulty_adjustable(db.session, item),
        }
    from engine.trust.policy import RULES
    from engine.usecases.service_orders import order_of_item

    # The request the item came from (运营服务单): who asked and with which letter; linked for roles that read orders.
    source_order = order_of_item(db.session, item.id) if (item.attributes or {}).get("service_order") else None
    # The timeline names people as they are known (张伟), and leaves out claims and downloads unless asked.
    everything = request.args.get("all") == "1"
    history = [e for e in reversed(detail["history"]) if everything or e["event"] not in QUIET_EVENTS]
    # A notification's record names its task by id; the timeline names steps (detail.task) by their step name.
    step_names = {t["id"]: t["name"] for t in detail["tasks"]}
    history = [{**e, "detail": {**e["detail"], "task": step_names.get(e["detail"]["task"])}}
               if e["event"].startswith("notification.") and isinstance((e["detail"] or {}).get("task"), int) else e
               for e in history]
    usernames = {e["user"] for e in history if e["user"]} | {(e["detail"] or {}).get("to") for e in history} \
        | {a["uploaded_by"] for a in artefacts}
    usernames.discard(None)
    names = {u.username: (u.display_name or u.username) for u in db.session.scalars(
        select(User).where(User.username.in_(usernames)))} if usernames else {}
    return render_template(
        "web/item.html", item=item, detail=detail, titles=titles, artefacts=artefacts, open_tasks=open_tasks,
        report=_report_of(item),
        source_order=source_order, may_read_orders=RULES["service_order.read"].allows(user.role),
        history=history, names=names, everything=everything, quiet=len(detail["history"]) - len(history),
        records=step_records(db.session, user, item.id), diagram=_diagram(item, detail["tasks"]),
        departments=departments, previewable=PREVIEWABLE, previewable_documents=PREVIEWABLE_DOCUMENTS, me=user,
        pm_actions=pm_actions)


# ---------------------------------------------------------------- dashboard

@bp.get("/dashboard")
def dashboard() -> Any:
    user = me()
    authorize(user, "workload.read")
    now = datetime.now(UTC)
    dash = build_dashboard(db.session, user, now)
    departments = _departments()
    from engine.usecases.clocks import running_clocks

    # Every contract clock (settlement materials and revisions, monthly reports, rectifications), due first.
    clocks = running_clocks(db.session, now) if may(user, "settlement.read") else []
    from engine.money.reports import WorkloadFilter, progress

    # Progress toward every countable target of every contract (done / target / percent / on track).
    targets = [p for p in progress(db.session, WorkloadFilter()) if p["measure"].startswith("target:")]
    return render_template("web/dashboard.html", dash=dash, now=now, departments=departments, stages=STAGES,
                           clocks=clocks, targets=targets)

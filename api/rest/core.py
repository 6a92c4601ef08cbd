"""REST API v1, the core contract (API.md): auth, users, catalogue, items, tasks, artefacts."""
from __future__ import annotations

from decimal import Decimal
from typing import Any

from flask import Response, after_this_request, current_app, g, request
from flask_smorest import Blueprint
from marshmallow import Schema, fields, validate
from sqlalchemy import func, select

import forms
from api.auth import (
    Unauthorized,
    authenticate,
    check_password,
    current_user,
    hash_password,
    issue_token,
    revoke_bearer,
)
from api.downloads import artefact_response
from api.extensions import db
from api.limits import remember_device
from api.serializers import artefact_json, iso, item_detail_json, item_summary, task_json, task_rows_json
from engine.contract.catalog import ARTEFACT_KINDS, kind_title
from engine.errors import Conflict, DomainError, Invalid
from engine.evidence.artefacts import optional_kinds, submitted_evidence, upload_artefact
from engine.trust import accounts, audit
from engine.trust.access import (
    artefact_scope,
    authorize,
    load_artefact_for,
    load_item_for,
    load_task_for,
)
from engine.trust.policy import ROLES
from engine.usecases import lists
from engine.usecases.admin import change_user_by_name
from engine.usecases.inbox import settlement_steps
from engine.usecases.items import item_detail
from engine.usecases.tasks import (
    Ctx,
    NewItem,
    claim,
    complete_task,
    create_item,
    hand_over,
    line_kind,
    task_requirements,
    unclaim,
)
from storage.models import Artefact, Contract, HumanTask, User, WorkItem
from storage.unit_of_work import unit_of_work

blp = Blueprint("core", __name__, url_prefix="/api/v1", description="ItemGate core API")

MAX_PER_PAGE = 200


def ctx() -> Ctx:
    """The unit of work's context for an API request: the caller, the request id, the evidence store and the
    configured Chinese font (a monthly report's submission keeps a PDF)."""
    return Ctx(session=db.session, user=current_user(), request_id=g.get("request_id"),
               store=current_app.extensions.get("itemgate_store"), cjk_font=current_app.config["ITEMGATE"].cjk_font)


class PageArgs(Schema):
    page = fields.Integer(load_default=1, validate=validate.Range(min=1, max=1_000_000))
    per_page = fields.Integer(load_default=50, validate=validate.Range(min=1, max=MAX_PER_PAGE))


# ---------------------------------------------------------------- auth and users

class TokenRequest(Schema):
    username = fields.String(required=True, validate=validate.Length(min=1, max=64))
    password = fields.String(required=True, validate=validate.Length(min=1, max=256))


class TokenResponse(Schema):
    token = fields.String()
    expires_at = fields.String()


@blp.route("/auth/token", methods=["POST"])
@blp.arguments(TokenRequest)
@blp.response(200, TokenResponse)
def token(body: dict[str, Any]) -> dict[str, Any]:
    from api.limits import check_login_allowed, record_login_failure

    try:
        check_login_allowed(body["username"])
    except DomainError:
        with unit_of_work(db.session):
            audit.record(db.session, audit.Actor(None, body["username"][:64], None, g.get("request_id")),
                         "auth.token", outcome="rate_limited")
        raise
    user = authenticate(body["username"], body["password"])
    if user is None:
        with unit_of_work(db.session):
            record_login_failure(body["username"])
            audit.record(db.session, audit.Actor(None, body["username"][:64], None, g.get("request_id")),
                         "auth.token", outcome="failure")
        raise Unauthorized("wrong username or password", code="bad_credentials")
    with unit_of_work(db.session):
        value, expires = issue_token(user)
        audit.record(db.session, audit.Actor.of(user, g.get("request_id")), "auth.token", target_type="user",
                     target_id=user.id)
    username = user.username

    @after_this_request
    def _device(response: Response) -> Response:
        return remember_device(response, username)  # type: ignore[no-any-return]

    return {"token": value, "expires_at": iso(expires)}


@blp.route("/auth/logout", methods=["POST"])
@blp.response(204)
def logout() -> None:
    """End the token this request carries; it answers 401 from now on."""
    with unit_of_work(db.session):
        user = current_user()
        revoke_bearer()
        audit.record(db.session, audit.Actor.of(user, g.get("request_id")), "auth.logout", target_type="user",
                     target_id=user.id, via="token")


class PasswordChange(Schema):
    current_password = fields.String(required=True, validate=validate.Length(min=1, max=256))
    new_password = fields.String(required=True, validate=validate.Length(min=8, max=256))


@blp.route("/me/password", methods=["POST"])
@blp.arguments(PasswordChange)
@blp.response(204)
def me_password(body: dict[str, Any]) -> None:
    """Change one's own password: every token and web session of the user ends, this request's token too."""
    from api.limits import check_login_allowed, record_login_failure

    user = current_user()
    actor = audit.Actor.of(user, g.get("request_id"))
    # Guessing the current password with a stolen token is limited like guessing it at the login.
    try:
        check_login_allowed(user.username)
    except DomainError:
        with unit_of_work(db.session):
            audit.record(db.session, actor, "user.password_changed", target_type="user", target_id=user.id,
                         outcome="rate_limited")
        raise
    if not check_password(user, body["current_password"]):
        with unit_of_work(db.session):
            record_login_failure(user.username)
            audit.record(db.session, actor, "user.password_changed", target_type="user", target_id=user.id,
                         outcome="failure")
        raise Invalid("the current password is wrong", code="wrong_password",
                      errors={"current_password": ["wrong password"]})
    with unit_of_work(db.session):
        if body["new_password"] == body["current_password"]:
            raise Invalid("the new password must differ from the current one", code="invalid_form",
                          errors={"new_password": ["must differ from the current password"]})
        accounts.change_own_password(db.session, actor, user, hash_password(body["new_password"]))


class NewUser(Schema):
    username = fields.String(required=True, validate=validate.Regexp(r"^[A-Za-z0-9_.\-]{2,64}$"))
    password = fields.String(required=True, validate=validate.Length(min=8, max=256))
    role = fields.String(required=True, validate=validate.OneOf(ROLES))
    department = fields.String(load_default=None, validate=validate.Length(min=1, max=64))
    display_name = fields.String(load_default=None, validate=validate.Length(max=100))


def user_json(user: User) -> dict[str, Any]:
    return {"id": user.id, "username": user.username, "role": user.role, "department": user.department_code,
            "display_name": user.display_name, "active": user.active}


@blp.route("/users", methods=["POST"])
@blp.arguments(NewUser)
@blp.response(201)
def users_create(body: dict[str, Any]) -> dict[str, Any]:
    with unit_of_work(db.session):
        me = current_user()
        authorize(me, "user.manage")
        user = accounts.create_user(db.session, body["username"], hash_password(body["password"]), body["role"],
                                        body["department"],
                           body.get("display_name"))
        audit.record(db.session, audit.Actor.of(me, g.get("request_id")), "user.created", target_type="user",
                     target_id=user.id, username=user.username, role=user.role)
    return user_json(user)


class UserPatch(Schema):
    active = fields.Boolean(truthy={True}, falsy={False})
    password = fields.String(validate=validate.Length(min=8, max=256))
    role = fields.String(validate=validate.OneOf(ROLES))
    department = fields.String(allow_none=True, validate=validate.Length(min=1, max=64))


@blp.route("/users/<string:username>", methods=["PATCH"])
@blp.arguments(UserPatch)
@blp.response(200)
def users_patch(body: dict[str, Any], username: str) -> dict[str, Any]:
    """Change a user's active flag, password, role or department. Deactivating or a new password ends the
    user's tokens and web sessions at once; deactivating returns their claimed tasks to the group queue."""
    with unit_of_work(db.session):
        me = current_user()
        authorize(me, "user.manage")
        result = change_user_by_name(db.session, audit.Actor.of(me, g.get("request_id")), username, body,
                                     hash_password(body["password"]) if "password" in body else None)
    return dict(user_json(result.user), tasks_released=result.released)


@blp.route("/me", methods=["GET"])
@blp.response(200)
def me() -> dict[str, Any]:
    return user_json(current_user())


# ---------------------------------------------------------------- catalogue

@blp.route("/catalog", methods=["GET"])
@blp.response(200)
def catalog() -> dict[str, Any]:
    current_user()
    contracts = db.session.scalars(select(Contract).order_by(Contract.code))
    return {"contracts": [{
        "code": c.code, "name": c.name, "buyer": c.buyer, "supplier": c.supplier,
        "period_start": c.period_start.isoformat() if c.period_start else None,
        "period_end": c.period_end.isoformat() if c.period_end else None,
        "award_amount": float(c.award_amount) if c.award_amount is not None else None,
        "settings": {k: v for k, v in (c.settings or {}).items() if k in ("pricing", "out_of_period",
                                                                            "price_basis")},
        "artefact_kinds": {code: dict(spec) for code, spec in ((c.settings or {}).get("artefact_kinds") or {}).items()},
        "service_lines": [{
            "code": sl.code, "name": sl.name, "unit": {"code": sl.unit_code or sl.unit, "name": sl.unit},
            "metered": bool(sl.metered), "kind": line_kind(sl), "channels": sl.channels, "process": sl.process_id,
            "unit_prices": {ch: float(Decimal(p)) for ch, p in sl.unit_prices.items()},
            "estimated_volumes": sl.estimated_volumes, "targets": sl.targets,
            "difficulty_levels": [{"value": float(Decimal(lv["value"])), "meaning": lv.get("meaning", "")}
                                  for lv in (sl.difficulty_levels or [])],
            "gates": {gate: [{"kind": r["kind"], "title": kind_title(r["kind"], c.settings), "when": r.get("when", {}),
                              **({"optional": True} if r.get("optional") else {})}
                             for r in rules] for gate, rules in sl.gates.items()},
        } for sl in c.service_lines],
    } for c in contracts], "artefact_kinds": ARTEFACT_KINDS}


# ---------------------------------------------------------------- items

class NewItemSchema(Schema):
    contract = fields.String(required=True, validate=validate.Length(min=1, max=64))
    service_line = fields.String(required=True, validate=validate.Length(min=1, max=32))
    name = fields.String(required=True, validate=validate.Length(min=1, max=300))
    code = fields.String(required=True, validate=validate.Length(min=1, max=100))
    department = fields.String(required=True, validate=validate.Length(min=1, max=64))
    # Required for lines priced per channel; left out for a line priced without channels and a metered record.
    channels = fields.List(fields.String(validate=validate.OneOf(["pc", "mobile", "kiosk"])), load_default=list,
                           validate=validate.Length(max=3))
    # Required for countable work; a metered record and a deliverable have their own.
    mode = fields.String(load_default=None, validate=validate.OneOf(["new", "iteration"]))
    difficulty = fields.Decimal(load_default=Decimal("1.0"), validate=validate.Range(min=0.1, max=5),
                                places=2, allow_nan=False)
    attributes = fields.Dict(keys=fields.String(validate=validate.Length(max=64)), load_default=dict)
    # A metered line's record: units (calls, SMS, person-months…) in a period (a month, "2026-11").
    units = fields.Decimal(load_default=None, allow_nan=False, validate=validate.Range(min=0, min_inclusive=False))
    period = fields.String(load_default=None, validate=validate.Regexp(r"^[0-9]{4}-[0-9]{2}$"))


@blp.route("/items", methods=["POST"])
@blp.arguments(NewItemSchema)
@blp.response(201)
def items_create(body: dict[str, Any]) -> dict[str, Any]:
    with unit_of_work(db.session):
        context = ctx()
        item = create_item(context, NewItem(**body))
        events = audit.queued(db.session)
    # A new item has no artefacts yet, and its tasks and history are what this request wrote.
    assert context.user is not None
    return item_detail_json(item_detail(db.session, item, context.user, tasks=context.created_tasks, artefacts=[],
                                        events=events))


class ItemQuery(PageArgs):
    department = fields.String(load_default=None)
    service_line = fields.String(load_default=None)
    status = fields.String(load_default=None, validate=validate.OneOf(["active", "completed", "cancelled"]))
    contract = fields.String(load_default=None)
    stage = fields.String(load_default=None)
    q = fields.String(load_default=None, validate=validate.Length(max=100))


@blp.route("/items", methods=["GET"])
@blp.arguments(ItemQuery, location="query")
@blp.response(200)
def items_list(args: dict[str, Any]) -> dict[str, Any]:
    user = current_user()
    query = lists.filtered_items(user, args)
    total = db.session.execute(select(func.count()).select_from(query.subquery())).scalar_one()
    rows = db.session.scalars(query.order_by(WorkItem.id.desc())
                              .offset((args["page"] - 1) * args["per_page"]).limit(args["per_page"]))
    return {"items": [item_summary(i) for i in rows], "total": total, "page": args["page"],
            "per_page": args["per_page"]}


@blp.route("/items/<int:item_id>", methods=["GET"])
@blp.response(200)
def items_get(item_id: int) -> dict[str, Any]:
    user = current_user()
    item = load_item_for(db.session, user, item_id)
    return item_detail_json(item_detail(db.session, item, user))


# ---------------------------------------------------------------- tasks

class TaskQuery(PageArgs):
    scope = fields.String(load_default="group", validate=validate.OneOf(["mine", "group", "all"]))
    item_id = fields.Integer(load_default=None, validate=validate.Range(min=1, max=2**31 - 1))


@blp.route("/tasks", methods=["GET"])
@blp.arguments(TaskQuery, location="query")
@blp.response(200)
def tasks_list(args: dict[str, Any]) -> dict[str, Any]:
    user = current_user()
    where = lists.task_query(user, args["scope"]).whereclause
    assert where is not None  # every scope is open tasks at least
    if args.get("item_id"):
        where = where & (HumanTask.item_id == args["item_id"])
    total = db.session.execute(select(func.count()).select_from(HumanTask).where(where)).scalar_one()
    tasks = task_rows_json(db.session, where, (HumanTask.created_at, HumanTask.id),
                           (args["page"] - 1) * args["per_page"], args["per_page"])
    # Settlement steps are not item tasks; they wait for a role (engine/usecases/inbox.py) and come with the queues.
    steps = [] if args["scope"] == "mine" else [
        {"settlement_id": s.settlement_id, "label": s.label, "contract": s.contract, "step": s.step,
         "title": s.title, "round": s.round, "waiting_since": iso(s.waiting_since), "due_at": iso(s.due_at)}
        for s in settlement_steps(db.session, user)]
    return {"tasks": tasks, "total": total, "settlement_steps": steps}


def task_detail(task: HumanTask) -> dict[str, Any]:
    data = task_json(task)
    data["form"] = forms.json_schema(task.form)
    data["required_artefacts"] = [
        {"kind": s.kind, "title": kind_title(s.kind, task.item.contract.settings), "present": s.artefact is not None,
         "artefact_id": s.artefact.id if s.artefact else None}
        for s in task_requirements(db.session, task)]
    optional = optional_kinds(task)
    if optional:
        # Working documents the step may take (e.g. the survey form in Shanghai) without requiring them.
        data["optional_artefacts"] = [{"kind": k, "title": kind_title(k, task.item.contract.settings)}
                                      for k in optional]
    if task.review_of:
        # The versions the submission passed its gate with, not whatever was uploaded since.
        data["artefacts_to_review"] = [artefact_json(a) for a in submitted_evidence(db.session, task)]
    data["data"] = task.data
    return data


@blp.route("/tasks/<int:task_id>", methods=["GET"])
@blp.response(200)
def tasks_get(task_id: int) -> dict[str, Any]:
    task = load_task_for(db.session, current_user(), task_id)
    return task_detail(task)


@blp.route("/tasks/<int:task_id>/claim", methods=["POST"])
@blp.response(200)
def tasks_claim(task_id: int) -> dict[str, Any]:
    with unit_of_work(db.session):
        task = claim(ctx(), task_id)
    return task_json(task)


@blp.route("/tasks/<int:task_id>/unclaim", methods=["POST"])
@blp.response(200)
def tasks_unclaim(task_id: int) -> dict[str, Any]:
    with unit_of_work(db.session):
        task = unclaim(ctx(), task_id)
    return task_json(task)


class HandOver(Schema):
    to = fields.String(required=True, validate=validate.Length(min=1, max=64))


@blp.route("/tasks/<int:task_id>/handover", methods=["POST"])
@blp.arguments(HandOver)
@blp.response(200)
def tasks_handover(body: dict[str, Any], task_id: int) -> dict[str, Any]:
    with unit_of_work(db.session):
        task = hand_over(ctx(), task_id, body["to"])
    return task_json(task)


class CompleteBody(Schema):
    data = fields.Dict(load_default=dict)


@blp.route("/tasks/<int:task_id>/complete", methods=["POST"])
@blp.arguments(CompleteBody)
@blp.response(200)
def tasks_complete(body: dict[str, Any], task_id: int) -> dict[str, Any]:
    with unit_of_work(db.session):
        context = ctx()
        task = complete_task(context, task_id, body["data"])
    result = task_json(task)
    result["item"] = item_summary(task.item)
    open_tasks = (HumanTask.item_id == task.item_id) & (HumanTask.status == "ready")
    result["next_tasks"] = task_rows_json(db.session, open_tasks, (HumanTask.id,), 0, None)
    return result


# ---------------------------------------------------------------- artefacts


def _upload_streamed(context: Ctx, item: WorkItem, boundary: bytes) -> Artefact:
    """An upload whose multipart body nothing has read yet: parsed as it arrives, its file stored as it arrives
    (engine.evidence.artefacts.StreamedUpload), so receiving and storing overlap. Anything but success leaves no object,
    no stray parts and no row: an unknown kind (422), a refused type (415), too large (413), the store failing
    (503), the client going away (400) or the body being malformed (422, as an unparsable form is today)."""
    from api.uploads import receive_artefact_form
    from engine.evidence.artefacts import StreamedUpload

    assert context.user is not None and context.store is not None
    upload = StreamedUpload(context.store, item, current_app.config["ITEMGATE"].max_upload_bytes)
    try:
        try:
            form = receive_artefact_form(request, boundary, upload)
        except ValueError as exc:
            raise Invalid("the multipart body is malformed or incomplete", code="invalid_form",
                          errors={"file": ["required"]}) from exc
        if not upload.has_file:
            raise Invalid("send the file as multipart field 'file'", code="invalid_form",
                          errors={"file": ["required"]})
        return upload.finish(db.session, context.actor, context.user, item, form.get("kind", ""),
                             form.get("task_id"), form.get("verification_code"))
    except BaseException:
        upload.abort()
        raise


@blp.route("/items/<int:item_id>/artefacts", methods=["POST"])
@blp.response(201)
def artefacts_upload(item_id: int) -> dict[str, Any]:
    """Upload one artefact: multipart fields `kind`, `file` and `task_id` (the open task of this item the file is
    for; needed when open tasks of several departments take the kind). Refused with 409 `under_review` while a
    review judges the submitted version of that kind. A signed sign-off sheet (docs/SHEETS.md) must carry this
    item's code for its kind: field `verification_code`, the PDF's text or the scan's QR code; another sheet's → 422
    `wrong_sheet`."""
    from api.uploads import file_stream, record_upload, stream_length, unread_multipart_boundary

    context = ctx()
    assert context.user is not None
    item = load_item_for(db.session, context.user, item_id, "artefact.upload")
    # Checked before the body is read: nothing is sent to the store for an item that takes no evidence.
    if item.status != "active":
        raise Conflict(f"item {item.id} is {item.status}; its evidence is closed", code="item_not_active")
    store = context.store
    if store is None:
        from engine.errors import ServiceUnavailable

        raise ServiceUnavailable("no evidence store is configured")
    boundary = unread_multipart_boundary(request)

    def upload() -> Artefact:
        assert context.user is not None and store is not None
        if boundary is not None:
            return _upload_streamed(context, item, boundary)
        # The form was read already (or is not multipart): werkzeug spooled the file, which is stored now.
        upload = request.files.get("file")
        if upload is None:
            raise Invalid("send the file as multipart field 'file'", code="invalid_form",
                          errors={"file": ["required"]})
        return upload_artefact(db.session, store, context.actor, context.user, item, request.form.get("kind", ""),
                               upload.filename, file_stream(upload), stream_length(upload.stream),
                               current_app.config["ITEMGATE"].max_upload_bytes, request.form.get("task_id"),
                               request.form.get("verification_code"))

    return artefact_json(record_upload(db.session, store, upload))


@blp.route("/items/<int:item_id>/artefacts", methods=["GET"])
@blp.response(200)
def artefacts_list(item_id: int) -> dict[str, Any]:
    user = current_user()
    item = load_item_for(db.session, user, item_id, "artefact.read")
    rows = db.session.scalars(select(Artefact).where(Artefact.item_id == item.id, artefact_scope(user))
                              .order_by(Artefact.id))
    return {"artefacts": [artefact_json(a) for a in rows]}


@blp.route("/items/<int:item_id>/sheets/<string:kind>.pdf", methods=["GET"])
def items_sheet(item_id: int, kind: str) -> Response:
    """The item's sign-off sheet of artefact kind `kind` (e.g. `go_live_confirmation`) as a PDF to print and sign:
    pre-filled with the item, the evidence its gates accepted (file names, SHA-256) and the signature blocks, with a
    verification code and QR code unique to the item and kind. 404 `no_such_sheet` for a kind the item's gates do
    not require as a sheet. docs/SHEETS.md."""
    from api.downloads import sheet_response

    context = ctx()
    assert context.user is not None
    item = load_item_for(db.session, context.user, item_id, "item.read")
    return sheet_response(context.actor, context.user, item, kind)


@blp.route("/artefacts/<int:artefact_id>/content", methods=["GET"])
def artefacts_content(artefact_id: int) -> Response:
    user = current_user()
    artefact = load_artefact_for(db.session, user, artefact_id)
    inline = request.args.get("inline") == "1" and artefact.media_type in ("application/pdf", "image/png",
                                                                          "image/jpeg")
    response = artefact_response(artefact, user, current_app.extensions.get("itemgate_store"), inline)
    response.headers["Digest"] = f"sha-256={artefact.sha256}"
    return response

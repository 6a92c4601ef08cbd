"""REST API v1 for running the work: cancel/rework, bulk intake, notifications, calendar, process versions."""
from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from flask import g, request
from flask_smorest import Blueprint
from marshmallow import Schema, fields, validate
from sqlalchemy import func, select

from api.auth import current_user
from api.extensions import db
from api.rest.core import PageArgs, ctx
from api.serializers import iso, item_detail_json
from api.uploads import file_stream
from engine.contract.holidays import enter_year, year_view
from engine.errors import Invalid
from engine.trust import audit, notify
from engine.usecases.intake import import_items
from engine.usecases.items import item_detail
from engine.usecases.lifecycle import adjust_difficulty, cancel_item, rework_item
from engine.usecases.processes import MAX_MODEL_BYTES, deploy
from storage.models import Notification, ProcessDefinition, ProcessInstance
from storage.unit_of_work import unit_of_work

blp = Blueprint("operations", __name__, url_prefix="/api/v1", description="Cancel, rework, intake, deadlines")


# ---------------------------------------------------------------- cancel and rework

class CancelBody(Schema):
    reason = fields.String(required=True, validate=validate.Length(min=2, max=2000))


class ReworkBody(Schema):
    to = fields.String(required=True, validate=validate.Length(min=1, max=100))
    reason = fields.String(required=True, validate=validate.Length(min=2, max=2000))


@blp.route("/items/<int:item_id>/cancel", methods=["POST"])
@blp.arguments(CancelBody)
@blp.response(200)
def items_cancel(body: dict[str, Any], item_id: int) -> dict[str, Any]:
    with unit_of_work(db.session):
        context = ctx()
        item = cancel_item(context, item_id, body["reason"])
    assert context.user is not None
    return item_detail_json(item_detail(db.session, item, context.user))


@blp.route("/items/<int:item_id>/rework", methods=["POST"])
@blp.arguments(ReworkBody)
@blp.response(200)
def items_rework(body: dict[str, Any], item_id: int) -> dict[str, Any]:
    with unit_of_work(db.session):
        context = ctx()
        item = rework_item(context, item_id, body["to"], body["reason"])
    assert context.user is not None
    return item_detail_json(item_detail(db.session, item, context.user))


class DifficultyBody(Schema):
    difficulty = fields.String(required=True, validate=validate.Length(min=1, max=20))
    note = fields.String(required=True, validate=validate.Length(min=2, max=2000))


@blp.route("/items/<int:item_id>/difficulty", methods=["POST"])
@blp.arguments(DifficultyBody)
@blp.response(200)
def items_difficulty(body: dict[str, Any], item_id: int) -> dict[str, Any]:
    """The PM adjusts the proposed difficulty (with a note) until the third party has confirmed it; after that
    409 `difficulty_confirmed`."""
    with unit_of_work(db.session):
        context = ctx()
        item = adjust_difficulty(context, item_id, body["difficulty"], body["note"])
    assert context.user is not None
    return item_detail_json(item_detail(db.session, item, context.user))


# ---------------------------------------------------------------- bulk intake

class ImportArgs(Schema):
    contract = fields.String(required=True, validate=validate.Length(min=1, max=64))
    dry_run = fields.Boolean(load_default=False)


@blp.route("/items/import", methods=["POST"])
@blp.arguments(ImportArgs, location="query")
@blp.response(200)
def items_import(args: dict[str, Any]) -> dict[str, Any]:
    upload = request.files.get("file")
    if upload is None:
        raise Invalid("send the spreadsheet as multipart field 'file'", code="invalid_form",
                      errors={"file": ["required"]})
    with unit_of_work(db.session, dry_run=args["dry_run"]):
        report = import_items(ctx(), args["contract"], file_stream(upload), upload.filename or "items.csv",
                              dry_run=args["dry_run"])
    return report.as_dict()


# ---------------------------------------------------------------- notifications

class NotificationQuery(PageArgs):
    unread = fields.Boolean(load_default=False)


def reader_language() -> str:
    """The language the caller reads: the best of zh and en its Accept-Language names, Chinese by default."""
    return request.accept_languages.best_match(notify.LANGUAGES, default="zh") or "zh"


def notification_json(note: Notification, language: str = "zh") -> dict[str, Any]:
    """A notification as its reader sees it: `message` in the reader's language (rows written before message keys
    keep their Chinese text), with the key and params for clients that word it themselves."""
    return {"id": note.id, "kind": note.kind, "item_id": note.item_id, "task_id": note.task_id,
            "settlement_id": note.settlement_id, "user_id": note.user_id, "role": note.role,
            "message": notify.text_of(note, notify.translator(language)), "message_key": note.message_key,
            "params": note.params, "language": language, "comment": note.comment,
            "created_at": iso(note.created_at), "read": note.read_at is not None, "read_at": iso(note.read_at)}


@blp.route("/notifications", methods=["GET"])
@blp.arguments(NotificationQuery, location="query")
@blp.response(200)
def notifications_list(args: dict[str, Any]) -> dict[str, Any]:
    """The caller's own notifications, newest first, each with the caller's own `read` flag."""
    user = current_user()
    query = select(Notification).where(notify.mine(user))
    if args["unread"]:
        query = query.where(Notification.read_at.is_(None))
    total = db.session.execute(select(func.count()).select_from(query.subquery())).scalar_one()
    rows = db.session.scalars(query.order_by(Notification.id.desc())
                              .offset((args["page"] - 1) * args["per_page"]).limit(args["per_page"]))
    language = reader_language()
    return {"notifications": [notification_json(n, language) for n in rows], "total": total,
            "unread": notify.unread_count(db.session, user)}


@blp.route("/notifications/<int:note_id>/read", methods=["POST"])
@blp.response(200)
def notifications_read(note_id: int) -> dict[str, Any]:
    with unit_of_work(db.session):
        note = notify.read_mine(db.session, current_user(), note_id, datetime.now(UTC))
    db.session.refresh(note)
    return notification_json(note, reader_language())


@blp.route("/notifications/read-all", methods=["POST"])
@blp.response(200)
def notifications_read_all() -> dict[str, Any]:
    with unit_of_work(db.session):
        user = current_user()
        marked = notify.mark_read(db.session, user, None, datetime.now(UTC))
    return {"marked": marked, "unread": 0}


# ---------------------------------------------------------------- calendar (admin)

class CalendarEntry(Schema):
    date = fields.Date(required=True)
    note = fields.String(load_default=None, validate=validate.Length(max=100))


class CalendarYearBody(Schema):
    holidays = fields.List(fields.Nested(CalendarEntry), required=True, validate=validate.Length(max=366))
    workdays = fields.List(fields.Nested(CalendarEntry), load_default=list, validate=validate.Length(max=366))


@blp.route("/admin/calendar/<int:year>", methods=["POST"])
@blp.arguments(CalendarYearBody)
@blp.response(200)
def calendar_enter(body: dict[str, Any], year: int) -> dict[str, Any]:
    with unit_of_work(db.session):
        user = current_user()
        view = enter_year(db.session, audit.Actor.of(user, g.get("request_id")), user, year, body["holidays"],
                          body["workdays"])
    return view


@blp.route("/admin/calendar/<int:year>", methods=["GET"])
@blp.response(200)
def calendar_get(year: int) -> dict[str, Any]:
    from engine.trust.access import authorize

    authorize(current_user(), "catalog.manage")
    return year_view(db.session, year)


# ---------------------------------------------------------------- process versions (admin)

def definition_json(definition: ProcessDefinition) -> dict[str, Any]:
    return {"id": definition.id, "process_id": definition.process_id, "sha256": definition.sha256,
            "filename": definition.filename, "deployed_at": iso(definition.deployed_at),
            "is_current": definition.is_current}


def read_model_upload(upload: Any) -> str:
    """The uploaded BPMN as text: the size is judged on the bytes before decoding (a valid file cut at the limit
    would otherwise read as "not UTF-8")."""
    raw = upload.stream.read(MAX_MODEL_BYTES + 1)
    if len(raw) > MAX_MODEL_BYTES:
        raise Invalid(f"the BPMN file is too large: larger than {MAX_MODEL_BYTES // 1024} KiB", code="model_invalid",
                      problems=[{"element": "(document)", "problem": f"too large (over {MAX_MODEL_BYTES // 1024} KiB)",
                                 "problem_zh": f"文件过大（超过 {MAX_MODEL_BYTES // 1024} KiB）"}])
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise Invalid("the BPMN file must be UTF-8 text", code="model_invalid",
                      problems=[{"element": "(document)", "problem": "not UTF-8 text",
                                 "problem_zh": "文件不是 UTF-8 文本"}]) from exc


@blp.route("/admin/processes", methods=["POST"])
@blp.response(201)
def processes_deploy() -> Any:
    user = current_user()
    upload = request.files.get("file")
    if upload is None:
        raise Invalid("send the BPMN file as multipart field 'file'", code="invalid_form",
                      errors={"file": ["required"]})
    xml = read_model_upload(upload)
    filename = (upload.filename or "model.bpmn")[:200]
    # A refused model keeps the audit record of the refusal (the only thing written).
    with unit_of_work(db.session, commit_on=(Invalid,)):
        result = deploy(db.session, audit.Actor.of(user, g.get("request_id")), user, xml, filename)
    body = definition_json(result.definition)
    body.update(created=result.created, running_on_previous_versions=result.running_on_previous)
    return body, 201 if result.created else 200


@blp.route("/admin/processes", methods=["GET"])
@blp.response(200)
def processes_list() -> dict[str, Any]:
    from engine.trust.access import authorize

    authorize(current_user(), "process.manage")
    rows = db.session.scalars(select(ProcessDefinition).order_by(ProcessDefinition.process_id,
                                                                 ProcessDefinition.id))
    counts = running_counts()
    return {"processes": [dict(definition_json(d), running_items=counts.get(d.id, 0)) for d in rows]}


def running_counts() -> dict[int, int]:
    """How many items run on each definition."""
    rows = db.session.execute(select(ProcessInstance.definition_id, func.count())
                              .where(ProcessInstance.status == "running").group_by(ProcessInstance.definition_id))
    return {int(r[0]): int(r[1]) for r in rows}


class MigrationBody(Schema):
    items = fields.List(fields.Integer(strict=True), load_default=None, validate=validate.Length(min=1, max=10000))
    all_running = fields.Boolean(load_default=False)
    dry_run = fields.Boolean(load_default=True)


@blp.route("/admin/processes/<int:definition_id>/migrations", methods=["POST"])
@blp.arguments(MigrationBody)
@blp.response(200)
def processes_migrate(body: dict[str, Any], definition_id: int) -> dict[str, Any]:
    """Move running items of older versions to this version (`definition_id` is the target); one transaction per
    item; `dry_run` (the default) only lists per item what maps and what does not."""
    from engine.usecases.migration import migrate

    user = current_user()
    if (body["items"] is None) == (not body["all_running"]):
        raise Invalid("give either 'items' or 'all_running': true", code="invalid_form",
                      errors={"items": ["give either items or all_running"]})
    report = migrate(db.session, audit.Actor.of(user, g.get("request_id")), user, definition_id,
                     item_ids=body["items"], dry_run=body["dry_run"], commit=db.session.commit,
                     rollback=db.session.rollback)
    return report.as_dict()

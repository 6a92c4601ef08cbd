"""REST API v1 for the admin console: users and departments, channels, catalogue check/apply, calendar years,
system status and the notification outbox; plus each user's own notification channels."""
from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from flask import current_app, g, request
from flask_smorest import Blueprint
from marshmallow import Schema, fields, validate
from sqlalchemy import func, select

from api.auth import current_user
from api.extensions import db
from api.rest.core import PageArgs, user_json
from api.serializers import iso
from engine.contract.holidays import calendar_years
from engine.errors import Invalid, NotFound, PayloadTooLarge
from engine.trust import audit, delivery
from engine.trust.access import authorize
from engine.trust.policy import ROLES
from engine.usecases import admin
from storage.models import (
    Department,
    ExportJob,
    NotificationDelivery,
    ProcessInstance,
    User,
)
from storage.unit_of_work import unit_of_work

blp = Blueprint("console", __name__, url_prefix="/api/v1", description="Admin console and notification channels")

MAX_CATALOG_BYTES = 1024 * 1024


def _actor() -> audit.Actor:
    return audit.Actor.of(current_user(), g.get("request_id"))


# ---------------------------------------------------------------- users

class UserQuery(PageArgs):
    role = fields.String(load_default=None, validate=validate.OneOf(ROLES))
    department = fields.String(load_default=None, validate=validate.Length(max=64))
    active = fields.Boolean(load_default=None)
    q = fields.String(load_default=None, validate=validate.Length(max=64))


def user_query(args: dict[str, Any]) -> Any:
    query = select(User)
    if args.get("role"):
        query = query.where(User.role == args["role"])
    if args.get("department"):
        query = query.join(Department, User.department_id == Department.id).where(
            Department.code == args["department"])
    if args.get("active") is not None:
        query = query.where(User.active.is_(args["active"]))
    if args.get("q"):
        query = query.where(User.username.like(f"%{args['q']}%") | User.display_name.like(f"%{args['q']}%"))
    return query


@blp.route("/users", methods=["GET"])
@blp.arguments(UserQuery, location="query")
@blp.response(200)
def users_list(args: dict[str, Any]) -> dict[str, Any]:
    authorize(current_user(), "user.manage")
    query = user_query(args)
    total = db.session.execute(select(func.count()).select_from(query.subquery())).scalar_one()
    rows = db.session.scalars(query.order_by(User.username).offset((args["page"] - 1) * args["per_page"])
                              .limit(args["per_page"]))
    return {"users": [user_json(u) for u in rows], "total": total}


# ---------------------------------------------------------------- departments

class NewDepartment(Schema):
    code = fields.String(required=True, validate=validate.Length(min=1, max=64))
    name = fields.String(required=True, validate=validate.Length(min=1, max=200))


class DepartmentPatch(Schema):
    name = fields.String(validate=validate.Length(min=1, max=200))
    lead_reviewer = fields.String(allow_none=True, validate=validate.Length(max=64))


def departments_json() -> list[dict[str, Any]]:
    leads = {u.id: u for u in db.session.scalars(select(User).where(User.id.in_(
        select(Department.lead_reviewer_id).where(Department.lead_reviewer_id.is_not(None)))))}
    rows = db.session.scalars(select(Department).order_by(Department.code))
    return [admin.department_json(d, leads.get(d.lead_reviewer_id or 0)) for d in rows]


@blp.route("/departments", methods=["GET"])
@blp.response(200)
def departments_list() -> dict[str, Any]:
    authorize(current_user(), "department.read")
    return {"departments": departments_json()}


@blp.route("/departments", methods=["POST"])
@blp.arguments(NewDepartment)
@blp.response(201)
def departments_create(body: dict[str, Any]) -> dict[str, Any]:
    with unit_of_work(db.session):
        department = admin.create_department(db.session, _actor(), current_user(), body["code"], body["name"])
    return admin.department_json(department)


@blp.route("/departments/<string:code>", methods=["PATCH"])
@blp.arguments(DepartmentPatch)
@blp.response(200)
def departments_patch(body: dict[str, Any], code: str) -> dict[str, Any]:
    with unit_of_work(db.session):
        department = admin.change_department(db.session, _actor(), current_user(), code, name=body.get("name"),
                                             lead_reviewer=body.get("lead_reviewer"),
                                             lead_given="lead_reviewer" in body)
    lead = db.session.get(User, department.lead_reviewer_id) if department.lead_reviewer_id else None
    return admin.department_json(department, lead)


# ---------------------------------------------------------------- notification channels

class Channel(Schema):
    target = fields.String(required=True, allow_none=True, validate=validate.Length(max=500))
    enabled = fields.Boolean(load_default=True)


class Channels(Schema):
    email = fields.Nested(Channel, allow_none=True)
    webhook = fields.Nested(Channel, allow_none=True)


def _masked(channels: dict[str, dict[str, Any]], mask: bool) -> dict[str, Any]:
    return {kind: dict(value, target=delivery.mask(value["target"]) if mask else value["target"])
            for kind, value in channels.items()}


@blp.route("/me/channels", methods=["GET"])
@blp.response(200)
def me_channels() -> dict[str, Any]:
    user = current_user()
    return {"channels": admin.channels_of(db.session, "user", user.id)}


@blp.route("/me/channels", methods=["PUT"])
@blp.arguments(Channels)
@blp.response(200)
def me_channels_set(body: dict[str, Any]) -> dict[str, Any]:
    with unit_of_work(db.session):
        user = current_user()
        channels = admin.set_channels(db.session, _actor(), "user", user.id, body)
    return {"channels": channels}


def _department(code: str) -> Department:
    department = db.session.execute(select(Department).where(Department.code == code)).scalar()
    if department is None:
        raise NotFound(f"department {code} not found")
    return department


@blp.route("/departments/<string:code>/channels", methods=["GET"])
@blp.response(200)
def department_channels(code: str) -> dict[str, Any]:
    authorize(current_user(), "user.manage")
    department = _department(code)
    # A robot's key is a secret: shown shortened, even to administrators.
    return {"channels": _masked(admin.channels_of(db.session, "department", department.id), True)}


@blp.route("/departments/<string:code>/channels", methods=["PUT"])
@blp.arguments(Channels)
@blp.response(200)
def department_channels_set(body: dict[str, Any], code: str) -> dict[str, Any]:
    with unit_of_work(db.session):
        authorize(current_user(), "user.manage")
        department = _department(code)
        channels = admin.set_channels(db.session, _actor(), "department", department.id, body)
    return {"channels": _masked(channels, True)}


# ---------------------------------------------------------------- catalogues

def read_catalog_upload() -> tuple[str, str]:
    upload = request.files.get("file")
    if upload is None:
        raise Invalid("send the catalogue as multipart field 'file'", code="invalid_form",
                      errors={"file": ["required"]})
    raw = upload.stream.read(MAX_CATALOG_BYTES + 1)
    if len(raw) > MAX_CATALOG_BYTES:
        raise PayloadTooLarge("a catalogue file is at most 1 MiB")
    try:
        return raw.decode("utf-8"), (upload.filename or "catalog.toml")[:200]
    except UnicodeDecodeError as exc:
        raise Invalid("the catalogue must be UTF-8 text (TOML)", code="invalid_form",
                      errors={"file": ["not UTF-8 text"]}) from exc


@blp.route("/admin/catalogs/check", methods=["POST"])
@blp.response(200)
def catalogs_check() -> dict[str, Any]:
    """Every problem of an uploaded catalogue with its line, or the difference against the loaded version."""
    text_, filename = read_catalog_upload()
    return admin.check_catalog(db.session, current_user(), text_, filename).as_dict()


@blp.route("/admin/catalogs", methods=["POST"])
@blp.response(200)
def catalogs_apply() -> dict[str, Any]:
    """Load a catalogue; `sha256` (a form field), when sent, must be that of the previewed file."""
    with unit_of_work(db.session):
        text_, filename = read_catalog_upload()
        check, changed = admin.apply_catalog(db.session, _actor(), current_user(), text_, filename,
                                             request.form.get("sha256") or None)
    return dict(check.as_dict(), loaded=changed)


# ---------------------------------------------------------------- calendar years

@blp.route("/admin/calendar", methods=["GET"])
@blp.response(200)
def calendar_years_list() -> dict[str, Any]:
    authorize(current_user(), "catalog.manage")
    return {"years": calendar_years(db.session)}


# ---------------------------------------------------------------- system status and the outbox

def _event_json(event: Any) -> dict[str, Any] | None:
    if event is None:
        return None
    return {"at": iso(event.at), "outcome": event.outcome, "detail": event.detail, "event_id": event.id}


def latest_anchor(store: Any, now: datetime, days: int = 7) -> dict[str, Any] | None:
    """The newest audit anchor in the store: anchor keys begin with their date, so only the last few days'
    folders are listed (serve anchors every few minutes while the chain moves)."""
    from datetime import timedelta

    from engine.trust.anchors import PREFIX, read_anchor
    from storage.artefact_store import StoreUnavailable

    if store is None:
        return None
    try:
        for back in range(days):
            day = now - timedelta(days=back)
            found = [o for o in store.iter_objects(f"{PREFIX}{day:%Y/%m/%d}/") if not o.is_delete_marker]
            if found:
                newest = max(found, key=lambda o: o.key)
                anchor = read_anchor(store, newest.key, newest.version_id)
                return {"event_id": anchor.event_id, "anchored_at": anchor.anchored_at, "reason": anchor.reason,
                        "key": anchor.key}
    except (StoreUnavailable, KeyError, ValueError) as exc:
        return {"error": str(exc)}
    return None


def system_status() -> dict[str, Any]:
    """Readiness, the evidence lock, the audit chain's last verification and anchor, fsck's last result, the
    notification outbox and the background jobs."""
    from api.extensions import evidence_lock_state, readiness_checks

    app = current_app._get_current_object()  # type: ignore[attr-defined]
    checks = readiness_checks(app)
    store = app.extensions.get("itemgate_store")
    now = datetime.now(UTC)
    anchor = latest_anchor(store, now)
    jobs = dict(db.session.execute(select(ExportJob.status, func.count()).group_by(ExportJob.status)).all())
    due_timers = db.session.execute(select(func.count(ProcessInstance.id)).where(
        ProcessInstance.next_timer_at.is_not(None), ProcessInstance.next_timer_at <= now,
        ProcessInstance.status == "running")).scalar_one()
    return {
        "ready": all(v == "ok" for v in checks.values()), "checks": checks,
        "evidence_lock": evidence_lock_state(app),
        "audit": {"last_verification": _event_json(admin.last_event(db.session, "audit.verified")),
                  "last_anchor": anchor},
        "fsck": _event_json(admin.last_event(db.session, "evidence.fsck")),
        "deliveries": delivery.outbox_counts(db.session),
        "jobs": {"export_jobs": {k: int(v) for k, v in jobs.items()}, "due_timers": int(due_timers)},
        "smtp_configured": bool(app.config["ITEMGATE"].smtp_host),
    }


@blp.route("/admin/status", methods=["GET"])
@blp.response(200)
def admin_status() -> dict[str, Any]:
    authorize(current_user(), "ops.maintain")
    return system_status()


class DeliveryQuery(PageArgs):
    status = fields.String(load_default="failed", validate=validate.OneOf(
        ["pending", "sending", "sent", "failed", "all"]))


def delivery_json(row: NotificationDelivery) -> dict[str, Any]:
    return {"id": row.id, "notification_id": row.notification_id, "kind": row.kind,
            "target": delivery.mask(row.target), "title": row.title, "status": row.status,
            "attempts": row.attempts, "last_error": row.last_error, "created_at": iso(row.created_at),
            "next_attempt_at": iso(row.next_attempt_at), "sent_at": iso(row.sent_at)}


def delivery_query(status: str) -> Any:
    query = select(NotificationDelivery)
    return query if status == "all" else query.where(NotificationDelivery.status == status)


@blp.route("/admin/deliveries", methods=["GET"])
@blp.arguments(DeliveryQuery, location="query")
@blp.response(200)
def deliveries_list(args: dict[str, Any]) -> dict[str, Any]:
    authorize(current_user(), "ops.maintain")
    query = delivery_query(args["status"])
    total = db.session.execute(select(func.count()).select_from(query.subquery())).scalar_one()
    rows = db.session.scalars(query.order_by(NotificationDelivery.id.desc())
                              .offset((args["page"] - 1) * args["per_page"]).limit(args["per_page"]))
    return {"deliveries": [delivery_json(r) for r in rows], "total": total}


@blp.route("/admin/deliveries/<int:delivery_id>/retry", methods=["POST"])
@blp.response(200)
def deliveries_retry(delivery_id: int) -> dict[str, Any]:
    with unit_of_work(db.session):
        authorize(current_user(), "ops.maintain")
        if not delivery.retry(db.session, delivery_id, datetime.now(UTC)):
            raise NotFound(f"no failed delivery {delivery_id}")
        audit.record(db.session, _actor(), "notification.delivery_retried", target_type="delivery",
                     target_id=delivery_id)
    row = db.session.get(NotificationDelivery, delivery_id)
    assert row is not None
    return delivery_json(row)

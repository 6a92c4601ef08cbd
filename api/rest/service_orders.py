"""REST API v1 for service orders (运营服务单): file a request with its 需求函, list and read them, download the
letter, and the PM's acceptance into a work item or decline with a reason (docs/SERVICE_ORDERS.md)."""
from __future__ import annotations

from datetime import date
from decimal import Decimal
from typing import Any

from flask import Response, current_app, g, request
from flask_smorest import Blueprint
from marshmallow import Schema, fields, validate
from sqlalchemy import func, select

from api.auth import current_user
from api.downloads import content_disposition
from api.extensions import db
from api.rest.core import PageArgs, ctx
from api.serializers import item_detail_json
from api.uploads import file_stream, record_upload, stream_length
from engine.errors import FormInvalid, Invalid, ObjectMissing, ServiceUnavailable
from engine.trust import audit
from engine.usecases.items import item_detail
from engine.usecases.service_orders import (
    STATUSES,
    Acceptance,
    NewOrder,
    accept_order,
    decline_order,
    file_order,
    load_order_for,
    order_json,
    order_scope,
)
from storage.artefact_store import ObjectMissing as MissingInStore
from storage.artefact_store import StoreUnavailable
from storage.models import ServiceOrder, User
from storage.unit_of_work import unit_of_work

blp = Blueprint("service_orders", __name__, url_prefix="/api/v1", description="Service orders (运营服务单)")



def new_order_from(form: Any) -> NewOrder:
    """The order's fields from a multipart form (REST and web alike); shapes only, the engine checks meaning."""
    errors: dict[str, list[str]] = {}
    wanted: date | None = None
    raw = (form.get("wanted_by") or "").strip()
    if raw:
        try:
            wanted = date.fromisoformat(raw[:10])
        except ValueError:
            errors["wanted_by"] = ["Not a valid date."]
    channels = [c.strip() for c in form.getlist("channels") if c.strip()]
    if len(channels) == 1 and "," in channels[0]:
        channels = [c.strip() for c in channels[0].split(",") if c.strip()]
    spec = NewOrder(contract=(form.get("contract") or "").strip()[:64],
                    department=(form.get("department") or "").strip()[:64],
                    title=(form.get("title") or "").strip()[:1000],
                    description=(form.get("description") or "").strip()[:20_000] or None,
                    service_line=(form.get("service_line") or "").strip()[:32] or None,
                    mode=(form.get("mode") or "new").strip()[:16], channels=channels[:5], wanted_by=wanted)
    if not spec.contract:
        errors["contract"] = ["Missing data for required field."]
    if not spec.department:
        errors["department"] = ["Missing data for required field."]
    if errors:
        raise FormInvalid(errors, "The service order is not valid")
    return spec


@blp.route("/service-orders", methods=["POST"])
@blp.response(201)
def orders_create() -> dict[str, Any]:
    """File a request (multipart: `contract`, `department`, `title`, `description`, `service_line`, `mode`,
    `channels`, `wanted_by`, and the letter as `file`)."""
    context = ctx()
    upload = request.files.get("file")
    if upload is None or not upload.filename:
        raise Invalid("send the 需求函 as multipart field 'file'", code="invalid_form", errors={"file": ["required"]})
    store = context.store
    if store is None:
        raise ServiceUnavailable("no evidence store is configured")
    order = record_upload(db.session, store, lambda: file_order(
        context, store, new_order_from(request.form), upload.filename, file_stream(upload),
        stream_length(upload.stream), current_app.config["ITEMGATE"].max_upload_bytes))
    return order_json(order)


class OrderQuery(PageArgs):
    status = fields.String(load_default=None, validate=validate.OneOf(STATUSES))


@blp.route("/service-orders", methods=["GET"])
@blp.arguments(OrderQuery, location="query")
@blp.response(200)
def orders_list(args: dict[str, Any]) -> dict[str, Any]:
    user = current_user()
    query = select(ServiceOrder).where(order_scope(user))
    if args["status"]:
        query = query.where(ServiceOrder.status == args["status"])
    total = db.session.execute(select(func.count()).select_from(query.subquery())).scalar_one()
    rows = db.session.scalars(query.order_by(ServiceOrder.id.desc())
                              .offset((args["page"] - 1) * args["per_page"]).limit(args["per_page"]))
    return {"service_orders": [order_json(o) for o in rows], "total": total}


@blp.route("/service-orders/<int:order_id>", methods=["GET"])
@blp.response(200)
def orders_get(order_id: int) -> dict[str, Any]:
    return order_json(load_order_for(db.session, current_user(), order_id))


def order_file_response(order: ServiceOrder, user: User, inline: bool = False) -> Response:
    """The letter's bytes (authorised by the caller through load_order_for); the download is audited."""
    store = current_app.extensions.get("itemgate_store")
    if store is None:
        raise ServiceUnavailable("no evidence store is configured")
    try:
        stream = store.iter_content(order.key, order.version_id).prefetch()
    except MissingInStore as exc:
        raise ObjectMissing(f"the file of service order {order.id} is missing from the object store") from exc
    except StoreUnavailable as exc:
        raise ServiceUnavailable("the object store is unavailable") from exc
    response = Response(stream, mimetype=order.media_type.split(";")[0])
    response.headers["Content-Disposition"] = content_disposition(order.filename, inline)
    response.headers["Content-Length"] = str(order.size)
    response.headers["X-Content-Type-Options"] = "nosniff"
    try:
        with unit_of_work(db.session):
            audit.record(db.session, audit.Actor.of(user, g.get("request_id")), "service_order.downloaded",
                         target_type="service_order", target_id=order.id)
    except BaseException:
        response.close()
        raise
    return response


@blp.route("/service-orders/<int:order_id>/file", methods=["GET"])
def orders_file(order_id: int) -> Response:
    user = current_user()
    return order_file_response(load_order_for(db.session, user, order_id), user)


class AcceptBody(Schema):
    service_line = fields.String(required=True, validate=validate.Length(min=1, max=32))
    code = fields.String(required=True, validate=validate.Length(min=1, max=100))
    name = fields.String(load_default=None, validate=validate.Length(min=1, max=300))
    channels = fields.List(fields.String(validate=validate.OneOf(["pc", "mobile", "kiosk"])), required=True,
                           validate=validate.Length(min=1, max=3))
    mode = fields.String(load_default=None, validate=validate.OneOf(["new", "iteration"]))
    difficulty = fields.Decimal(load_default=Decimal("1.0"), validate=validate.Range(min=0.1, max=5), places=2,
                                allow_nan=False)
    attributes = fields.Dict(keys=fields.String(validate=validate.Length(max=64)), load_default=dict)


@blp.route("/service-orders/<int:order_id>/accept", methods=["POST"])
@blp.arguments(AcceptBody)
@blp.response(201)
def orders_accept(body: dict[str, Any], order_id: int) -> dict[str, Any]:
    """The PM accepts the order into a work item: its process starts with the order's letter as the item's
    需求函 (or 变更函); answers the new item."""
    with unit_of_work(db.session):
        context = ctx()
        item = accept_order(context, context.store, order_id, Acceptance(**body))
    assert context.user is not None
    return item_detail_json(item_detail(db.session, item, context.user))


class DeclineBody(Schema):
    reason = fields.String(required=True, validate=validate.Length(min=2, max=2000))


@blp.route("/service-orders/<int:order_id>/decline", methods=["POST"])
@blp.arguments(DeclineBody)
@blp.response(200)
def orders_decline(body: dict[str, Any], order_id: int) -> dict[str, Any]:
    with unit_of_work(db.session):
        order = decline_order(ctx(), order_id, body["reason"])
    return order_json(order)

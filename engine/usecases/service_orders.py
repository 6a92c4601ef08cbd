"""Service orders (运营服务单发放, seed 001 §七(三)1): a department reviewer or the buyer files a request with its
需求函; the PM accepts it into a work item, whose process starts with the letter already on file, or declines it."""
from __future__ import annotations

import io
import uuid
from dataclasses import dataclass, field
from datetime import date
from decimal import Decimal
from typing import Any, BinaryIO

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from engine import text
from engine.errors import (
    Conflict,
    FormInvalid,
    Invalid,
    NotFound,
    PayloadTooLarge,
    ServiceUnavailable,
    UnsupportedMedia,
)
from engine.evidence.artefacts import safe_filename
from engine.trust import audit
from engine.trust.access import authorize
from engine.trust.policy import DEPARTMENT
from engine.usecases.tasks import Ctx, NewItem, create_item
from storage.artefact_store import ArtefactStore, ObjectMissing, StoreUnavailable, TooLarge
from storage.models import CHANNELS, Artefact, Contract, Department, ServiceOrder, User, WorkItem
from storage.sniff import UnsupportedType, sniff

PREFIX = "service-orders/"
MODES = ("new", "iteration")
# The letter a request carries becomes this artefact of the item: a 需求函 for new work, a 变更函 for iteration.
LETTER_KIND = {"new": "requirement_letter", "iteration": "change_letter"}
STATUSES = ("submitted", "accepted", "declined")


@dataclass
class NewOrder:
    contract: str
    department: str
    title: str
    description: str | None = None
    service_line: str | None = None
    mode: str = "new"
    channels: list[str] = field(default_factory=list)
    wanted_by: date | None = None


def order_scope(user: User) -> Any:
    """Which orders the user reaches: a department reviewer its own department's, the others every one."""
    scope = authorize(user, "service_order.read")
    if scope == DEPARTMENT:
        return ServiceOrder.department_id == user.department_id
    return ServiceOrder.id.is_not(None)


def load_order_for(session: Session, user: User, order_id: int, *, lock: bool = False) -> ServiceOrder:
    """The order if the user may see it; 404 otherwise (ids leak nothing)."""
    query = select(ServiceOrder).where(ServiceOrder.id == order_id, order_scope(user))
    if lock:
        query = query.with_for_update()
    order = session.execute(query).scalar()
    if order is None:
        raise NotFound(f"service order {order_id} not found")
    return order


def _check(session: Session, user: User, spec: NewOrder) -> tuple[Contract, Department]:
    errors: dict[str, list[str]] = {}
    for name in ("contract", "department", "title", "description", "service_line"):
        value = getattr(spec, name)
        if isinstance(value, str) and text.unstorable(value):
            errors[name] = [text.WHY]
    if not spec.title.strip():
        errors["title"] = ["must not be empty"]
    elif len(spec.title) > 300:
        errors["title"] = ["at most 300 characters"]
    if spec.description and len(spec.description) > 10_000:
        errors["description"] = ["at most 10000 characters"]
    if spec.mode not in MODES:
        errors["mode"] = [f"must be one of {list(MODES)}"]
    if any(c not in CHANNELS for c in spec.channels) or len(set(spec.channels)) != len(spec.channels):
        errors["channels"] = [f"channels must be among {list(CHANNELS)}"]
    contract = session.execute(select(Contract).where(Contract.code == spec.contract)).scalar()
    if contract is None:
        errors["contract"] = [f"unknown contract {spec.contract!r}"]
    elif spec.service_line and spec.service_line not in {sl.code for sl in contract.service_lines}:
        errors["service_line"] = [f"contract {spec.contract} has no service line {spec.service_line!r}"]
    department = session.execute(select(Department).where(Department.code == spec.department)).scalar()
    if department is None:
        errors["department"] = [f"unknown department {spec.department!r}"]
    elif authorize(user, "service_order.file") == DEPARTMENT and department.id != user.department_id:
        errors["department"] = ["a department reviewer files for their own department"]
    if errors:
        raise FormInvalid(errors, "The service order is not valid")
    assert contract is not None and department is not None
    return contract, department


def file_order(ctx: Ctx, store: ArtefactStore | None, spec: NewOrder, filename: str | None, stream: BinaryIO,
               length: int, max_bytes: int) -> ServiceOrder:
    """Record a request with its letter: the file is stored first, the row only once the object exists."""
    assert ctx.user is not None
    authorize(ctx.user, "service_order.file")
    contract, department = _check(ctx.session, ctx.user, spec)
    if store is None:
        raise ServiceUnavailable("no evidence store is configured")
    if length <= 0:
        raise FormInvalid({"file": ["the 需求函 file is required"]})
    if length > max_bytes:
        raise PayloadTooLarge(f"the file is larger than {max_bytes} bytes")
    try:
        sniffed = sniff(stream, filename or "")
    except UnsupportedType as exc:
        raise UnsupportedMedia(exc.reason) from exc
    try:
        stored = store.put_stream(f"{PREFIX}{contract.code}/{uuid.uuid4().hex}", stream, length, sniffed.media_type,
                                  max_bytes)
    except TooLarge as exc:
        raise PayloadTooLarge(f"the file is larger than {max_bytes} bytes") from exc
    except StoreUnavailable as exc:
        raise ServiceUnavailable("the object store is unavailable") from exc
    try:
        order = ServiceOrder(
            contract_id=contract.id, department_id=department.id, title=spec.title.strip(),
            description=(spec.description or "").strip() or None, service_line=spec.service_line or None,
            mode=spec.mode, channels=[c for c in CHANNELS if c in spec.channels], wanted_by=spec.wanted_by,
            filename=safe_filename(filename, sniffed.extension), bucket=stored.bucket, key=stored.key,
            version_id=stored.version_id, sha256=stored.sha256, size=stored.size, media_type=sniffed.media_type,
            requested_by_id=ctx.user.id, created_at=ctx.now, status="submitted")
        order.contract, order.department, order.requested_by = contract, department, ctx.user
        ctx.session.add(order)
        ctx.session.flush()
        audit.record(ctx.session, ctx.actor, "service_order.filed", target_type="service_order", target_id=order.id,
                     title=order.title, department=department.code, sha256=stored.sha256, size=stored.size,
                     key=stored.key, version_id=stored.version_id)
    except BaseException:
        try:
            store.delete(stored.key, stored.version_id)
        except StoreUnavailable:
            pass  # unreferenced; `itemgate fsck --repair` may sweep it
        raise
    return order


def _decide(ctx: Ctx, order: ServiceOrder, **values: Any) -> None:
    """Move a submitted order on; a second decision (a race, or twice) is refused with 409."""
    done = ctx.session.execute(update(ServiceOrder).where(ServiceOrder.id == order.id,
                                                          ServiceOrder.status == "submitted")
                               .values(decided_at=ctx.now, decided_by_id=ctx.user.id if ctx.user else None,
                                       **values).execution_options(synchronize_session=False))
    if done.rowcount != 1:  # type: ignore[attr-defined]
        raise Conflict(f"service order {order.id} is already {order.status}", code="order_decided")
    ctx.session.refresh(order)


def decline_order(ctx: Ctx, order_id: int, reason: str | None) -> ServiceOrder:
    assert ctx.user is not None
    authorize(ctx.user, "service_order.decide")
    order = load_order_for(ctx.session, ctx.user, order_id)
    why = (reason or "").strip()
    if len(why) < 2 or len(why) > 2000 or text.unstorable(why):
        raise Invalid("give a reason", code="invalid_form", errors={"reason": ["required (at least 2 characters)"]})
    _decide(ctx, order, status="declined", decline_reason=why)
    audit.record(ctx.session, ctx.actor, "service_order.declined", target_type="service_order", target_id=order.id,
                 reason=why)
    return order


@dataclass
class Acceptance:
    service_line: str
    code: str
    channels: list[str]
    name: str | None = None
    mode: str | None = None
    difficulty: Decimal = Decimal("1.00")
    attributes: dict[str, Any] = field(default_factory=dict)


def accept_order(ctx: Ctx, store: ArtefactStore | None, order_id: int, spec: Acceptance) -> WorkItem:
    """Register the item the order asks for (its process starts), with the letter as the item's 需求函/变更函
    uploaded by the requester, and the order, its file and who asked kept on the item."""
    assert ctx.user is not None
    authorize(ctx.user, "service_order.decide")
    order = load_order_for(ctx.session, ctx.user, order_id)
    if order.status != "submitted":
        raise Conflict(f"service order {order.id} is already {order.status}", code="order_decided")
    if store is None:
        raise ServiceUnavailable("no evidence store is configured")
    mode = spec.mode or order.mode
    attributes = dict(spec.attributes)
    attributes["service_order"] = {"id": order.id, "title": order.title, "requested_by": order.requested_by.username,
                                   "requested_at": order.created_at.isoformat()}
    item = create_item(ctx, NewItem(
        contract=order.contract.code, service_line=spec.service_line, name=(spec.name or order.title).strip(),
        code=spec.code, department=order.department.code, channels=spec.channels, mode=mode,
        difficulty=spec.difficulty, attributes=attributes))
    _decide(ctx, order, status="accepted", item_id=item.id)
    # The item's own copy of the letter under the evidence prefix: evidence objects are per item (and held once a
    # gate passes), so the order's object is copied rather than shared.
    kind = LETTER_KIND[mode]
    try:
        data = store.read_small(order.key, order.version_id, order.size + 1)
        stored = store.put_stream(ArtefactStore.new_key(order.contract.code, item.id, kind), io.BytesIO(data),
                                  len(data), order.media_type, order.size + 1)
    except StoreUnavailable as exc:
        raise ServiceUnavailable("the object store is unavailable") from exc
    except ObjectMissing as exc:
        raise ServiceUnavailable("the order's file is missing from the store") from exc
    if stored.sha256 != order.sha256:
        raise ServiceUnavailable("the order's file does not match its recorded checksum")
    try:
        artefact = _letter_row(ctx, order, item, kind, stored)
    except BaseException:
        try:
            store.delete(stored.key, stored.version_id)
        except StoreUnavailable:
            pass  # unreferenced; `itemgate fsck --repair` sweeps it
        raise
    audit.record(ctx.session, ctx.actor, "service_order.accepted", target_type="item", target_id=item.id,
                 service_order=order.id, requested_by=order.requested_by.username, title=order.title,
                 artefact=artefact.id)
    return item


def _letter_row(ctx: Ctx, order: ServiceOrder, item: WorkItem, kind: str, stored: Any) -> Artefact:
    artefact = Artefact(item_id=item.id, kind=kind, filename=order.filename, bucket=stored.bucket, key=stored.key,
                        version_id=stored.version_id, sha256=stored.sha256, size=stored.size, etag=stored.etag,
                        media_type=order.media_type, uploaded_by_id=order.requested_by_id,
                        uploaded_at=order.created_at, task_id=None, department_id=None, status="stored")
    ctx.session.add(artefact)
    ctx.session.flush()
    audit.record(ctx.session, ctx.actor, "artefact.uploaded", target_type="artefact", target_id=artefact.id,
                 item_id=item.id, kind=kind, sha256=stored.sha256, size=stored.size, key=stored.key,
                 version_id=stored.version_id, service_order=order.id, uploaded_for=order.requested_by.username)
    return artefact


def order_of_item(session: Session, item_id: int) -> ServiceOrder | None:
    return session.execute(select(ServiceOrder).where(ServiceOrder.item_id == item_id)).scalar()


def order_json(order: ServiceOrder) -> dict[str, Any]:
    return {
        "id": order.id, "contract": order.contract.code, "department": order.department.code,
        "title": order.title, "description": order.description, "service_line": order.service_line,
        "mode": order.mode, "channels": order.channels,
        "wanted_by": order.wanted_by.isoformat() if order.wanted_by else None,
        "file": {"filename": order.filename, "size": order.size, "sha256": order.sha256,
                 "media_type": order.media_type},
        "requested_by": order.requested_by.username, "created_at": order.created_at.isoformat(),
        "status": order.status, "decided_by": order.decided_by.username if order.decided_by else None,
        "decided_at": order.decided_at.isoformat() if order.decided_at else None,
        "decline_reason": order.decline_reason, "item_id": order.item_id,
    }

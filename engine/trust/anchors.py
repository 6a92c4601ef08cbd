"""Audit anchors: the audit chain's head (event id, hash, time) written to the object store under object lock, and
the stored chain checked against every anchor, so deleting or changing any event up to the newest anchor shows."""
from __future__ import annotations

import json
import logging
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import event as sa_event
from sqlalchemy import func, select
from sqlalchemy.engine import Connection
from sqlalchemy.orm import Session

from engine.trust.audit import latest_checkpoint
from storage.artefact_store import ArtefactStore, ObjectInfo, ObjectMissing
from storage.models import AuditCheckpoint, AuditEvent

log = logging.getLogger("itemgate.audit")

PREFIX = "audit-anchors/"
FORMAT = "itemgate.audit-anchor/1"
# Anchors carry GOVERNANCE retention for the shortest time audit events are kept (ITEMGATE_AUDIT_RETENTION_DAYS
# is at least this), on top of an open-ended legal hold.
RETAIN_DAYS = 180


@dataclass(frozen=True)
class Head:
    """The newest committed event of the chain (or the prune checkpoint's last one when the table is empty)."""

    event_id: int
    hash: str
    at: datetime


@dataclass
class Anchor:
    key: str
    version_id: str | None
    event_id: int
    hash: str
    event_at: str
    anchored_at: str
    reason: str
    detail: dict[str, Any] = field(default_factory=dict)
    held: bool = False

    def ref(self) -> dict[str, Any]:
        """What a settlement or an evidence bundle records of the anchor it was made under."""
        return {"key": self.key, "version_id": self.version_id, "event_id": self.event_id, "hash": self.hash,
                "anchored_at": self.anchored_at, "reason": self.reason}


def committed_head(session: Session) -> Head | None:
    """The chain's head as committed, read on a connection of its own: an anchor never names an event of the
    caller's open transaction (which is written at its commit, and might yet roll back)."""
    bind = session.get_bind()
    engine = bind.engine if isinstance(bind, Connection) else bind
    with engine.connect() as conn:
        row = conn.execute(select(AuditEvent.id, AuditEvent.hash, AuditEvent.at)
                           .order_by(AuditEvent.id.desc()).limit(1)).first()
        if row is None:
            row = conn.execute(select(AuditCheckpoint.last_event_id, AuditCheckpoint.last_hash,
                                      AuditCheckpoint.last_at).order_by(AuditCheckpoint.id.desc()).limit(1)).first()
    if row is None:
        return None
    at = row[2] if row[2].tzinfo else row[2].replace(tzinfo=UTC)
    return Head(int(row[0]), str(row[1]), at)


def _iso(value: datetime) -> str:
    return value.astimezone(UTC).isoformat(timespec="microseconds")


def write_anchor(store: ArtefactStore, head: Head, reason: str, **detail: Any) -> Anchor:
    """Write one anchor object (legal hold + GOVERNANCE retention where the bucket has object lock)."""
    now = datetime.now(UTC)
    key = f"{PREFIX}{now:%Y/%m/%d/%H%M%S%f}-{head.event_id}-{uuid.uuid4().hex[:8]}.json"
    body = {"format": FORMAT, "event_id": head.event_id, "hash": head.hash, "event_at": _iso(head.at),
            "anchored_at": _iso(now), "reason": reason, **detail}
    data = json.dumps(body, sort_keys=True, ensure_ascii=False, separators=(",", ":"), default=str).encode()
    stored = store.put_locked(key, data, "application/json", now + timedelta(days=RETAIN_DAYS))
    anchor = _from_body(key, stored.version_id, body)
    anchor.held = store.evidence_lock() is True
    return anchor


def anchor_now(session: Session, store: ArtefactStore, reason: str, **detail: Any) -> Anchor | None:
    """Anchor the committed head now; None when the chain is empty."""
    head = committed_head(session)
    return None if head is None else write_anchor(store, head, reason, **detail)


def anchor_if_moved(session: Session, store: ArtefactStore, last_event_id: int | None) -> Anchor | None:
    """The periodic anchor: only when the head moved since `last_event_id` (an idle chain needs none)."""
    head = committed_head(session)
    if head is None or head.event_id == last_event_id:
        return None
    return write_anchor(store, head, "periodic")


# ---------------------------------------------------------------- anchoring once a transaction has committed

_AFTER_COMMIT = "itemgate_anchor_after_commit"


def anchor_after_commit(session: Session, store: ArtefactStore, reason: str, **detail: Any) -> None:
    """Anchor the head once this transaction has committed, so the anchor covers the transaction's own events
    (written at commit). Best effort: a failure is logged, and the next periodic anchor covers them."""
    session.info.setdefault(_AFTER_COMMIT, []).append((store, reason, detail))


@sa_event.listens_for(Session, "after_commit")
def _anchor_committed(session: Session) -> None:
    for store, reason, detail in session.info.pop(_AFTER_COMMIT, ()):
        try:
            anchor_now(session, store, reason, **detail)
        except Exception:  # the commit stands; the periodic anchor covers these events later
            log.warning("anchoring after commit failed", exc_info=True)


@sa_event.listens_for(Session, "after_transaction_end")
def _forget_on_rollback(session: Session, transaction: Any) -> None:
    if transaction.parent is None:
        session.info.pop(_AFTER_COMMIT, None)


# ---------------------------------------------------------------- reading and checking anchors

def _from_body(key: str, version_id: str | None, body: dict[str, Any]) -> Anchor:
    if body.get("format") != FORMAT:
        raise ValueError(f"{key} is not an audit anchor")
    known = {"format", "event_id", "hash", "event_at", "anchored_at", "reason"}
    return Anchor(key=key, version_id=version_id, event_id=int(body["event_id"]), hash=str(body["hash"]),
                  event_at=str(body["event_at"]), anchored_at=str(body["anchored_at"]), reason=str(body["reason"]),
                  detail={k: v for k, v in body.items() if k not in known})


def read_anchor(store: ArtefactStore, key: str, version_id: str | None) -> Anchor:
    """One stored anchor; ObjectMissing when missing, ValueError when it is not an anchor."""
    try:
        body = json.loads(store.read_small(key, version_id))
    except json.JSONDecodeError as exc:
        raise ValueError(f"{key} is not JSON") from exc
    if not isinstance(body, dict):
        raise ValueError(f"{key} is not an audit anchor")
    try:
        return _from_body(key, version_id, body)
    except (KeyError, TypeError) as exc:
        raise ValueError(f"{key} lacks {exc}") from exc


@dataclass
class StoredAnchors:
    anchors: list[Anchor]
    unreadable: list[str]


def stored_anchors(store: ArtefactStore) -> StoredAnchors:
    """Every version of every anchor object in the bucket (a delete marker hides none of them), read in parallel."""
    objects = [o for o in store.iter_objects(PREFIX) if not o.is_delete_marker]

    def load(obj: ObjectInfo) -> Anchor | str:
        try:
            return read_anchor(store, obj.key, obj.version_id)
        except (ObjectMissing, ValueError) as exc:
            return f"{obj.key} (version {obj.version_id}): {exc}"

    out = StoredAnchors([], [])
    for result in store.each(load, objects):
        if isinstance(result, Anchor):
            out.anchors.append(result)
        else:
            out.unreadable.append(result)
    out.anchors.sort(key=lambda a: (a.event_id, a.anchored_at, a.key))
    return out


@dataclass
class AnchorReport:
    checked: int = 0
    before_checkpoint: int = 0  # anchors of pruned events (their chain is checked by `audit verify --exports`)
    contradicted: list[tuple[Anchor, str]] = field(default_factory=list)
    latest: Anchor | None = None
    unanchored: int = 0  # events newer than the latest anchor's head

    @property
    def ok(self) -> bool:
        return not self.contradicted

    @property
    def first(self) -> tuple[Anchor, str] | None:
        return self.contradicted[0] if self.contradicted else None


def verify_against(session: Session, anchors: list[Anchor], batch: int = 500) -> AnchorReport:
    """Check the stored chain against every anchor, oldest head first: each anchored event must still exist with
    the anchored hash. Together with the chain walk (each event's hash covers its predecessor's), deleting or
    changing any event at or before the newest anchor's head contradicts at least that anchor."""
    report = AnchorReport()
    checkpoint = latest_checkpoint(session)
    floor = checkpoint.last_event_id if checkpoint is not None else 0
    wanted = sorted({a.event_id for a in anchors if a.event_id > floor})
    stored: dict[int, str] = {}
    for start in range(0, len(wanted), batch):
        chunk = wanted[start:start + batch]
        stored.update((int(event_id), str(hash_)) for event_id, hash_ in session.execute(
            select(AuditEvent.id, AuditEvent.hash).where(AuditEvent.id.in_(chunk))))
    newest = session.execute(select(func.max(AuditEvent.id))).scalar() or floor
    for anchor in anchors:
        if anchor.event_id < floor:
            report.before_checkpoint += 1
            continue
        report.checked += 1
        if checkpoint is not None and anchor.event_id == floor:
            problem = None if anchor.hash == checkpoint.last_hash else \
                "the prune checkpoint's last hash differs from the anchored one"
        elif anchor.event_id not in stored:
            problem = (f"audit event {anchor.event_id} is missing" + (
                f" (the chain now ends at event {newest})" if anchor.event_id > newest else ""))
        elif stored[anchor.event_id] != anchor.hash:
            problem = f"audit event {anchor.event_id} has a different hash than was anchored"
        else:
            problem = None
        if problem is not None:
            report.contradicted.append((anchor, problem))
        if report.latest is None or (anchor.event_id, anchor.anchored_at) > (report.latest.event_id,
                                                                             report.latest.anchored_at):
            report.latest = anchor
    if report.latest is not None:
        report.unanchored = int(session.execute(select(func.count(AuditEvent.id))
                                                .where(AuditEvent.id > report.latest.event_id)).scalar_one())
    else:
        report.unanchored = int(session.execute(select(func.count(AuditEvent.id))).scalar_one())
    return report

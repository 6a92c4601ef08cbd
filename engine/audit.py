"""Audit trail: append-only events chained by SHA-256 so tampering shows."""
from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select, text
from sqlalchemy.orm import Session

from storage.models import AuditEvent, User

GENESIS = "0" * 64
# Any constant works; all writers of the chain take the same transaction-scoped lock.
_PG_CHAIN_LOCK = 724_1931


@dataclass
class Actor:
    """Who is acting, and under which request id, for the audit record."""

    user_id: int | None
    username: str | None
    role: str | None
    request_id: str | None = None

    @classmethod
    def of(cls, user: User | None, request_id: str | None = None) -> Actor:
        if user is None:
            return cls(None, None, None, request_id)
        return cls(user.id, user.username, user.role, request_id)


SYSTEM = Actor(None, "system", "system")


def _canonical(event: AuditEvent) -> bytes:
    at = event.at.astimezone(UTC).isoformat(timespec="microseconds")
    body = {
        "at": at, "user_id": event.user_id, "username": event.username, "role": event.role,
        "event_type": event.event_type, "target_type": event.target_type, "target_id": event.target_id,
        "outcome": event.outcome, "request_id": event.request_id, "detail": event.detail,
    }
    return json.dumps(body, sort_keys=True, ensure_ascii=False, separators=(",", ":"), default=str).encode()


def event_hash(prev_hash: str, event: AuditEvent) -> str:
    return hashlib.sha256(prev_hash.encode() + b"\n" + _canonical(event)).hexdigest()


def _lock_chain(session: Session) -> None:
    # Serialises writers of the chain: on PostgreSQL an advisory lock held until commit; SQLite already
    # serialises writers, and the unique hash column catches anything that slips through.
    if session.get_bind().dialect.name == "postgresql":
        session.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _PG_CHAIN_LOCK})


def record(session: Session, actor: Actor, event_type: str, *, target_type: str | None = None,
           target_id: Any = None, outcome: str = "success", **detail: Any) -> AuditEvent:
    """Append one event to the chain (flushes; the caller's transaction commits it)."""
    _lock_chain(session)
    prev = session.execute(select(AuditEvent.hash).order_by(AuditEvent.id.desc()).limit(1)).scalar()
    event = AuditEvent(
        at=datetime.now(UTC), user_id=actor.user_id, username=actor.username, role=actor.role,
        event_type=event_type, target_type=target_type,
        target_id=None if target_id is None else str(target_id), outcome=outcome,
        request_id=actor.request_id, detail=json.loads(json.dumps(detail, default=str)),
        prev_hash=prev or GENESIS,
    )
    event.hash = event_hash(event.prev_hash, event)
    session.add(event)
    session.flush()
    return event


@dataclass
class ChainReport:
    checked: int
    first_broken_id: int | None
    reason: str | None

    @property
    def ok(self) -> bool:
        return self.first_broken_id is None


def verify_chain(events: Iterable[AuditEvent]) -> ChainReport:
    """Walk the chain in id order; name the first event whose link or content does not match."""
    prev = None
    count = 0
    for event in events:
        count += 1
        if prev is not None and event.prev_hash != prev:
            return ChainReport(count, event.id, "prev_hash does not match the previous event's hash")
        if prev is None and event.prev_hash != GENESIS and count == 1:
            # A pruned chain starts at an exported checkpoint; accept its recorded predecessor.
            pass
        if event_hash(event.prev_hash, event) != event.hash:
            return ChainReport(count, event.id, "content does not match its hash")
        prev = event.hash
    return ChainReport(count, None, None)

"""Audit trail: append-only events chained by SHA-256 so tampering shows."""
from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import event as sa_event
from sqlalchemy import select, text
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from storage.models import AuditCheckpoint, AuditEvent, User

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


def _canonical(event: Any) -> bytes:
    at = event.at.astimezone(UTC).isoformat(timespec="microseconds")
    body = {
        "at": at, "user_id": event.user_id, "username": event.username, "role": event.role,
        "event_type": event.event_type, "target_type": event.target_type, "target_id": event.target_id,
        "outcome": event.outcome, "request_id": event.request_id, "detail": event.detail,
    }
    return json.dumps(body, sort_keys=True, ensure_ascii=False, separators=(",", ":"), default=str).encode()


def event_hash(prev_hash: str, event: Any) -> str:
    return hashlib.sha256(prev_hash.encode() + b"\n" + _canonical(event)).hexdigest()


def _lock_chain(session: Session) -> None:
    # Serialises writers of the chain: on PostgreSQL an advisory lock held until commit; SQLite already
    # serialises writers, and the unique hash column catches anything that slips through.
    if session.get_bind().dialect.name == "postgresql":
        session.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _PG_CHAIN_LOCK})


_PENDING = "itemgate_audit_pending"


def record(session: Session, actor: Actor, event_type: str, *, target_type: str | None = None,
           target_id: Any = None, outcome: str = "success", **detail: Any) -> AuditEvent:
    """Queue one event for the chain; it is linked and written when the caller's transaction commits.

    Linking at commit keeps the chain lock (which serialises every writer) held for a few statements
    instead of the whole request, and writes a transaction's events together; a rolled-back transaction
    leaves none."""
    event = AuditEvent(
        at=datetime.now(UTC), user_id=actor.user_id, username=actor.username, role=actor.role,
        event_type=event_type, target_type=target_type,
        target_id=None if target_id is None else str(target_id), outcome=outcome,
        request_id=actor.request_id, detail=json.loads(json.dumps(detail, default=str)),
    )
    session.info.setdefault(_PENDING, []).append(event)
    return event


def queued(session: Session) -> list[AuditEvent]:
    """The events this transaction has recorded so far (they get their ids and hashes at commit)."""
    return list(session.info.get(_PENDING, ()))


def write_pending(session: Session) -> int:
    """Link and insert the queued events now (commit does this by itself); returns how many."""
    events = session.info.pop(_PENDING, None)
    if not events:
        return 0
    _lock_chain(session)
    prev = session.execute(select(AuditEvent.hash).order_by(AuditEvent.id.desc()).limit(1)).scalar()
    if prev is None:
        # Empty table: the chain goes on from the latest prune checkpoint, if any.
        prev = session.execute(select(AuditCheckpoint.last_hash).order_by(AuditCheckpoint.id.desc())
                               .limit(1)).scalar()
    prev = prev or GENESIS
    # Stamped under the lock, so time order and chain (id) order agree, as retention's cut-off expects.
    at = datetime.now(UTC)
    for event in events:
        event.at = max(event.at, at)
        event.prev_hash = prev
        event.hash = prev = event_hash(prev, event)
        session.add(event)
    session.flush()
    return len(events)


def _write_on_commit(session: Session) -> None:
    write_pending(session)


def _drop_on_end(session: Session, transaction: Any) -> None:
    # The outermost transaction ended without commit writing the queue (rollback, close): forget it.
    if transaction.parent is None:
        session.info.pop(_PENDING, None)


@dataclass
class ChainReport:
    checked: int
    first_broken_id: int | None
    reason: str | None

    @property
    def ok(self) -> bool:
        return self.first_broken_id is None


def verify_chain(events: Iterable[Any], start_hash: str | None = GENESIS) -> ChainReport:
    """Walk the chain in id order; name the first event whose link or content does not match.

    `start_hash` is what the first event must point at: GENESIS for a whole chain, a checkpoint's last hash
    for a pruned one, or None to accept any start (a slice of the chain)."""
    prev = start_hash
    count = 0
    for event in events:
        count += 1
        if prev is not None and event.prev_hash != prev:
            what = "the previous event's hash" if count > 1 else (
                "the genesis hash" if prev == GENESIS else "the prune checkpoint's last hash")
            return ChainReport(count, event.id, f"prev_hash does not match {what}")
        if event_hash(event.prev_hash, event) != event.hash:
            return ChainReport(count, event.id, "content does not match its hash")
        prev = event.hash
    return ChainReport(count, None, None)


# ---------------------------------------------------------------- append-only guard

class AuditTampering(RuntimeError):
    """The application tried to change or remove audit rows outside `itemgate audit prune`."""


_ALLOW_PRUNE = "itemgate_allow_audit_prune"
_AUDIT_WRITE = re.compile(r"^\s*(update|delete\s+from|truncate(\s+table)?)\s+\"?audit_events\b", re.IGNORECASE)


def allow_prune(session: Session) -> None:
    """Open the controlled way to delete audit rows for the current transaction only (prune, test cleanup).

    On PostgreSQL the trigger from migration 0004_trust checks the same transaction-local setting."""
    connection = session.connection()
    connection.info[_ALLOW_PRUNE] = True
    if connection.dialect.name == "postgresql":
        connection.execute(text("SET LOCAL itemgate.allow_prune = 'on'"))


def _refuse_audit_writes(conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
    # Every statement the application sends passes here, ORM flushes and raw SQL alike.
    match = _AUDIT_WRITE.match(statement)
    if match is None:
        return
    if match.group(1).lower().startswith("update") or not conn.info.get(_ALLOW_PRUNE):
        raise AuditTampering("audit events are append-only; only `itemgate audit prune` removes old ones")


def _close_prune_window(conn: Any) -> None:
    if conn.invalidated:
        return  # the connection is lost, and its info (the window with it) is cleared with it
    conn.info.pop(_ALLOW_PRUNE, None)


def _refuse_audit_changes(session: Session, _context: Any, _instances: Any) -> None:
    for obj in session.dirty:
        if isinstance(obj, AuditEvent) and session.is_modified(obj):
            raise AuditTampering(f"audit event {obj.id} is append-only and cannot be changed")


# ---------------------------------------------------------------- verify a database's chain

def latest_checkpoint(session: Session) -> AuditCheckpoint | None:
    return session.execute(select(AuditCheckpoint).order_by(AuditCheckpoint.id.desc()).limit(1)).scalar()


def verify_database(session: Session, batch: int = 1000) -> ChainReport:
    """Walk the stored chain from the genesis, or from the latest prune checkpoint, in id order."""
    checkpoint = latest_checkpoint(session)
    start = GENESIS if checkpoint is None else checkpoint.last_hash
    after = 0 if checkpoint is None else checkpoint.last_event_id

    table = AuditEvent.__table__

    def events() -> Iterable[Any]:
        # Plain rows, not ORM objects: a long chain must not fill the session's identity map.
        last = after
        while True:
            rows = session.execute(select(table).where(table.c.id > last).order_by(table.c.id)
                                   .limit(batch)).all()
            if not rows:
                return
            yield from rows
            last = rows[-1].id

    return verify_chain(events(), start)


# ---------------------------------------------------------------- installing the hooks (by the app factory)

def guard_engine(engine: Engine) -> None:
    """Put the append-only guard on one engine (the app's): every statement it sends is checked."""
    for name, fn in (("before_cursor_execute", _refuse_audit_writes), ("commit", _close_prune_window),
                     ("rollback", _close_prune_window)):
        if not sa_event.contains(engine, name, fn):
            sa_event.listen(engine, name, fn)


def install_session_hooks() -> None:
    """Write queued audit events at commit and refuse changes to audit rows, in every Session. Bound to the
    Session class, not to one sessionmaker: the job runner's and the CLI's own sessionmakers must write the
    trail too. Idempotent; the app factory calls it."""
    for name, fn in (("before_commit", _write_on_commit), ("after_transaction_end", _drop_on_end),
                     ("before_flush", _refuse_audit_changes)):
        if not sa_event.contains(Session, name, fn):
            sa_event.listen(Session, name, fn)

"""Audit retention: export events older than the retention period to the object store, then prune them."""
from __future__ import annotations

import hashlib
import json
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from engine.errors import DomainError
from engine.trust import audit
from storage.artefact_store import ArtefactStore
from storage.models import AuditCheckpoint, AuditEvent

MIN_RETENTION_DAYS = 180  # 等保 level 3: audit records are kept at least six months
EXPORT_PREFIX = "audit-exports/"


@dataclass
class PruneResult:
    pruned: int
    checkpoint: AuditCheckpoint | None


def _event_json(row: Any) -> str:
    body = {c: getattr(row, c) for c in ("id", "user_id", "username", "role", "event_type", "target_type",
                                         "target_id", "outcome", "request_id", "detail", "prev_hash", "hash")}
    body["at"] = row.at.astimezone(UTC).isoformat(timespec="microseconds")
    return json.dumps(body, ensure_ascii=False, sort_keys=True, default=str)


def prune(session: Session, store: ArtefactStore, actor: audit.Actor, retention_days: int,
          now: datetime | None = None, batch: int = 1000) -> PruneResult:
    """Export the prefix of the chain older than the retention period, verify it, record a checkpoint
    and delete it — all in the caller's transaction (the export object exists before anything is deleted).
    A broken chain is never pruned: that would destroy the evidence of tampering."""
    if retention_days < MIN_RETENTION_DAYS:
        raise DomainError(f"audit retention must be at least {MIN_RETENTION_DAYS} days", code="retention_too_short")
    now = now or datetime.now(UTC)
    cutoff = now - timedelta(days=retention_days)
    checkpoint = audit.latest_checkpoint(session)
    after = 0 if checkpoint is None else checkpoint.last_event_id
    start = audit.GENESIS if checkpoint is None else checkpoint.last_hash
    # The chain is appended in time order under a lock, so "older than the cutoff" is a prefix; stop at the
    # first newer event anyway, so a clock step backwards can never cut a hole in the chain.
    first_kept = session.execute(select(func.min(AuditEvent.id)).where(AuditEvent.id > after,
                                                                       AuditEvent.at >= cutoff)).scalar()
    query = select(AuditEvent.__table__).where(AuditEvent.id > after, AuditEvent.at < cutoff)
    if first_kept is not None:
        query = query.where(AuditEvent.id < first_kept)
    table = AuditEvent.__table__
    digest = hashlib.sha256()
    count, first_id, last = 0, None, None
    with tempfile.SpooledTemporaryFile(max_size=4 * 1024 * 1024) as spool:
        prev = start
        last_id = after
        while True:
            rows = session.execute(query.where(table.c.id > last_id).order_by(table.c.id).limit(batch)).all()
            if not rows:
                break
            report = audit.verify_chain(rows, prev)
            if not report.ok:
                raise DomainError(f"the audit chain is broken at event {report.first_broken_id} "
                                  f"({report.reason}); nothing was pruned", code="audit_chain_broken")
            for row in rows:
                line = (_event_json(row) + "\n").encode()
                spool.write(line)
                digest.update(line)
            count += len(rows)
            first_id = first_id if first_id is not None else rows[0].id
            last = rows[-1]
            prev, last_id = last.hash, last.id
        if count == 0 or last is None:
            return PruneResult(0, None)
        size = spool.tell()
        spool.seek(0)
        key = f"{EXPORT_PREFIX}{now:%Y%m%dT%H%M%S}-{first_id}-{last.id}.jsonl"
        stored = store.put_stream(key, spool, size, "application/x-ndjson", max(size, 1))  # type: ignore[arg-type]
    if stored.sha256 != digest.hexdigest():
        raise DomainError("the audit export did not store intact; nothing was pruned", code="export_failed")
    new_checkpoint = AuditCheckpoint(
        created_at=now, created_by=actor.username, first_event_id=first_id, last_event_id=last.id,
        last_hash=last.hash, last_at=last.at, event_count=count, export_bucket=stored.bucket,
        export_key=stored.key, export_version_id=stored.version_id, export_sha256=stored.sha256)
    session.add(new_checkpoint)
    # Written before the delete so it links to the chain's current head like any other event.
    audit.record(session, actor, "audit.pruned", target_type="audit", target_id=last.id, events=count,
                 first_event_id=first_id, last_event_id=last.id, export_key=stored.key,
                 export_sha256=stored.sha256, cutoff=cutoff.isoformat())
    audit.write_pending(session)  # now, not at commit: an emptied SQLite table would reuse the ids
    audit.allow_prune(session)
    session.execute(delete(AuditEvent).where(AuditEvent.id > after, AuditEvent.id <= last.id)
                    .execution_options(synchronize_session=False))
    session.flush()
    return PruneResult(count, new_checkpoint)


def verify_exports(session: Session, store: ArtefactStore) -> audit.ChainReport:
    """Re-read every checkpoint's export and check it links up from the genesis to the stored chain."""
    prev = audit.GENESIS
    total = 0
    for checkpoint in session.scalars(select(AuditCheckpoint).order_by(AuditCheckpoint.id)):
        size, sha = store.hash_object(checkpoint.export_key, checkpoint.export_version_id)
        if sha != checkpoint.export_sha256:
            return audit.ChainReport(total, checkpoint.first_event_id,
                                     f"export {checkpoint.export_key} does not match its recorded SHA-256")
        rows = []
        with store.iter_content(checkpoint.export_key, checkpoint.export_version_id) as chunks:
            data = b"".join(chunks)
        for line in data.decode().splitlines():
            body = json.loads(line)
            body["at"] = datetime.fromisoformat(body["at"])
            rows.append(AuditEvent(**body))
        report = audit.verify_chain(rows, prev)
        total += report.checked
        if not report.ok:
            return audit.ChainReport(total, report.first_broken_id, f"in export {checkpoint.export_key}: "
                                     f"{report.reason}")
        if rows and rows[-1].hash != checkpoint.last_hash:
            return audit.ChainReport(total, rows[-1].id, "export does not end at the checkpoint's hash")
        prev = checkpoint.last_hash
    return audit.ChainReport(total, None, None)

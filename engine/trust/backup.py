"""Backup and restore: every table as JSON lines plus an artefact manifest (and optionally the objects)."""
from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

from sqlalchemy import Date, DateTime, Numeric, func, insert, select, text, update
from sqlalchemy.orm import Session

from engine.errors import DomainError
from engine.trust import audit
from storage.artefact_store import ArtefactStore
from storage.models import Artefact, Base, GatePass, ServiceOrder

FORMAT = 1


def _encode(value: Any) -> Any:
    if isinstance(value, datetime):
        return (value if value.tzinfo else value.replace(tzinfo=UTC)).isoformat()
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, Decimal):
        return str(value)
    return value


def _decoder(column: Any) -> Any:
    kind = column.type
    impl = getattr(kind, "impl", kind)
    if isinstance(impl, DateTime):
        return lambda v: None if v is None else datetime.fromisoformat(v)
    if isinstance(impl, Date):
        return lambda v: None if v is None else date.fromisoformat(v)
    if isinstance(impl, Numeric):
        return lambda v: None if v is None else Decimal(v)
    return lambda v: v


FILE_TABLES = (ServiceOrder,)


def backup(session: Session, store: ArtefactStore, target: Path, *, with_objects: bool = True) -> dict[str, Any]:
    """Write `target`/tables/<table>.jsonl for every table, artefacts.jsonl (the manifest) and, with
    `with_objects`, objects/<sha256> (content-addressed). Returns the manifest written to manifest.json."""
    target.mkdir(parents=True, exist_ok=True)
    (target / "tables").mkdir(exist_ok=True)
    counts: dict[str, int] = {}
    for table in Base.metadata.sorted_tables:
        n = 0
        with open(target / "tables" / f"{table.name}.jsonl", "w", encoding="utf-8") as out:
            pk = list(table.primary_key.columns)
            for row in session.execute(select(table).order_by(*pk)).mappings():
                out.write(json.dumps({k: _encode(v) for k, v in row.items()}, ensure_ascii=False) + "\n")
                n += 1
        counts[table.name] = n
    objects = 0
    with open(target / "artefacts.jsonl", "w", encoding="utf-8") as manifest:
        for a in session.scalars(select(Artefact).order_by(Artefact.id)):
            manifest.write(json.dumps({"id": a.id, "key": a.key, "version_id": a.version_id, "sha256": a.sha256,
                                       "size": a.size, "media_type": a.media_type, "etag": a.etag}) + "\n")
            if with_objects:
                path = target / "objects" / a.sha256
                if not path.exists():
                    path.parent.mkdir(exist_ok=True)
                    digest = hashlib.sha256()
                    with store.iter_content(a.key, a.version_id) as chunks, open(path, "wb") as out:
                        for chunk in chunks:
                            digest.update(chunk)
                            out.write(chunk)
                    if digest.hexdigest() != a.sha256:
                        raise DomainError(f"artefact {a.id} does not match its recorded SHA-256; backup stopped",
                                          code="backup_mismatch")
                    objects += 1
    # Rows outside the evidence that point at an object of their own (a service order's 需求函): their files
    # travel with the backup too, in files.jsonl, content-addressed like the artefacts.
    with open(target / "files.jsonl", "w", encoding="utf-8") as files:
        for model in FILE_TABLES:
            for holder in session.scalars(select(model).order_by(model.id)):
                files.write(json.dumps({"table": model.__tablename__, "id": holder.id, "key": holder.key,
                                        "version_id": holder.version_id, "sha256": holder.sha256,
                                        "size": holder.size, "media_type": holder.media_type}) + "\n")
                if with_objects and _copy_object(store, holder.key, holder.version_id, holder.sha256, target):
                    objects += 1
    info = {"format": FORMAT, "created_at": datetime.now(UTC).isoformat(), "tables": counts,
            "objects": objects, "with_objects": with_objects}
    (target / "manifest.json").write_text(json.dumps(info, indent=1), encoding="utf-8")
    return info


def _copy_object(store: ArtefactStore, key: str, version_id: str | None, sha256: str, target: Path) -> bool:
    """objects/<sha256> from the store (once per content); False when that content is there already."""
    path = target / "objects" / sha256
    if path.exists():
        return False
    path.parent.mkdir(exist_ok=True)
    digest = hashlib.sha256()
    with store.iter_content(key, version_id) as chunks, open(path, "wb") as out:
        for chunk in chunks:
            digest.update(chunk)
            out.write(chunk)
    if digest.hexdigest() != sha256:
        raise DomainError(f"{key} does not match its recorded SHA-256; backup stopped", code="backup_mismatch")
    return True


def _rows(path: Path) -> Iterator[dict[str, Any]]:
    with open(path, encoding="utf-8") as f:
        for line in f:
            if line.strip():
                yield json.loads(line)


def restore(session: Session, store: ArtefactStore, source: Path, actor: audit.Actor) -> dict[str, Any]:
    """Load a backup into an empty database (schema already upgraded) and an empty bucket. Objects are
    put back under their keys; the store gives them new version ids and ETags, which the artefact rows then
    carry."""
    info = json.loads((source / "manifest.json").read_text(encoding="utf-8"))
    if info.get("format") != FORMAT:
        raise DomainError(f"unknown backup format {info.get('format')!r}", code="backup_format")
    for table in Base.metadata.sorted_tables:
        if session.execute(select(func.count()).select_from(table)).scalar():
            raise DomainError(f"table {table.name} is not empty; restore needs an empty database",
                              code="restore_target_not_empty")
    if not info.get("with_objects"):
        raise DomainError("this backup has no objects; restore needs them", code="backup_without_objects")
    for table in Base.metadata.sorted_tables:
        decoders = {c.name: _decoder(c) for c in table.columns}
        batch: list[dict[str, Any]] = []
        for row in _rows(source / "tables" / f"{table.name}.jsonl"):
            batch.append({k: decoders[k](v) for k, v in row.items() if k in decoders})
            if len(batch) >= 500:
                session.execute(insert(table), batch)
                batch = []
        if batch:
            session.execute(insert(table), batch)
    if session.get_bind().dialect.name == "postgresql":
        for table in Base.metadata.sorted_tables:
            pk = list(table.primary_key.columns)
            try:
                integer_key = len(pk) == 1 and pk[0].type.python_type is int
            except NotImplementedError:
                integer_key = False
            if integer_key:  # setval on a column without a sequence is a no-op (NULL)
                session.execute(text(
                    f"SELECT setval(pg_get_serial_sequence('{table.name}', '{pk[0].name}'), "  # noqa: S608
                    f"coalesce((SELECT max({pk[0].name}) FROM {table.name}), 0) + 1, false)"))
    restored = 0
    for entry in _rows(source / "artefacts.jsonl"):
        path = source / "objects" / entry["sha256"]
        with open(path, "rb") as body:
            stored = store.put_stream(entry["key"], body, entry["size"], entry["media_type"], max(entry["size"], 1))
        if stored.sha256 != entry["sha256"]:
            raise DomainError(f"object of artefact {entry['id']} changed in the backup", code="backup_mismatch")
        # A new object has a new ETag (and now carries its SHA-256 as metadata, even if it was streamed in):
        # the row records the one it points at, or gate checks and fsck would see a different object.
        session.execute(update(Artefact).where(Artefact.id == entry["id"])
                        .values(version_id=stored.version_id, bucket=stored.bucket, etag=stored.etag)
                        .execution_options(synchronize_session=False))
        restored += 1
    files = source / "files.jsonl"
    by_table = {model.__tablename__: model for model in FILE_TABLES}
    for entry in _rows(files) if files.exists() else iter(()):
        model = by_table[entry["table"]]
        with open(source / "objects" / entry["sha256"], "rb") as body:
            stored = store.put_stream(entry["key"], body, entry["size"], entry["media_type"], max(entry["size"], 1))
        if stored.sha256 != entry["sha256"]:
            raise DomainError(f"object of {entry['table']} {entry['id']} changed in the backup", code="backup_mismatch")
        session.execute(update(model).where(model.id == entry["id"])
                        .values(version_id=stored.version_id, bucket=stored.bucket)
                        .execution_options(synchronize_session=False))
        restored += 1
    session.flush()
    # Evidence that passed a gate is held again in the new bucket.
    held = session.execute(select(Artefact.key, Artefact.version_id).join(
        GatePass, GatePass.artefact_id == Artefact.id).distinct()).all()
    for key, version_id in held:
        store.hold(key, version_id)
    audit.record(session, actor, "backup.restored", target_type="database", target_id=None,
                 tables=info["tables"], objects=restored, backup_created_at=info["created_at"])
    return {"tables": info["tables"], "objects": restored}

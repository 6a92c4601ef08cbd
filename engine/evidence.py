"""Evidence: storing uploaded artefacts with checksums, and checking they are still what was stored."""
from __future__ import annotations

import os
import unicodedata
from datetime import UTC, datetime
from typing import BinaryIO

from sqlalchemy.orm import Session

from engine import audit
from engine.catalog import ARTEFACT_KINDS
from engine.errors import Invalid, PayloadTooLarge, ServiceUnavailable, UnsupportedMedia
from storage.artefact_store import ArtefactStore, StoreUnavailable, TooLarge
from storage.models import Artefact, User, WorkItem
from storage.sniff import UnsupportedType, sniff

MAX_FILENAME = 180


def safe_filename(name: str | None, fallback_ext: str = "") -> str:
    """A display filename with no path parts, control or bidi characters, and a bounded length."""
    name = (name or "").replace("\\", "/").split("/")[-1]
    cleaned = "".join(
        ch for ch in unicodedata.normalize("NFC", name)
        if unicodedata.category(ch)[0] != "C"  # Cc control, Cf format (bidi marks), Co, Cs, Cn
    ).strip().strip(".")
    if not cleaned:
        cleaned = "file" + (f".{fallback_ext}" if fallback_ext else "")
    if len(cleaned) > MAX_FILENAME:
        stem, ext = os.path.splitext(cleaned)
        cleaned = stem[: MAX_FILENAME - len(ext[:16])] + ext[:16]
    return cleaned


def upload_artefact(session: Session, store: ArtefactStore, actor: audit.Actor, user: User, item: WorkItem,
                    kind: str, filename: str | None, stream: BinaryIO, length: int, max_bytes: int,
                    task_id: int | None = None) -> Artefact:
    """Stream a file into the object store, then record it. No row is written unless the object exists."""
    if kind not in ARTEFACT_KINDS:
        raise Invalid(f"unknown artefact kind {kind!r}", code="unknown_kind", known=sorted(ARTEFACT_KINDS))
    if length > max_bytes:
        raise PayloadTooLarge(f"the file is larger than the {max_bytes // (1024 * 1024)} MB limit")
    try:
        sniffed = sniff(stream, filename or "")
    except UnsupportedType as exc:
        raise UnsupportedMedia(f"this file type is not accepted: {exc}") from exc
    key = ArtefactStore.new_key(item.contract.code, item.id, kind)
    try:
        stored = store.put_stream(key, stream, length, sniffed.media_type, max_bytes)
    except TooLarge as exc:
        raise PayloadTooLarge(f"the file is larger than the {max_bytes // (1024 * 1024)} MB limit") from exc
    except StoreUnavailable as exc:
        raise ServiceUnavailable("the evidence store is unavailable; nothing was recorded, try again later") \
            from exc
    artefact = Artefact(
        item_id=item.id, kind=kind, filename=safe_filename(filename, sniffed.extension), bucket=stored.bucket,
        key=stored.key, version_id=stored.version_id, sha256=stored.sha256, size=stored.size,
        media_type=sniffed.media_type, uploaded_by_id=user.id, uploaded_at=datetime.now(UTC), task_id=task_id,
        status="stored",
    )
    artefact.uploaded_by = user
    session.add(artefact)
    session.flush()
    audit.record(session, actor, "artefact.uploaded", target_type="artefact", target_id=artefact.id,
                 item_id=item.id, kind=kind, sha256=stored.sha256, size=stored.size, key=stored.key,
                 version_id=stored.version_id)
    return artefact


def verify_artefact(store: ArtefactStore, artefact: Artefact) -> bool:
    """Cheap verification: the stored object version exists with the recorded size and checksum."""
    try:
        size, metadata = store.stat(artefact.key, artefact.version_id)
    except KeyError:
        return False
    except StoreUnavailable as exc:
        raise ServiceUnavailable("the evidence store is unavailable; cannot verify artefacts") from exc
    recorded = {k.lower(): v for k, v in (metadata or {}).items()}
    digest = recorded.get("x-amz-meta-sha256") or recorded.get("sha256")
    return size == artefact.size and (digest is None or digest == artefact.sha256)

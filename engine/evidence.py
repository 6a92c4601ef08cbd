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
from storage.artefact_store import ArtefactStore, ObjectStat, StoredObject, StoreUnavailable, StreamedPut, TooLarge
from storage.models import Artefact, User, WorkItem
from storage.sniff import HEAD_BYTES, ZIP, Sniffed, UnsupportedType, sniff, sniff_head

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


def _check_kind(kind: str) -> None:
    if kind not in ARTEFACT_KINDS:
        raise Invalid(f"unknown artefact kind {kind!r}", code="unknown_kind", known=sorted(ARTEFACT_KINDS))


def _too_large(max_bytes: int) -> PayloadTooLarge:
    return PayloadTooLarge(f"the file is larger than the {max_bytes // (1024 * 1024)} MB limit")


def _refused(exc: UnsupportedType) -> UnsupportedMedia:
    return UnsupportedMedia(f"this file type is not accepted: {exc}")


def _store_down() -> ServiceUnavailable:
    return ServiceUnavailable("the evidence store is unavailable; nothing was recorded, try again later")


def upload_artefact(session: Session, store: ArtefactStore, actor: audit.Actor, user: User, item: WorkItem,
                    kind: str, filename: str | None, stream: BinaryIO, length: int, max_bytes: int,
                    task_id: int | None = None) -> Artefact:
    """Stream a file into the object store, then record it. No row is written unless the object exists."""
    _check_kind(kind)
    if length > max_bytes:
        raise _too_large(max_bytes)
    try:
        sniffed = sniff(stream, filename or "")
    except UnsupportedType as exc:
        raise _refused(exc) from exc
    key = ArtefactStore.new_key(item.contract.code, item.id, kind)
    try:
        stored = store.put_stream(key, stream, length, sniffed.media_type, max_bytes)
    except TooLarge as exc:
        raise _too_large(max_bytes) from exc
    except StoreUnavailable as exc:
        raise _store_down() from exc
    return _record(session, actor, user, item, kind, filename, stored, sniffed, task_id)


def _record(session: Session, actor: audit.Actor, user: User, item: WorkItem, kind: str, filename: str | None,
            stored: StoredObject, sniffed: Sniffed, task_id: int | None) -> Artefact:
    artefact = Artefact(
        item_id=item.id, kind=kind, filename=safe_filename(filename, sniffed.extension), bucket=stored.bucket,
        key=stored.key, version_id=stored.version_id, sha256=stored.sha256, size=stored.size, etag=stored.etag,
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


class StreamedUpload:
    """One artefact upload taken as its multipart body arrives (the caller parses it): the file is stored while it
    is still being received, instead of after. Same rules and outcomes as `upload_artefact`.

    The kind and the file may come in either order. The file goes to a StreamedPut, which sends complete parts to
    the store once the key is known, i.e. once the kind has arrived and the file's first bytes have been sniffed
    (the object's Content-Type: what the head says, or application/zip for a zip container whose directory, at
    the end, tells a .docx from a .zip). An unknown kind or a refused head stops the upload at once; the
    whole file is sniffed again by `finish` before the object is made to exist, so a polyglot or bad archive is
    refused with nothing stored. Whoever made it calls `abort` unless `finish` returned: no object, no parts left.
    """

    def __init__(self, store: ArtefactStore, item: WorkItem, max_bytes: int) -> None:
        self._store = store
        self._item_id = item.id
        self._contract = item.contract.code  # now, not lazily halfway through the body
        self._max_bytes = max_bytes
        self.kind: str | None = None
        self.filename: str | None = None
        self._put: StreamedPut | None = None
        self._size = 0
        self._head_seen = False
        self._head_type: Sniffed | None = None
        # A head refused before the kind arrived: the kind is checked first (as upload_artefact does), so the
        # refusal waits for it while the rest of the file is only counted.
        self._refusal: UnsupportedMedia | None = None

    @property
    def has_file(self) -> bool:
        return self._put is not None or self._refusal is not None

    def set_kind(self, kind: str) -> None:
        _check_kind(kind)
        self.kind = kind
        if self._refusal is not None:
            raise self._refusal
        self._start()

    def begin_file(self, filename: str | None) -> None:
        if self.has_file:
            raise ValueError("one file per upload")
        self.filename = filename
        self._put = self._store.streamed_put(self._max_bytes)

    def write(self, data: bytes) -> None:
        self._size += len(data)
        if self._size > self._max_bytes:
            raise _too_large(self._max_bytes)
        if self._put is None:
            return  # refused: counted, not kept
        try:
            self._put.write(data)
        except TooLarge as exc:
            raise _too_large(self._max_bytes) from exc
        except StoreUnavailable as exc:
            raise _store_down() from exc
        if not self._head_seen and self._put.size >= HEAD_BYTES:
            self._sniff_head()

    def end_file(self) -> None:
        if not self._head_seen:
            self._sniff_head()
        if self._put is not None:
            try:
                self._put.end()
            except StoreUnavailable as exc:
                raise _store_down() from exc

    def _sniff_head(self) -> None:
        assert self._put is not None
        self._head_seen = True
        try:
            self._head_type = sniff_head(self._put.head(HEAD_BYTES), self.filename or "")
        except UnsupportedType as exc:
            self._put.abort()
            self._put = None
            self._refusal = _refused(exc)
            if self.kind is not None:
                raise self._refusal from exc
            return
        self._start()

    def _start(self) -> None:
        if self._put is None or self.kind is None or not self._head_seen:
            return
        key = ArtefactStore.new_key(self._contract, self._item_id, self.kind)
        try:
            self._put.start(key, self._head_type.media_type if self._head_type is not None else ZIP)
        except StoreUnavailable as exc:
            raise _store_down() from exc

    def finish(self, session: Session, actor: audit.Actor, user: User, item: WorkItem, kind: str,
               task_id: int | None) -> Artefact:
        """The body is complete (`kind` is the form's, "" if none came): store the object and record it."""
        if self.kind is None:
            self.set_kind(kind)
        if self._refusal is not None:
            raise self._refusal
        put = self._put
        assert put is not None and item.id == self._item_id, "begin_file() first, for the same item"
        self.end_file()
        try:
            sniffed = sniff(put.spool, self.filename or "")
        except UnsupportedType as exc:
            raise _refused(exc) from exc
        try:
            stored = put.finish(sniffed.media_type)
        except TooLarge as exc:
            raise _too_large(self._max_bytes) from exc
        except StoreUnavailable as exc:
            raise _store_down() from exc
        try:
            return _record(session, actor, user, item, self.kind or kind, self.filename, stored, sniffed, task_id)
        except BaseException:
            try:
                self._store.delete(stored.key, stored.version_id)
            except StoreUnavailable:
                pass  # `itemgate fsck --repair` sweeps objects no row refers to
            raise

    def abort(self) -> None:
        if self._put is not None:
            self._put.abort()


def object_mismatch(artefact: Artefact, found: ObjectStat) -> str | None:
    """Why the object a HEAD describes is not the one `artefact` recorded, or None. Every recorded fact the object
    can be checked against must match: the size; the SHA-256 when the object carries it as metadata (all but
    streamed multipart uploads); the server's ETag when the row has one (every upload since ETags are recorded,
    and the only check of content for a streamed object). A row from before then, of an object without the
    metadata, is checked on its size alone."""
    if found.size != artefact.size:
        return f"size {found.size} != recorded {artefact.size}"
    recorded = {k.lower(): v for k, v in (found.metadata or {}).items()}
    digest = recorded.get("x-amz-meta-sha256") or recorded.get("sha256")
    if digest is not None and digest != artefact.sha256:
        return "SHA-256 differs from recorded"
    if artefact.etag is not None and found.etag != artefact.etag:
        return "ETag differs from recorded"
    return None


def verify_artefact(store: ArtefactStore, artefact: Artefact) -> bool:
    """Cheap verification: the stored object version exists and matches what was recorded (object_mismatch)."""
    try:
        found = store.stat_object(artefact.key, artefact.version_id)
    except KeyError:
        return False
    except StoreUnavailable as exc:
        raise ServiceUnavailable("the evidence store is unavailable; cannot verify artefacts") from exc
    return object_mismatch(artefact, found) is None

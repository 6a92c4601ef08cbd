"""Evidence: storing uploaded artefacts with checksums, and checking they are still what was stored."""
from __future__ import annotations

import os
import re
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, BinaryIO

from sqlalchemy import select
from sqlalchemy.orm import Session, lazyload

from engine.contract.catalog import contract_kinds, item_kinds
from engine.errors import Conflict, Forbidden, Invalid, PayloadTooLarge, ServiceUnavailable, UnsupportedMedia
from engine.evidence.sheets import check_signed_sheet, codes_in_upload, is_sheet_kind
from engine.trust import audit
from engine.trust.policy import DEPARTMENT, scope_of
from storage.artefact_store import (
    ArtefactStore,
    ObjectMissing,
    ObjectStat,
    StoredObject,
    StoreUnavailable,
    StreamedPut,
    TooLarge,
)
from storage.models import Artefact, Department, GatePass, HumanTask, ProcessInstance, User, WorkItem
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


def _check_kind(kind: str, settings: Mapping[str, Any] | None = None) -> None:
    """A kind is built in, or declared by the item's contract (its catalogue's [artefact_kinds])."""
    known = contract_kinds(settings)
    if kind not in known:
        raise Invalid(f"unknown artefact kind {kind!r}", code="unknown_kind", known=sorted(known))


# ---------------------------------------------------------------- whose evidence

def evidence_scope(task: HumanTask) -> int | None:
    """The department a task's evidence belongs to: its own for a per-department step (one instance of a step
    the model runs once per department), None (the whole item) for any other step."""
    return task.department_id if task.per_department else None


def _gate_kinds(task: HumanTask, gate: str | None, *, optional: bool = False) -> list[str]:
    return item_kinds(task.item, gate, optional=optional)


def task_kinds(task: HumanTask) -> list[str]:
    """The artefact kinds a task is about: what its gate needs, then what the gate it reviews needs."""
    return list(dict.fromkeys(_gate_kinds(task, task.gate) + _gate_kinds(task, task.review_of)
                              + _gate_kinds(task, task.gate, optional=True)))


def optional_kinds(task: HumanTask) -> list[str]:
    """Working documents a task's step may take without its gate requiring them (rules marked optional)."""
    return [k for k in _gate_kinds(task, task.gate, optional=True) if k not in _gate_kinds(task, task.gate)]


def submission_of(session: Session, review: HumanTask) -> HumanTask | None:
    """The completed task whose deliverable a review task judges: the latest one through the reviewed gate
    before the review began, in the review's own department for a per-department review."""
    if not review.review_of:
        return None
    query = select(HumanTask).where(HumanTask.item_id == review.item_id, HumanTask.gate == review.review_of,
                                    HumanTask.status == "completed", HumanTask.id < review.id)
    if review.per_department:
        query = query.where(HumanTask.department_id == review.department_id)
    return session.scalars(query.order_by(HumanTask.id.desc()).limit(1)
                           .options(lazyload(HumanTask.item), lazyload(HumanTask.assignee))).first()


def submitted_evidence(session: Session, review: HumanTask) -> list[Artefact]:
    """Exactly the artefact versions a review judges: the ones its submission's gate pass recorded, not
    whatever of those kinds was uploaded last."""
    submission = submission_of(session, review)
    if submission is None:
        return []
    return list(session.scalars(select(Artefact).join(GatePass, GatePass.artefact_id == Artefact.id)
                                .where(GatePass.task_id == submission.id).order_by(GatePass.id)))


def kinds_under_review(session: Session, item_id: int, department_id: int | None) -> dict[str, HumanTask]:
    """The artefact kinds of one evidence scope (a department's, or the whole item's) whose submitted versions
    an open review is judging, each with that review: nobody may replace them until it is decided."""
    query = select(HumanTask).where(HumanTask.item_id == item_id, HumanTask.status == "ready",
                                    HumanTask.review_of.is_not(None))
    if department_id is None:
        query = query.where(HumanTask.per_department.is_(False))
    else:
        query = query.where(HumanTask.per_department.is_(True), HumanTask.department_id == department_id)
    locked: dict[str, HumanTask] = {}
    for review in session.scalars(query.order_by(HumanTask.id)):
        for artefact in submitted_evidence(session, review):
            locked.setdefault(artefact.kind, review)
    return locked


def lock_evidence(session: Session, item_id: int) -> None:
    """Serialise what changes an item's evidence (an upload deciding where it goes) with what reads it (a
    submission reading its gate and opening the review): both take the item's process instance row, held until
    commit (PostgreSQL; SQLite serialises writers by itself)."""
    session.execute(select(ProcessInstance.id).where(ProcessInstance.item_id == item_id).with_for_update())


@dataclass(frozen=True)
class UploadTarget:
    """Where an upload belongs: the task it names (or was resolved to) and whose evidence it is."""

    task_id: int | None
    department_id: int | None


_TASK_NUMBER = re.compile(r"[0-9]{1,18}", re.ASCII)


def _task_number(ref: str | int) -> int:
    if isinstance(ref, int) and not isinstance(ref, bool) and 0 < ref < 10**18:
        return ref
    if isinstance(ref, str) and _TASK_NUMBER.fullmatch(ref.strip()) and int(ref) > 0:
        return int(ref)
    raise Invalid("task_id must be the number of an open task of this item", code="invalid_task_id")


def _task_ref(task: HumanTask, departments: dict[int, str]) -> dict[str, object]:
    return {"id": task.id, "name": task.spec_name, "title": task.title,
            "department": departments.get(task.department_id or 0)}


def upload_target(session: Session, user: User, item: WorkItem, kind: str, task_ref: str | int | None, *,
                  lock: bool = False) -> UploadTarget:
    """Decide which task and whose evidence an upload of `kind` is, or refuse it.

    - `task_ref` (the upload's `task_id`) must be the number of an open task of this item (422 otherwise).
    - Evidence of a per-department step is that department's: the upload names the task, or is resolved to the
      only open per-department task that needs the kind; when several do, it is refused (422) naming them.
    - While an open review judges a submitted version of the kind in that scope, it is refused (409
      `under_review`): what was submitted is what is reviewed, until the review decides.

    `lock`: decide under `lock_evidence`, so a submission that opens a review and this upload are serialised:
    either the upload lands before the submission reads its gate (and is what is reviewed), or it is refused."""
    _check_kind(kind, item.contract.settings)
    if lock:
        lock_evidence(session, item.id)
    named: HumanTask | None = None
    if task_ref is not None:
        number = _task_number(task_ref)
        named = session.scalars(select(HumanTask).where(HumanTask.id == number, HumanTask.item_id == item.id)
                                .options(lazyload(HumanTask.assignee))).first()
        if named is None:
            raise Invalid(f"work item {item.id} has no task {number}", code="unknown_task", task_id=number)
        if named.status != "ready":
            raise Invalid(f"task {number} is {named.status}; evidence goes to an open task", code="task_not_open",
                          task_id=number)
    if named is None or not named.per_department:
        # The open per-department steps this kind concerns: an item-wide upload must not be taken for one of them.
        concerned = [t for t in session.scalars(
            select(HumanTask).where(HumanTask.item_id == item.id, HumanTask.status == "ready",
                                    HumanTask.per_department.is_(True)).order_by(HumanTask.id)
            .options(lazyload(HumanTask.assignee))) if kind in task_kinds(t)]
        needing = [t for t in concerned if kind in _gate_kinds(t, t.gate)]
        if len(needing) > 1 or (named is not None and needing):
            departments = {d.id: d.code for d in session.scalars(select(Department))}
            raise Invalid(f"open tasks of different departments take {kind!r}; name the one this file is for as "
                          "task_id", code="task_required", kind=kind,
                          tasks=[_task_ref(t, departments) for t in needing])
        if named is None and concerned:
            # The one step that needs it; or, when only reviews are open for it, the file one of them judges.
            named = needing[0] if needing else concerned[0]
    if named is not None and named.per_department:
        if kind not in task_kinds(named):
            raise Invalid(f"task {named.id} ({named.spec_name}) takes no {kind!r}", code="kind_not_for_task",
                          task_id=named.id, kinds=task_kinds(named))
        if scope_of(user.role, "artefact.upload") == DEPARTMENT and user.department_id != named.department_id:
            raise Forbidden(f"task {named.id} is another department's; its evidence is theirs to give",
                            code="not_your_department")
    target = UploadTarget(named.id if named is not None else None,
                          evidence_scope(named) if named is not None else None)
    review = kinds_under_review(session, item.id, target.department_id).get(kind)
    if review is not None:
        raise Conflict(f"the submitted {kind!r} is under review (task {review.id}); it can be replaced only after "
                       "the review returns it", code="under_review", kind=kind, review_task_id=review.id)
    return target


def _too_large(max_bytes: int) -> PayloadTooLarge:
    return PayloadTooLarge(f"the file is larger than the {max_bytes // (1024 * 1024)} MB limit")


def _refused(exc: UnsupportedType) -> UnsupportedMedia:
    return UnsupportedMedia(f"this file type is not accepted: {exc}")


def _store_down() -> ServiceUnavailable:
    return ServiceUnavailable("the evidence store is unavailable; nothing was recorded, try again later")


def upload_artefact(session: Session, store: ArtefactStore, actor: audit.Actor, user: User, item: WorkItem,
                    kind: str, filename: str | None, stream: BinaryIO, length: int, max_bytes: int,
                    task_id: str | int | None = None, verification_code: str | None = None) -> Artefact:
    """Stream a file into the object store, then record it. No row is written unless the object exists.
    `task_id`: the task the file is for, as the request gave it (see `upload_target`); `verification_code`: for a
    signed sign-off sheet, the code printed on it (see engine.evidence.sheets.check_signed_sheet)."""
    upload_target(session, user, item, kind, task_id)  # refused before anything is stored
    if length > max_bytes:
        raise _too_large(max_bytes)
    try:
        sniffed = sniff(stream, filename or "")
    except UnsupportedType as exc:
        raise _refused(exc) from exc
    sheet = check_signed_sheet(session, item, kind, verification_code, codes_in_upload(stream, sniffed.media_type)
                               if is_sheet_kind(kind) else [])
    key = ArtefactStore.new_key(item.contract.code, item.id, kind)
    try:
        stored = store.put_stream(key, stream, length, sniffed.media_type, max_bytes)
    except TooLarge as exc:
        raise _too_large(max_bytes) from exc
    except StoreUnavailable as exc:
        raise _store_down() from exc
    try:
        return _record(session, actor, user, item, kind, filename, stored, sniffed, task_id,
                       sheet.code if sheet is not None else None)
    except BaseException:
        _discard(store, stored)
        raise


def _discard(store: ArtefactStore, stored: StoredObject) -> None:
    try:
        store.delete(stored.key, stored.version_id)
    except StoreUnavailable:
        pass  # `itemgate fsck --repair` sweeps objects no row refers to


def _record(session: Session, actor: audit.Actor, user: User, item: WorkItem, kind: str, filename: str | None,
            stored: StoredObject, sniffed: Sniffed, task_ref: str | int | None, sheet_code: str | None) -> Artefact:
    # Decided again under the instance lock: a submission may have opened a review while the file was stored.
    target = upload_target(session, user, item, kind, task_ref, lock=True)
    artefact = Artefact(
        item_id=item.id, kind=kind, filename=safe_filename(filename, sniffed.extension), bucket=stored.bucket,
        key=stored.key, version_id=stored.version_id, sha256=stored.sha256, size=stored.size, etag=stored.etag,
        media_type=sniffed.media_type, uploaded_by_id=user.id, uploaded_at=datetime.now(UTC),
        task_id=target.task_id, department_id=target.department_id, status="stored",
    )
    artefact.uploaded_by = user
    session.add(artefact)
    session.flush()
    audit.record(session, actor, "artefact.uploaded", target_type="artefact", target_id=artefact.id,
                 item_id=item.id, kind=kind, sha256=stored.sha256, size=stored.size, key=stored.key,
                 version_id=stored.version_id, task_id=target.task_id, department_id=target.department_id,
                 **({"sheet_code": sheet_code} if sheet_code is not None else {}))
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
        self._settings = dict(item.contract.settings or {})
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
        _check_kind(kind, self._settings)
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
               task_id: str | int | None, verification_code: str | None = None) -> Artefact:
        """The body is complete (`kind` is the form's, "" if none came; `task_id` and `verification_code` as the
        form gave them, None if none came): store the object and record it."""
        if self.kind is None:
            self.set_kind(kind)
        if self._refusal is not None:
            raise self._refusal
        put = self._put
        assert put is not None and item.id == self._item_id, "begin_file() first, for the same item"
        upload_target(session, user, item, self.kind or kind, task_id)  # refused before the object exists
        self.end_file()
        try:
            sniffed = sniff(put.spool, self.filename or "")
        except UnsupportedType as exc:
            raise _refused(exc) from exc
        kind = self.kind or kind
        # A signed sheet that is not this item's sheet of this kind is refused before the object exists.
        sheet = check_signed_sheet(session, item, kind, verification_code,
                                   codes_in_upload(put.spool, sniffed.media_type) if is_sheet_kind(kind) else [])
        try:
            stored = put.finish(sniffed.media_type)
        except TooLarge as exc:
            raise _too_large(self._max_bytes) from exc
        except StoreUnavailable as exc:
            raise _store_down() from exc
        try:
            return _record(session, actor, user, item, kind, self.filename, stored, sniffed, task_id,
                           sheet.code if sheet is not None else None)
        except BaseException:
            _discard(self._store, stored)
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
    except ObjectMissing:
        return False
    except StoreUnavailable as exc:
        raise ServiceUnavailable("the evidence store is unavailable; cannot verify artefacts") from exc
    return object_mismatch(artefact, found) is None

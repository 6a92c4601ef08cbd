"""HTTP download helpers shared by the REST API and the web pages: filenames, streamed files, CSV, artefacts."""
from __future__ import annotations

from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

from flask import Response, current_app, g, stream_with_context

from api.extensions import db
from engine.errors import ObjectMissing, ServiceUnavailable
from engine.money.exports import ExportKind, ExportRequest
from engine.money.reports import WorkloadFilter
from engine.trust import audit
from engine.trust.policy import authorize
from storage.artefact_store import ArtefactStore, StoreUnavailable
from storage.artefact_store import ObjectMissing as MissingInStore
from storage.models import Artefact, User
from storage.unit_of_work import unit_of_work


def attachment(name: str, ascii_name: str) -> str:
    """Content-Disposition with an ASCII fallback and the real (often Chinese) name per RFC 6266."""
    return f"attachment; filename=\"{ascii_name}\"; filename*=UTF-8''{quote(name)}"


def file_response(out: Any, mimetype: str, name: str, ascii_name: str) -> Response:
    """Stream an already written (spooled) file in 64 KiB blocks and close it afterwards."""

    def chunks() -> Iterator[bytes]:
        try:
            while block := out.read(1 << 16):
                yield block
        finally:
            out.close()

    response = Response(chunks(), mimetype=mimetype)
    response.headers["Content-Disposition"] = attachment(name, ascii_name)
    return response


def csv_response(rows: Iterator[bytes], name: str, ascii_name: str) -> Response:
    response = Response(stream_with_context(rows), mimetype="text/csv")
    response.headers["Content-Type"] = "text/csv; charset=utf-8"
    response.headers["Content-Disposition"] = attachment(name, ascii_name)
    return response


def send_export(user: User, spec: ExportKind, f: WorkloadFilter, described: str = "全部",
                facts: list[tuple[str, Any]] | None = None) -> Response:
    """A registered export of the rows `f` selects, for `user` (authorised against the export's action)."""
    authorize(user, spec.action)
    store = current_app.extensions.get("itemgate_store")
    if spec.needs_store and store is None:
        raise ServiceUnavailable("the evidence store is not configured")
    return export_response(spec, ExportRequest(db.session, f, store, described, facts))


def export_response(spec: ExportKind, request: ExportRequest) -> Response:
    """One registered export as a download: a built file is sent in blocks, a chunk stream as it is produced."""
    out = spec.build(request)
    if hasattr(out, "read"):
        return file_response(out, spec.content_type, spec.name, spec.ascii_name)
    response = Response(stream_with_context(out), mimetype=spec.content_type.split(";")[0])
    response.headers["Content-Type"] = spec.content_type
    response.headers["Content-Disposition"] = attachment(spec.name, spec.ascii_name)
    return response


def content_disposition(filename: str, inline: bool = False) -> str:
    """Content-Disposition for a user's file name: a printable ASCII fallback and the real name per RFC 6266."""
    ascii_name = "".join(c if 32 <= ord(c) < 127 and c not in '"\\;' else "_" for c in filename) or "file"
    kind = "inline" if inline else "attachment"
    return f"{kind}; filename=\"{ascii_name}\"; filename*=UTF-8''{quote(filename, safe='')}"


def artefact_response(artefact: Artefact, user: User, store: ArtefactStore | None, inline: bool) -> Response:
    """The bytes of an artefact the caller has authorised for `user`, for the REST API and the web page alike;
    the download is audited and committed here. The object is opened and its first chunk read before the
    response exists, so a missing object (502 object_missing) or a failing store (503 store_unavailable) is a
    problem answer, never a 200 that breaks off; so is an object whose size is not the recorded one
    (Content-Length would promise what the body cannot keep). A download that did not happen is not audited."""
    if store is None:
        raise ServiceUnavailable("no evidence store is configured")
    what = f"the stored file of artefact {artefact.id}"
    try:
        stream = store.iter_content(artefact.key, artefact.version_id).prefetch()
    except MissingInStore as exc:
        raise ObjectMissing(f"{what} is missing from the object store; an operator should run `itemgate fsck`",
                            artefact_id=artefact.id) from exc
    except StoreUnavailable as exc:
        raise ServiceUnavailable(f"the object store is unavailable; {what} cannot be read now") from exc
    if stream.length is not None and stream.length != artefact.size:
        stream.close()
        raise ObjectMissing(f"{what} has {stream.length} bytes in the store, not the {artefact.size} recorded; "
                            "an operator should run `itemgate fsck`", code="object_mismatch",
                            artefact_id=artefact.id)
    media_type = artefact.media_type.split(";")[0]
    # The stream is the response's iterable itself: the server closes it (and frees the S3 connection) when the
    # response ends, sent or not.
    response = Response(stream, mimetype=media_type)
    if artefact.media_type.startswith("text/plain"):
        response.headers["Content-Type"] = artefact.media_type
    response.headers["Content-Disposition"] = content_disposition(artefact.filename, inline)
    response.headers["Content-Length"] = str(artefact.size)
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["ETag"] = f'"{artefact.sha256}"'
    try:
        with unit_of_work(db.session):
            audit.record(db.session, audit.Actor.of(user, g.get("request_id")), "artefact.downloaded",
                         target_type="artefact", target_id=artefact.id, item_id=artefact.item_id)
    except BaseException:
        response.close()  # frees the store's connection; nothing will iterate this response
        raise
    return response


def sheet_response(actor: audit.Actor, user: User, item: Any, kind: str) -> Response:
    """Print an item's sign-off sheet (engine.evidence.sheets) and answer with it; one implementation for REST and web.
    The sheet's code and the audit record of what it lists are committed before the PDF is sent."""
    from functools import partial

    from flask import current_app

    from engine.evidence.pdf import find_cjk_font
    from engine.evidence.sheet_pdf import render
    from engine.evidence.sheets import print_sheet

    with unit_of_work(db.session):
        font = find_cjk_font(current_app.config["ITEMGATE"].cjk_font)  # 503 cjk_font_missing before anything is written
        printed = print_sheet(db.session, actor, user, item, kind, partial(render, font))
    response = Response(printed.pdf, mimetype="application/pdf")
    response.headers["Content-Disposition"] = content_disposition(printed.filename)
    response.headers["Cache-Control"] = "no-store"
    response.headers["X-Verification-Code"] = printed.sheet.code
    return response

"""Request parsing for uploads: multipart files hashed while werkzeug spools them, or parsed as they arrive."""
from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any, BinaryIO, Protocol, TypeVar, cast

from flask import Request
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session
from werkzeug.datastructures import FileStorage, Headers
from werkzeug.exceptions import ClientDisconnected, RequestEntityTooLarge
from werkzeug.formparser import FormDataParser, MultiPartParser
from werkzeug.http import parse_options_header
from werkzeug.sansio.multipart import Data, Epilogue, Event, Field, File, MultipartDecoder, NeedData

from engine.errors import ServiceUnavailable
from storage.artefact_store import ArtefactStore, HashingSpool
from storage.unit_of_work import unit_of_work


class _StoredObjectRow(Protocol):
    key: str
    version_id: str | None


Stored = TypeVar("Stored", bound=_StoredObjectRow)

if TYPE_CHECKING:
    from engine.evidence.artefacts import StreamedUpload

# How much of the body is read at a time when it is parsed as it arrives: werkzeug's 64 KiB pieces made parsing
# 200 MB take about twice as long (see HashingFormParser).
BODY_PIECE = 1 << 20


class HashingFormParser(FormDataParser):
    """Spools an uploaded file into a HashingSpool: it is hashed while werkzeug writes it, so the store does not
    read the whole file once more just to learn its SHA-256 before sending it. The body is read in larger pieces
    than werkzeug's 64 KiB (parsing 200 MB took about twice as long at that size); the parser refuses a piece
    that would take its buffer over max_form_memory_size, so a piece is at most half of that."""

    def __init__(self, stream_factory: Any = None, *args: Any, **kwargs: Any) -> None:
        super().__init__(HashingSpool.for_upload, *args, **kwargs)

    def _parse_multipart(self, stream: Any, mimetype: str, content_length: int | None,
                         options: dict[str, str]) -> Any:
        piece = 1 << 20 if self.max_form_memory_size is None else self.max_form_memory_size // 2
        parser = MultiPartParser(stream_factory=self.stream_factory, max_form_memory_size=self.max_form_memory_size,
                                 max_form_parts=self.max_form_parts, cls=self.cls,
                                 buffer_size=max(64 * 1024, min(piece, 1 << 20)))
        boundary = options.get("boundary", "").encode("ascii")
        if not boundary:
            raise ValueError("Missing boundary")
        form, files = parser.parse(stream, boundary, content_length)
        return stream, form, files


class ItemGateRequest(Request):
    """The app's request class: multipart bodies are parsed by HashingFormParser. It is set on the app, not per
    view, because the web's CSRF check reads the form before any view runs."""

    form_data_parser_class = HashingFormParser


def unread_multipart_boundary(request: Request) -> bytes | None:
    """The boundary of a multipart/form-data body that nothing has read yet, which a view may then parse itself
    as it arrives; None when it is not multipart, or the form was parsed already (e.g. by the web's CSRF check)."""
    if request.mimetype != "multipart/form-data" or "form" in request.__dict__:
        return None
    if getattr(request, "_cached_data", None) is not None:
        return None  # get_data() read the body into memory already; werkzeug parses the form from that copy
    try:
        boundary = request.mimetype_params.get("boundary", "").encode("ascii")
    except UnicodeEncodeError:
        return None
    return boundary or None


def iter_multipart(request: Request, boundary: bytes, piece: int = BODY_PIECE) -> Iterator[Event]:
    """werkzeug's sans-io MultipartDecoder fed from `request.stream`, `piece` bytes at a time: the form's events
    (Field or File, then its Data, …, Epilogue) as the body arrives, with werkzeug's limits (413 past
    max_content_length, max_form_parts, or a preamble/part header larger than max_form_memory_size).

    Raises ClientDisconnected when the body ends before its Content-Length, ValueError when it is malformed."""
    stream = request.stream  # checks Content-Length against max_content_length before a byte is read
    limit = request.max_form_memory_size
    # The decoder's buffer holds one piece plus what it has not handed out yet: at most a preamble or the headers
    # of one part, bounded like werkzeug's own parser bounds them.
    decoder = MultipartDecoder(boundary, None if limit is None else limit + piece, max_parts=request.max_form_parts)
    expected = request.content_length
    received = 0
    while True:
        chunk = stream.read(piece)
        if chunk:
            received += len(chunk)
            decoder.receive_data(chunk)
        else:
            # A server that terminates the input itself (gunicorn) answers a dropped client with a short body.
            if expected is not None and received < expected:
                raise ClientDisconnected()
            decoder.receive_data(None)
        while not isinstance(event := decoder.next_event(), NeedData):
            yield event
            if isinstance(event, Epilogue):
                return


def _part_charset(headers: Headers) -> str:
    # werkzeug's MultiPartParser.get_part_charset: a field's declared charset, from a short safe list.
    charset = parse_options_header(headers.get("content-type"))[1].get("charset", "").lower()
    return charset if charset in {"ascii", "us-ascii", "utf-8", "iso-8859-1"} else "utf-8"


def receive_artefact_form(request: Request, boundary: bytes, upload: StreamedUpload) -> dict[str, str]:
    """Parse an artefact upload's multipart body as it arrives: the first `file` part is fed to `upload` piece by
    piece (and `kind` as soon as it is complete, so an unknown kind stops the upload at once); returns the small
    fields, first value of each (as request.form.get would). Other file parts are read and dropped."""
    fields: dict[str, str] = {}
    in_file = False
    name: str | None = None  # the small field being read, None when its value is dropped
    value = bytearray()
    charset = "utf-8"
    field_bytes = 0
    limit = request.max_form_memory_size
    for event in iter_multipart(request, boundary):
        if isinstance(event, File):
            in_file = event.name == "file" and not upload.has_file
            name = None
            if in_file:
                upload.begin_file(event.filename)
        elif isinstance(event, Field):
            in_file = False
            name = event.name if event.name not in fields else None
            value = bytearray()
            charset = _part_charset(event.headers)
        elif isinstance(event, Data):
            if in_file:
                if event.data:
                    upload.write(event.data)
                if not event.more_data:
                    upload.end_file()
                    in_file = False
            elif name is not None:
                field_bytes += len(event.data)
                if limit is not None and field_bytes > limit:
                    raise RequestEntityTooLarge()
                value += event.data
                if not event.more_data:
                    fields[name] = value.decode(charset, "replace")
                    if name == "kind":
                        upload.set_kind(fields[name])
                    name = None
    return fields


def record_upload(session: Session, store: ArtefactStore, upload: Callable[[], Stored]) -> Stored:
    """Run an upload use case (which stores the object, then adds its row) as one unit of work, for REST and web
    alike. When the row cannot be committed the object is removed at once (if the store fails too, `itemgate
    fsck --repair` sweeps it after the grace period), and a database failure answers 503."""
    artefact: Stored | None = None
    key = version_id = None
    try:
        with unit_of_work(session):
            artefact = upload()
            key, version_id = artefact.key, artefact.version_id
    except Exception as exc:
        if artefact is None or key is None:
            raise
        try:
            store.delete(key, version_id)
        except Exception:  # noqa: BLE001 - the commit failure is what the caller must hear about
            logging.getLogger("itemgate.evidence").warning("orphan left for fsck: %s %s", key, version_id)
        if isinstance(exc, DBAPIError):
            raise ServiceUnavailable("the database could not record the upload; nothing was kept, try again",
                                     code="database_unavailable") from exc
        raise
    return artefact


def file_stream(upload: FileStorage) -> BinaryIO:
    """An uploaded file's stream, as the engine reads it: werkzeug types it loosely as IO[bytes], and what it holds
    is the binary file object the form parser spooled the part into."""
    return cast(BinaryIO, upload.stream)


def stream_length(stream: Any) -> int:
    """Bytes in an uploaded file's (spooled, seekable) stream, leaving its position where it was."""
    position = stream.tell()
    stream.seek(0, os.SEEK_END)
    size = stream.tell()
    stream.seek(position)
    return int(size)

"""Request parsing for uploads: every multipart file is hashed while werkzeug spools it (API and web forms)."""
from __future__ import annotations

from typing import Any

from flask import Request
from werkzeug.formparser import FormDataParser, MultiPartParser

from storage.artefact_store import HashingSpool


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


"""HTTP download helpers shared by the REST API and the web pages: filenames, streamed files and CSV."""
from __future__ import annotations

from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

from flask import Response, stream_with_context

XLSX = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"


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

"""Reading Word (.docx) and Excel (.xlsx) evidence in the browser: its text and tables, nothing executable."""
from __future__ import annotations

import io
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any

DOCX = "application/vnd.openxmlformats-officedocument.wordprocessingml.document"
XLSX = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
PREVIEWABLE_DOCUMENTS = (DOCX, XLSX)
MAX_BYTES = 20 * 1024 * 1024  # larger files are downloaded, not parsed in a request
MAX_PARAGRAPHS, MAX_TABLES, MAX_SHEETS, MAX_ROWS, MAX_COLS, MAX_CELL = 400, 40, 12, 300, 40, 500


@dataclass
class Block:
    """A paragraph (`text`) or a table (`rows`), in document order; `title` names a worksheet."""

    text: str | None = None
    rows: list[list[str]] = field(default_factory=list)
    title: str | None = None


@dataclass
class DocumentPreview:
    blocks: list[Block]
    truncated: bool = False


class NotPreviewable(ValueError):
    pass


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, datetime):
        return value.strftime("%Y-%m-%d %H:%M") if (value.hour or value.minute) else value.strftime("%Y-%m-%d")
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)[:MAX_CELL]


def _docx(data: bytes) -> DocumentPreview:
    import docx
    from docx.table import Table
    from docx.text.paragraph import Paragraph

    document = docx.Document(io.BytesIO(data))
    blocks: list[Block] = []
    truncated = False
    paragraphs = tables = 0
    for item in document.iter_inner_content():
        if isinstance(item, Paragraph):
            text = item.text.strip()
            if not text:
                continue
            paragraphs += 1
            if paragraphs > MAX_PARAGRAPHS:
                truncated = True
                break
            blocks.append(Block(text=text[:4000]))
        elif isinstance(item, Table):
            tables += 1
            if tables > MAX_TABLES:
                truncated = True
                break
            rows = [[_cell(c.text) for c in row.cells[:MAX_COLS]] for row in item.rows[:MAX_ROWS]]
            truncated = truncated or len(item.rows) > MAX_ROWS
            blocks.append(Block(rows=rows))
    return DocumentPreview(blocks, truncated)


def _xlsx(data: bytes) -> DocumentPreview:
    import openpyxl

    book = openpyxl.load_workbook(io.BytesIO(data), read_only=True, data_only=True)
    blocks: list[Block] = []
    truncated = len(book.worksheets) > MAX_SHEETS
    try:
        for sheet in book.worksheets[:MAX_SHEETS]:
            rows: list[list[str]] = []
            for n, row in enumerate(sheet.iter_rows(values_only=True)):
                if n >= MAX_ROWS:
                    truncated = True
                    break
                cells = [_cell(v) for v in row[:MAX_COLS]]
                while cells and not cells[-1]:
                    cells.pop()
                rows.append(cells)
            while rows and not rows[-1]:
                rows.pop()
            blocks.append(Block(rows=rows, title=sheet.title))
    finally:
        book.close()
    return DocumentPreview(blocks, truncated)


def document_preview(data: bytes, media_type: str) -> DocumentPreview:
    """Text and tables of a .docx, or each worksheet of a .xlsx (values, not formulas)."""
    kind = media_type.split(";")[0]
    if len(data) > MAX_BYTES:
        raise NotPreviewable("too large to preview")
    try:
        if kind == DOCX:
            return _docx(data)
        if kind == XLSX:
            return _xlsx(data)
    except Exception as exc:  # a damaged or odd file: offer the download instead
        raise NotPreviewable(str(exc)) from exc
    raise NotPreviewable(f"{kind} has no preview")

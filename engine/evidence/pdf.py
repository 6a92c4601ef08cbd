"""The one PDF toolkit (fpdf2) for everything ItemGate prints in Chinese: sign-off sheets
(engine/evidence/sheet_pdf.py) and
the monthly operations report (engine/usecases/monthly_report.py). It finds a CJK font on the machine and embeds it, so
the files read the same on any viewer; bold is drawn as fill + stroke of the one face (loading a second CJK face
would double the time a document takes)."""
from __future__ import annotations

import glob
import os
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from fpdf import FPDF
from fpdf.enums import Align, TextMode, WrapMode, XPos, YPos
from fpdf.fonts import FontFace

from engine.errors import ServiceUnavailable

# Debian's fonts-noto-cjk (installed by scripts/ensure-chromium.sh); others as fallbacks.
FONT_CANDIDATES = (
    "/usr/share/fonts/opentype/noto/NotoSansCJK-Regular.ttc",
    "/usr/share/fonts/opentype/noto/NotoSerifCJK-Regular.ttc",
    "/usr/share/fonts/opentype/noto/NotoSansCJKsc-Regular.otf",
    "/usr/share/fonts/truetype/wqy/wqy-zenhei.ttc",
    "/usr/share/fonts/truetype/arphic/uming.ttc",
)
FONT_GLOBS = ("/usr/share/fonts/**/Noto*CJK*Regular*.tt[cf]", "/usr/share/fonts/**/Noto*CJK*Regular*.otf")
FAMILY = "cjk"
MARGIN = 18


@dataclass(frozen=True)
class CjkFont:
    """A font file with Chinese glyphs and, for a collection (.ttc), which of its fonts to use."""

    path: str
    index: int


class FontMissing(ServiceUnavailable):
    code = "cjk_font_missing"


def _collection_index(path: str) -> int:
    """In a collection, the Simplified Chinese face (Noto's order is JP, KR, SC, TC, HK); 0 for a single font."""
    if not path.lower().endswith(".ttc"):
        return 0
    from fontTools.ttLib import TTCollection

    with TTCollection(path, lazy=True) as collection:
        for index, font in enumerate(collection.fonts):
            name = font["name"].getDebugName(1) or ""
            if name.endswith((" SC", "SC")) or "zenhei" in name.lower() or "uming" in name.lower():
                return index
    return 0


@lru_cache(maxsize=4)
def find_cjk_font(configured: str | None = None) -> CjkFont:
    """The font Chinese PDFs are printed in: `configured` (ITEMGATE_CJK_FONT) or the first installed candidate.
    Cached for speed only: which file it is depends on the machine, not on any state."""
    if configured:
        if not os.path.isfile(configured):
            raise FontMissing(f"ITEMGATE_CJK_FONT={configured} is not a file; Chinese PDFs (sign-off sheets, "
                              "monthly reports) cannot be printed")
        paths = [configured]
    else:
        paths = [p for p in FONT_CANDIDATES if os.path.isfile(p)]
        for pattern in FONT_GLOBS:
            paths += sorted(glob.glob(pattern, recursive=True))
    if not paths:
        raise FontMissing("no Chinese font is installed, so Chinese PDFs (sign-off sheets, monthly reports) cannot "
                          "be printed: install Debian's fonts-noto-cjk (bash scripts/ensure-chromium.sh does) or "
                          "set ITEMGATE_CJK_FONT to a .ttc/.otf/.ttf file with Chinese glyphs")
    return CjkFont(paths[0], _collection_index(paths[0]))


class CjkPdf(FPDF):
    """An A4 portrait page in mm with the CJK font embedded as family "cjk", and a few layout helpers."""

    def __init__(self, font: CjkFont, title: str) -> None:
        super().__init__(orientation="P", unit="mm", format="A4")
        self.set_margins(MARGIN, 16, MARGIN)
        self.set_auto_page_break(True, margin=MARGIN)
        self.set_title(title)
        self.set_creator("ItemGate")
        self.add_font(FAMILY, "", font.path, collection_font_number=font.index)
        self.set_line_width(0.15)
        self.use_style("", 10)

    def use_style(self, style: str, size: float) -> None:
        """The CJK face at `size` pt; style "B" draws it bold (fill + stroke)."""
        self.set_font(FAMILY, "", size)
        self.text_mode = TextMode.FILL_STROKE if style == "B" else TextMode.FILL

    def paragraph(self, text: str, size: float = 10, style: str = "", height: float = 6,
                  align: Align = Align.L) -> None:
        """A paragraph across the page width, wrapped at any character (Chinese has no spaces), then a new line."""
        self.use_style(style, size)
        self.multi_cell(self.epw, height, text, align=align, wrapmode=WrapMode.CHAR,
                        new_x=XPos.LMARGIN, new_y=YPos.NEXT)

    def heading(self, text: str, size: float = 12, align: Align = Align.L) -> None:
        self.paragraph(text, size, "B", size * 0.65, align)

    def grid(self, rows: Sequence[Sequence[Any]], widths: Sequence[float], *, header: bool = True,
             align: Sequence[str] | None = None, size: float = 9.5) -> None:
        """A bordered table across the page: `widths` are relative, `align` one of "L"/"C"/"R" per column; with
        `header` the first row is shaded and repeated on each page. Cells wrap at any character."""
        self.use_style("", size)
        shade = FontFace(emphasis=None, fill_color=(232, 232, 232))
        with self.table(col_widths=tuple(widths), width=self.epw, line_height=size * 0.55, padding=1.2,
                        wrapmode=WrapMode.CHAR, first_row_as_headings=header, headings_style=shade,
                        text_align="LEFT") as table:
            for number, cells in enumerate(rows):
                row = table.row()
                for column, value in enumerate(cells):
                    how = "C" if header and number == 0 else (align[column] if align else "L")
                    row.cell("" if value is None else str(value), align=Align.coerce(how))
        self.use_style("", 10)

    def to_bytes(self) -> bytes:
        return bytes(self.output())

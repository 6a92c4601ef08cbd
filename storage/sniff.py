"""Decides what an uploaded file really is from its bytes, and refuses anything outside the allow-list."""

from __future__ import annotations

import codecs
import os
import re
import struct
import zipfile
from dataclasses import dataclass
from typing import BinaryIO

PDF = "application/pdf"
DOCX = "application/vnd.openxmlformats-officedocument.wordprocessingml.document"
XLSX = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
DOC = "application/msword"
XLS = "application/vnd.ms-excel"
PNG = "image/png"
JPEG = "image/jpeg"
ZIP = "application/zip"
OFD = "application/ofd"
TEXT_UTF8 = "text/plain; charset=utf-8"
TEXT_GB18030 = "text/plain; charset=gb18030"

# How much of the start is examined; text checks look at exactly this much.
HEAD_BYTES = 64 * 1024
# Zip-bomb limits. Declared sizes are what a consumer would allocate for, so they are what we bound.
ZIP_MAX_ENTRIES = 10_000
ZIP_MAX_TOTAL_UNCOMPRESSED = 2 * 1024**3
ZIP_MAX_RATIO = 200
# Small members can legitimately compress very well (a page of spaces); the ratio only matters when
# the expanded size does.
ZIP_RATIO_MIN_SIZE = 1024 * 1024
# The central directory is parsed into memory; bound it before zipfile reads it.
ZIP_MAX_CENTRAL_DIRECTORY = 32 * 1024 * 1024
# What zipfile raises on archives it cannot parse or members it cannot read.
_ZIP_ERRORS = (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, EOFError, ValueError, NotImplementedError)
_ZIP_METHODS = {zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED, zipfile.ZIP_BZIP2, zipfile.ZIP_LZMA}

_EOCD = b"PK\x05\x06"
_EOCD_SIZE = 22
_ZIP64_LOCATOR = b"PK\x06\x07"
_ZIP64_EOCD = b"PK\x06\x06"
_CENTRAL_ENTRY = b"PK\x01\x02"

_OLE2 = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"
_EXECUTABLE_MAGIC = (
    b"MZ",  # PE / DOS
    b"\x7fELF",
    b"\xfe\xed\xfa\xce",  # Mach-O 32 (big/little endian) and 64
    b"\xce\xfa\xed\xfe",
    b"\xfe\xed\xfa\xcf",
    b"\xcf\xfa\xed\xfe",
    b"\xca\xfe\xba\xbe",  # Mach-O universal (also Java class files, equally unwanted)
)
# Bytes allowed in text below 0x20 (and DEL is refused too): tab, LF, form feed, CR.
_TEXT_CONTROLS_ALLOWED = frozenset(b"\t\n\f\r")
_BAD_TEXT_BYTES = bytes(b for b in range(0x20) if b not in _TEXT_CONTROLS_ALLOWED) + b"\x7f"


@dataclass(frozen=True)
class Sniffed:
    media_type: str
    extension: str  # without the dot, e.g. "pdf"; use it (not the uploader's) when naming downloads


class UnsupportedType(Exception):
    """The file is not one of the allowed types, or is dangerous or malformed."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def sniff(f: BinaryIO, filename: str) -> Sniffed:
    """Identify a seekable file by content; the filename only separates .doc from .xls (both OLE2)."""
    start = f.tell()
    try:
        return _sniff(f, start, _extension(filename))
    finally:
        f.seek(start)


def _extension(filename: str) -> str:
    return os.path.splitext(filename or "")[1].lower().lstrip(".")


def sniff_head(head: bytes, filename: str) -> Sniffed | None:
    """What the first HEAD_BYTES of a file (all of it, if shorter) decide on their own, for an upload that is
    still arriving: its type, or None for a zip archive (its central directory, at the end, decides), or
    UnsupportedType. `sniff` of the whole file then gives the same type or refuses (an appended zip, say)."""
    return _sniff_head(head[:HEAD_BYTES], _extension(filename))


def _sniff_head(head: bytes, ext: str) -> Sniffed | None:
    if not head:
        raise UnsupportedType("empty file")
    if head.startswith(_EXECUTABLE_MAGIC):
        raise UnsupportedType("executable file")
    if head.startswith((b"PK\x03\x04", b"PK\x05\x06")):
        return None
    if head.startswith(b"%PDF-"):
        return Sniffed(PDF, "pdf")
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return Sniffed(PNG, "png")
    if head.startswith(b"\xff\xd8\xff"):
        return Sniffed(JPEG, "jpg")
    if head.startswith(_OLE2):
        return _sniff_ole(ext)
    return _sniff_text(head, ext)


def _sniff(f: BinaryIO, start: int, ext: str) -> Sniffed:
    head = f.read(HEAD_BYTES)
    found = _sniff_head(head, ext)
    if found is None:
        return _sniff_zip(f, start, head)

    # A zip appended to another format opens as either, depending on the program: such polyglots are a
    # classic way to smuggle content past a type check, so none of the non-zip types may carry one.
    if _find_eocd(f, start) is not None:
        raise UnsupportedType(f"{found.extension} file that is also a zip archive (polyglot)")
    return found


def _sniff_ole(ext: str) -> Sniffed:
    # Word and Excel 97-2003 share the OLE2 container (as do .msi installers); telling them apart means
    # walking the container's directory, so the filename decides between the two allowed ones.
    if ext == "doc":
        return Sniffed(DOC, "doc")
    if ext == "xls":
        return Sniffed(XLS, "xls")
    raise UnsupportedType("OLE2 compound file is only accepted as .doc or .xls")


def _sniff_text(head: bytes, ext: str) -> Sniffed:
    if ext != "txt":
        # Plain text has no signature; accepting "text" under any name would let scripts (.bat, .js,
        # .html) through as harmless-looking text.
        raise UnsupportedType("unrecognised file type")
    complete = len(head) < HEAD_BYTES
    body = head[3:] if head.startswith(codecs.BOM_UTF8) else head
    if any(byte in _BAD_TEXT_BYTES for byte in body):
        raise UnsupportedType("text contains control or NUL bytes")
    media_type = None
    # UTF-8 first: ASCII and valid UTF-8 are far more common, and GB18030 would accept much of it too.
    # The sample may end inside a multi-byte character, so decode incrementally unless it is the whole file.
    for encoding, candidate in (("utf-8", TEXT_UTF8), ("gb18030", TEXT_GB18030)):
        try:
            codecs.getincrementaldecoder(encoding)().decode(body, final=complete)
        except UnicodeDecodeError:
            continue
        media_type = candidate
        break
    if media_type is None:
        raise UnsupportedType("text is neither UTF-8 nor GB18030")
    lead = body.lstrip(b" \t\r\n\f")
    # Markup that a browser or viewer might render or run (HTML, SVG, XML, PHP/ASP tags, comments).
    if lead[:1] == b"<" and (lead[1:2].isalpha() or lead[1:2] in (b"!", b"?", b"/", b"%")):
        raise UnsupportedType("markup (HTML/XML/script) is not accepted as text")
    if lead.startswith(b"#!"):
        raise UnsupportedType("script is not accepted as text")
    if lead.startswith(b"{\\rtf"):
        raise UnsupportedType("RTF is not accepted as text")
    return Sniffed(media_type, "txt")


@dataclass(frozen=True)
class _Eocd:
    offset: int  # where the end-of-central-directory record starts
    entries: int
    cd_size: int


def _find_eocd(f: BinaryIO, start: int) -> _Eocd | None:
    """Find a zip end-of-central-directory record that really points at a central directory.

    Zip readers locate an archive from its end, searching back over a comment of up to 64 KiB. Merely
    finding the 4-byte signature is not enough (compressed data can contain it), so the record must
    point to a central-directory entry, the way readers resolve it.
    """
    f.seek(0, os.SEEK_END)
    end = f.tell()
    tail_start = max(start, end - (_EOCD_SIZE + 0xFFFF))
    f.seek(tail_start)
    tail = f.read(end - tail_start)
    pos = tail.rfind(_EOCD)
    while pos >= 0:
        record = tail[pos : pos + _EOCD_SIZE]
        if len(record) == _EOCD_SIZE:
            # signature, disk numbers, entries on this disk, total entries, directory size and offset, comment
            entries, cd_size, cd_offset, comment_len = struct.unpack("<4x2x2x2xHIIH", record)
            absolute = tail_start + pos
            found = _check_eocd(f, start, absolute, entries, cd_size, cd_offset, comment_len, end)
            if found is not None:
                return found
        pos = tail.rfind(_EOCD, 0, pos)
    return None


def _check_eocd(
    f: BinaryIO, start: int, eocd: int, entries: int, cd_size: int, cd_offset: int, comment_len: int, end: int
) -> _Eocd | None:
    if eocd + _EOCD_SIZE + comment_len > end:
        return None
    # Writers may add zip64 records even when the classic fields do not overflow; readers then use them.
    zip64 = _read_zip64(f, start, eocd)
    if zip64 is not None:
        entries, cd_size = zip64
        cd_end = eocd - 20 - 56
    elif entries == 0xFFFF or cd_size == 0xFFFFFFFF or cd_offset == 0xFFFFFFFF:
        return None
    else:
        cd_end = eocd
    if entries == 0:
        return _Eocd(eocd, 0, 0) if cd_size == 0 else None
    # Readers find the directory at (end of directory - its size), which also covers prepended data.
    cd_start = cd_end - cd_size
    if cd_size <= 0 or cd_start < start:
        return None
    f.seek(cd_start)
    if f.read(4) != _CENTRAL_ENTRY:
        return None
    return _Eocd(eocd, entries, cd_size)


def _read_zip64(f: BinaryIO, start: int, eocd: int) -> tuple[int, int] | None:
    locator_at = eocd - 20
    if locator_at < start:
        return None
    f.seek(locator_at)
    locator = f.read(20)
    if len(locator) != 20 or not locator.startswith(_ZIP64_LOCATOR):
        return None
    record_at = locator_at - 56
    if record_at < start:
        return None
    f.seek(record_at)
    record = f.read(56)
    if len(record) != 56 or not record.startswith(_ZIP64_EOCD):
        return None
    entries, cd_size = struct.unpack("<32xQQ8x", record)
    return entries, cd_size


def _sniff_zip(f: BinaryIO, start: int, head: bytes) -> Sniffed:
    # PDF readers accept "%PDF" anywhere in the first KiB: a zip carrying it there is a polyglot.
    if b"%PDF" in head[:1024]:
        raise UnsupportedType("zip archive that is also a PDF (polyglot)")
    eocd = _find_eocd(f, start)
    if eocd is None:
        raise UnsupportedType("broken zip archive (no central directory)")
    if eocd.entries > ZIP_MAX_ENTRIES:
        raise UnsupportedType(f"zip archive has more than {ZIP_MAX_ENTRIES} entries")
    if eocd.cd_size > ZIP_MAX_CENTRAL_DIRECTORY:
        raise UnsupportedType("zip central directory is too large")
    f.seek(start)
    try:
        with zipfile.ZipFile(f) as archive:
            infos = archive.infolist()
            _check_members(infos)
            main_part = _ooxml_main_part(archive)
    except _ZIP_ERRORS as exc:
        raise UnsupportedType(f"broken zip archive ({exc})") from exc
    names = {info.filename.replace("\\", "/") for info in infos}
    is_ooxml = "[Content_Types].xml" in names
    if is_ooxml and any(name.lower().endswith("vbaproject.bin") for name in names):
        # A macro-enabled document (.docm/.xlsm) renamed: macros are the usual payload of office malware.
        raise UnsupportedType("office document with macros")
    if is_ooxml:
        # The package's own relationship names the main part; most producers use the usual names, but
        # some write e.g. word/document2.xml, so the conventional names are only the fallback.
        if (main_part or "").startswith("word/") or (main_part is None and "word/document.xml" in names):
            return Sniffed(DOCX, "docx")
        if (main_part or "").startswith("xl/") or (main_part is None and "xl/workbook.xml" in names):
            return Sniffed(XLSX, "xlsx")
    if "OFD.xml" in names:
        return Sniffed(OFD, "ofd")
    return Sniffed(ZIP, "zip")


def _check_members(infos: list[zipfile.ZipInfo]) -> None:
    if len(infos) > ZIP_MAX_ENTRIES:
        raise UnsupportedType(f"zip archive has more than {ZIP_MAX_ENTRIES} entries")
    total = 0
    for info in infos:
        if info.flag_bits & 0x1:
            raise UnsupportedType("encrypted zip archive")
        if info.compress_type not in _ZIP_METHODS:
            raise UnsupportedType(f"zip member uses unsupported compression {info.compress_type}")
        name = info.filename.replace("\\", "/")
        # Members that would escape the extraction directory ("zip slip").
        if name.startswith("/") or ".." in name.split("/") or (len(name) > 1 and name[1] == ":"):
            raise UnsupportedType(f"zip member with an unsafe path: {info.filename!r}")
        total += info.file_size
        if total > ZIP_MAX_TOTAL_UNCOMPRESSED:
            raise UnsupportedType("zip archive expands to more than the allowed size (zip bomb)")
        too_dense = info.file_size > ZIP_MAX_RATIO * max(info.compress_size, 1)
        if info.file_size >= ZIP_RATIO_MIN_SIZE and too_dense:
            raise UnsupportedType(f"zip member {info.filename!r} is compressed suspiciously well (zip bomb)")


_RELATIONSHIP = re.compile(rb"<(?:\w+:)?Relationship\b[^>]*>")
_ATTRIBUTE = re.compile(rb"""\b(Type|Target)\s*=\s*["']([^"']*)["']""")
_RELS_MAX = 256 * 1024


def _ooxml_main_part(archive: zipfile.ZipFile) -> str | None:
    """The target of the package's officeDocument relationship, e.g. "word/document.xml"."""
    try:
        info = archive.getinfo("_rels/.rels")
    except KeyError:
        return None
    if info.file_size > _RELS_MAX:
        return None
    # Bounded read: the declared size was checked, and read() never yields more than the declared size.
    with archive.open(info) as fh:
        rels = fh.read(_RELS_MAX + 1)
    # A regex, not an XML parser: this is untrusted input and only two attributes are needed.
    for element in _RELATIONSHIP.findall(rels):
        attributes = {name: value for name, value in _ATTRIBUTE.findall(element)}
        if attributes.get(b"Type", b"").endswith(b"/officeDocument"):
            return attributes.get(b"Target", b"").decode("utf-8", "replace").lstrip("/")
    return None

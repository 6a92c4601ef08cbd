"""Tests of content sniffing: real files of every allowed type pass, disguised and dangerous ones do not."""

from __future__ import annotations

import io
import os
import struct
import zipfile
import zlib

import openpyxl
import pytest

from storage import sniff as sniff_module
from storage.sniff import (
    DOC,
    DOCX,
    JPEG,
    OFD,
    PDF,
    PNG,
    TEXT_GB18030,
    TEXT_UTF8,
    XLS,
    XLSX,
    ZIP,
    Sniffed,
    UnsupportedType,
    sniff,
)

# --- builders of real files ------------------------------------------------------------------------


def make_pdf(text: str = "ItemGate") -> bytes:
    stream = f"BT /F1 24 Tf 72 720 Td ({text}) Tj ET".encode()
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R "
        b"/Resources << /Font << /F1 5 0 R >> >> >>",
        b"<< /Length %d >>\nstream\n" % len(stream) + stream + b"\nendstream",
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
    ]
    out = bytearray(b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n")
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % number + body + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % offset for offset in offsets)
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (len(objects) + 1, xref)
    return bytes(out)


def make_png(width: int = 4, height: int = 3) -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    rows = b"".join(b"\x00" + bytes([200, 30, 30]) * width for _ in range(height))
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
        + chunk(b"IDAT", zlib.compress(rows))
        + chunk(b"IEND", b"")
    )


def make_jpeg() -> bytes:
    """A decodable baseline JPEG: one 8x8 grey block (DC 0, all AC zero), one-code Huffman tables."""

    def segment(marker: int, payload: bytes) -> bytes:
        return struct.pack(">BBH", 0xFF, marker, len(payload) + 2) + payload

    app0 = segment(0xE0, b"JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00")
    dqt = segment(0xDB, b"\x00" + bytes([1] * 64))
    sof0 = segment(0xC0, struct.pack(">BHHB", 8, 8, 8, 1) + b"\x01\x11\x00")
    one_code = bytes([1] + [0] * 15) + b"\x00"  # one code of length 1 for symbol 0
    dht = segment(0xC4, b"\x00" + one_code + b"\x10" + one_code)
    sos = segment(0xDA, b"\x01\x01\x00\x00\x3f\x00")
    # Bits "0" (DC difference category 0) and "0" (AC end of block), padded with ones.
    return b"\xff\xd8" + app0 + dqt + sof0 + dht + sos + b"\x3f" + b"\xff\xd9"


CONTENT_TYPES = (
    '<?xml version="1.0" encoding="UTF-8"?><Types xmlns="http://schemas.openxmlformats.org/package/2006/'
    'content-types"><Default Extension="xml" ContentType="application/xml"/></Types>'
)


def rels(target: str) -> str:
    return (
        '<?xml version="1.0" encoding="UTF-8"?><Relationships xmlns="http://schemas.openxmlformats.org/'
        'package/2006/relationships"><Relationship Id="rId1" Type="http://schemas.openxmlformats.org/'
        f'officeDocument/2006/relationships/officeDocument" Target="{target}"/></Relationships>'
    )


def make_zip(members: dict[str, bytes | str], compression: int = zipfile.ZIP_DEFLATED) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return buf.getvalue()


def make_docx(main: str = "word/document.xml", extra: dict | None = None) -> bytes:
    members = {
        "[Content_Types].xml": CONTENT_TYPES,
        "_rels/.rels": rels(main),
        main: '<w:document xmlns:w="http://schemas.openxmlformats.org/wordprocessingml/2006/main">'
        "<w:body><w:p><w:r><w:t>功能设计文档</w:t></w:r></w:p></w:body></w:document>",
    }
    members.update(extra or {})
    return make_zip(members)


def make_xlsx() -> bytes:
    workbook = openpyxl.Workbook()
    sheet = workbook.active
    sheet.append(["事项", "渠道", "数量"])
    sheet.append(["户籍迁移", "pc", 3])
    buf = io.BytesIO()
    workbook.save(buf)
    return buf.getvalue()


def make_ofd() -> bytes:
    return make_zip(
        {
            "OFD.xml": '<?xml version="1.0" encoding="UTF-8"?><ofd:OFD xmlns:ofd="http://www.ofdspec.org/2016" '
            'Version="1.0" DocType="OFD"><ofd:DocBody><ofd:DocRoot>Doc_0/Document.xml</ofd:DocRoot>'
            "</ofd:DocBody></ofd:OFD>",
            "Doc_0/Document.xml": '<ofd:Document xmlns:ofd="http://www.ofdspec.org/2016"/>',
        }
    )


def make_ole() -> bytes:
    # A compound-file header (512-byte sectors, version 3) followed by empty sectors.
    header = bytearray(512)
    header[:8] = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"
    struct.pack_into("<HHHHH", header, 0x18, 0x3E, 3, 0xFFFE, 9, 6)
    return bytes(header) + b"\x00" * 1024


def check(data: bytes, filename: str) -> Sniffed:
    return sniff(io.BytesIO(data), filename)


def refused(data: bytes, filename: str) -> str:
    with pytest.raises(UnsupportedType) as excinfo:
        check(data, filename)
    return excinfo.value.reason


# --- accepted ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("make", "filename", "expected"),
    [
        (make_pdf, "设计.pdf", Sniffed(PDF, "pdf")),
        (make_png, "shot.png", Sniffed(PNG, "png")),
        (make_jpeg, "photo.JPG", Sniffed(JPEG, "jpg")),
        (make_docx, "功能设计.docx", Sniffed(DOCX, "docx")),
        (make_xlsx, "清单.xlsx", Sniffed(XLSX, "xlsx")),
        (lambda: make_zip({"a.txt": "a", "dir/b.pdf": make_pdf()}), "bundle.zip", Sniffed(ZIP, "zip")),
        (make_ofd, "确认单.ofd", Sniffed(OFD, "ofd")),
        (make_ole, "旧版.doc", Sniffed(DOC, "doc")),
        (make_ole, "OLD.XLS", Sniffed(XLS, "xls")),
    ],
    ids=["pdf", "png", "jpg", "docx", "xlsx", "zip", "ofd", "doc", "xls"],
)
def test_allowed_types_are_recognised(make, filename, expected) -> None:
    assert check(make(), filename) == expected


def test_content_decides_not_the_extension() -> None:
    # A PNG named .jpg is a PNG; the extension to use for downloads comes from the content.
    assert check(make_png(), "photo.jpg") == Sniffed(PNG, "png")
    assert check(make_pdf(), "report") == Sniffed(PDF, "pdf")


def test_docx_main_part_is_found_through_the_package_relationship() -> None:
    assert check(make_docx(main="word/document2.xml"), "x.docx") == Sniffed(DOCX, "docx")


def test_office_like_zip_without_a_known_main_part_is_a_plain_zip() -> None:
    pptx_like = make_zip(
        {
            "[Content_Types].xml": CONTENT_TYPES,
            "_rels/.rels": rels("ppt/presentation.xml"),
            "ppt/presentation.xml": "<p/>",
        }
    )
    assert check(pptx_like, "slides.pptx") == Sniffed(ZIP, "zip")


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        ("工作量说明：三个渠道。\nline two\tcol\r\n".encode(), TEXT_UTF8),
        (b"\xef\xbb\xbf" + "带BOM的文本\n".encode(), TEXT_UTF8),
        (b"plain ascii\f\n", TEXT_UTF8),
        ("国家标准GB18030编码的中文文本。\r\n".encode("gb18030"), TEXT_GB18030),
        (b"<3 is a heart, not markup\n", TEXT_UTF8),
        # 64 KiB boundary falls inside a 3-byte character: the sample must not be judged broken.
        (("中" * 30000).encode(), TEXT_UTF8),
        (("a" + "中" * 40000).encode("gb18030"), TEXT_GB18030),
    ],
    ids=["utf8", "utf8-bom", "ascii", "gb18030", "lt-not-markup", "utf8-cut-at-64k", "gb18030-cut-at-64k"],
)
def test_text(data: bytes, expected: str) -> None:
    assert check(data, "说明.txt") == Sniffed(expected, "txt")


def test_position_is_restored() -> None:
    data = b"junk" + make_png()
    f = io.BytesIO(data)
    f.seek(4)
    assert sniff(f, "a.png") == Sniffed(PNG, "png")
    assert f.tell() == 4
    refused_file = io.BytesIO(b"MZ" + b"\x00" * 100)
    with pytest.raises(UnsupportedType):
        sniff(refused_file, "a.pdf")
    assert refused_file.tell() == 0


def test_zip64_archive_is_read(monkeypatch) -> None:
    # Force the zip64 end records (normally only written past 65535 entries or 4 GiB).
    monkeypatch.setattr(zipfile, "ZIP_FILECOUNT_LIMIT", 1)
    data = make_zip({"a.txt": "a", "b.txt": "b", "OFD.xml": "<ofd/>"})
    assert b"PK\x06\x06" in data
    assert check(data, "x.ofd") == Sniffed(OFD, "ofd")


def test_sniffing_a_real_file_on_disk(tmp_path) -> None:
    path = tmp_path / "upload.bin"
    path.write_bytes(make_xlsx())
    with open(path, "rb") as fh:
        assert sniff(fh, "统计.xlsx") == Sniffed(XLSX, "xlsx")
        assert fh.tell() == 0


# --- refused ----------------------------------------------------------------------------------------


def test_windows_executable_renamed_pdf_is_refused() -> None:
    pe = b"MZ\x90\x00" + b"\x00" * 56 + struct.pack("<I", 64) + b"PE\x00\x00" + os.urandom(400)
    assert "executable" in refused(pe, "invoice.pdf")


def test_elf_is_refused() -> None:
    elf = b"\x7fELF\x02\x01\x01" + b"\x00" * 9 + os.urandom(200)
    assert "executable" in refused(elf, "notes.txt")


def test_zip_bomb_is_refused() -> None:
    bomb = make_zip({"readme.txt": "hi", "payload.bin": b"\x00" * (50 * 1024 * 1024)})
    assert len(bomb) < 200 * 1024
    assert "zip bomb" in refused(bomb, "data.zip")


def test_zip_declaring_too_much_in_total_is_refused(monkeypatch) -> None:
    monkeypatch.setattr(sniff_module, "ZIP_MAX_TOTAL_UNCOMPRESSED", 1000)
    assert "zip bomb" in refused(make_zip({f"{i}.txt": os.urandom(300) for i in range(4)}), "a.zip")


def test_zip_with_too_many_entries_is_refused() -> None:
    many = make_zip({f"f{i}": b"" for i in range(10_001)}, compression=zipfile.ZIP_STORED)
    assert "entries" in refused(many, "many.zip")


def test_pdf_zip_polyglot_is_refused() -> None:
    polyglot = make_pdf() + make_zip({"evil.html": "<script>alert(1)</script>"})
    assert "polyglot" in refused(polyglot, "report.pdf")


def test_zip_starting_like_a_pdf_is_refused() -> None:
    data = make_zip({"%PDF-1.4.txt": "x"}, compression=zipfile.ZIP_STORED)
    assert "polyglot" in refused(data, "a.zip")


def test_png_with_appended_zip_is_refused() -> None:
    assert "polyglot" in refused(make_png() + make_zip({"a.txt": "a"}), "a.png")


def test_zip_signature_inside_other_content_is_not_a_polyglot() -> None:
    # Only a record that points at a real central directory counts.
    assert check(make_pdf("PK\x05\x06 mentioned in text"), "a.pdf") == Sniffed(PDF, "pdf")


@pytest.mark.parametrize(
    "text",
    [
        "<html><body>hi</body></html>",
        "  \n<!DOCTYPE html><p>x</p>",
        "<script>alert(1)</script>",
        "<svg xmlns='http://www.w3.org/2000/svg' onload='alert(1)'/>",
        "<?xml version='1.0'?><a/>",
        "<!-- comment --><b>x</b>",
        "<?php system($_GET['c']); ?>",
        "\ufeff<html></html>",
    ],
)
def test_markup_named_txt_is_refused(text: str) -> None:
    assert "markup" in refused(text.encode(), "notes.txt")


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"#!/bin/sh\nrm -rf /\n", "script"),
        (b"{\\rtf1\\ansi hello}", "RTF"),
        (b"text with a NUL\x00 byte", "control"),
        (b"ansi \x1b[31mred\x1b[0m", "control"),
        (bytes(range(256)) * 4, "control"),
        (b"\xff\xfeu\x00t\x00f\x001\x006\x00", "control"),
        (b"\x81\x30\x81", "neither"),
    ],
    ids=["shebang", "rtf", "nul", "escape", "binary", "utf16", "invalid-gb18030"],
)
def test_bad_text_is_refused(data: bytes, reason: str) -> None:
    assert reason in refused(data, "a.txt")


def test_text_needs_a_txt_name() -> None:
    assert "unrecognised" in refused(b"echo hello\r\n", "run.bat")
    assert "unrecognised" in refused(b"plain words", "README")


def test_ole_needs_doc_or_xls_name() -> None:
    assert "OLE2" in refused(make_ole(), "setup.msi")
    assert "OLE2" in refused(make_ole(), "slides.ppt")


def test_encrypted_zip_is_refused() -> None:
    # zipfile cannot write ZipCrypto, so set the "encrypted" flag in both headers by hand.
    data = bytearray(make_zip({"secret.txt": os.urandom(40)}, compression=zipfile.ZIP_STORED))
    local, central = data.find(b"PK\x03\x04"), data.find(b"PK\x01\x02")
    data[local + 6] |= 0x1
    data[central + 8] |= 0x1
    assert zipfile.ZipFile(io.BytesIO(bytes(data))).infolist()[0].flag_bits & 0x1
    assert "encrypted" in refused(bytes(data), "a.zip")


def test_broken_zip_is_refused() -> None:
    assert "broken" in refused(b"PK\x03\x04" + os.urandom(300), "a.zip")
    truncated = make_docx()[:-30]
    assert "broken" in refused(truncated, "a.docx")


def test_zip_slip_is_refused() -> None:
    assert "unsafe path" in refused(make_zip({"../../etc/cron.d/x": "x"}), "a.zip")
    assert "unsafe path" in refused(make_zip({"/abs/path": "x"}), "a.zip")


def test_macro_document_renamed_docx_is_refused() -> None:
    docm = make_docx(extra={"word/vbaProject.bin": os.urandom(64)})
    assert "macros" in refused(docm, "a.docx")


def test_empty_and_unknown_files_are_refused() -> None:
    assert "empty" in refused(b"", "a.pdf")
    assert "unrecognised" in refused(b"\x00\x01" + os.urandom(256), "a.bin")
    assert "unrecognised" in refused(b"GIF89a" + b"\x00" * 20, "a.gif")


# --- the head alone, for uploads still arriving ----------------------------------------------------


@pytest.mark.parametrize(
    "data, filename",
    [
        (make_pdf(), "a.pdf"),
        (make_png(), "a.png"),
        (make_jpeg(), "a.jpg"),
        (make_ole(), "a.doc"),
        ("第一行\n".encode() * 20_000, "notes.txt"),  # longer than the head: decoded as a cut sample
        (make_docx(), "a.docx"),
        (make_pdf() + make_zip({"x.txt": "x"}), "polyglot.pdf"),
        (b"MZ\x90\x00" + b"\x00" * 200, "letter.pdf"),
        (b"<html><script>1</script></html>", "a.txt"),
        (make_ole(), "a.msi"),
        (b"", "empty.pdf"),
    ],
    # Named by filename: zips made at collection time carry the clock in their headers, so ids made from the bytes
    # differ between xdist workers whenever a second ticks over between their collections.
    ids=lambda value: value if isinstance(value, str) else "",
)
def test_head_agrees_with_the_whole_file(data: bytes, filename: str) -> None:
    """The head's verdict is the whole file's, except that only the whole file shows a zip's type or an appended
    zip: a head refusal is the same refusal, and a head type is the type unless the whole file is refused."""
    from storage.sniff import HEAD_BYTES, sniff_head

    try:
        whole: Sniffed | str = sniff(io.BytesIO(data), filename)
    except UnsupportedType as exc:
        whole = exc.reason
    try:
        head: Sniffed | str | None = sniff_head(data[:HEAD_BYTES], filename)
    except UnsupportedType as exc:
        head = exc.reason
    if isinstance(head, str):
        assert whole == head
    elif head is None:
        assert data.startswith(b"PK")
    else:
        assert whole == head or isinstance(whole, str)

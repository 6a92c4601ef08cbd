"""Word and Excel evidence read in the browser (text and tables); OFD downloads with its own name."""
from __future__ import annotations

import io
import zipfile
from typing import Any


def _docx() -> bytes:
    import docx

    document = docx.Document()
    document.add_paragraph("功能设计说明：办件材料字段")
    table = document.add_table(rows=2, cols=2)
    table.cell(0, 0).text, table.cell(0, 1).text = "字段", "说明"
    table.cell(1, 0).text, table.cell(1, 1).text = "身份证号", "必填"
    out = io.BytesIO()
    document.save(out)
    return out.getvalue()


def _xlsx() -> bytes:
    import openpyxl

    book = openpyxl.Workbook()
    sheet = book.active
    sheet.title = "梳理清单"
    sheet.append(["事项", "材料数"])
    sheet.append(["居民身份证换领", 3])
    out = io.BytesIO()
    book.save(out)
    return out.getvalue()


def _ofd() -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as archive:
        archive.writestr("OFD.xml", '<?xml version="1.0"?><ofd:OFD xmlns:ofd="http://www.ofdspec.org/2016"/>')
        archive.writestr("Doc_0/Document.xml", "<Document/>")
    return out.getvalue()


def test_docx_and_xlsx_read_in_the_browser_and_ofd_downloads_by_name(world: Any) -> None:
    from tests.test_web import Browser

    item_id = world.new_item("SH-PREVIEW-1")["id"]
    ids = {}
    for kind, name, body in (("requirement_letter", "需求函.docx", _docx()),
                             ("complexity_statement", "复杂度.xlsx", _xlsx()),
                             ("survey_form", "调研表.ofd", _ofd())):
        r = world.upload("impl", item_id, kind, body=body, filename=name)
        assert r.status_code == 201, r.get_json()
        ids[name] = r.get_json()["id"]
    browser = Browser(world.app, "rev_a")
    page = browser.get(f"/artefacts/{ids['需求函.docx']}/preview").get_data(as_text=True)
    assert "功能设计说明：办件材料字段" in page and "身份证号" in page and "<td>必填</td>" in page
    page = browser.get(f"/artefacts/{ids['复杂度.xlsx']}/preview").get_data(as_text=True)
    assert "梳理清单" in page and "居民身份证换领" in page and "<td>3</td>" in page
    page = browser.get(f"/artefacts/{ids['调研表.ofd']}/preview").get_data(as_text=True)
    assert 'id="no-preview"' in page
    r = browser.get(f"/artefacts/{ids['调研表.ofd']}")
    assert r.status_code == 200 and "attachment" in r.headers["Content-Disposition"]
    assert "%E8%B0%83%E7%A0%94%E8%A1%A8.ofd" in r.headers["Content-Disposition"]
    # The item page offers the previews and names the OFD download.
    page = browser.get(f"/items/{item_id}").get_data(as_text=True)
    assert f"/artefacts/{ids['需求函.docx']}/preview" in page and 'download="调研表.ofd"' in page

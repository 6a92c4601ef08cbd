"""Plain Chinese everywhere: every page each role reaches, and every export, rendered in Chinese, carries no code
words (approved, first_review_approve, gathered …) and no untranslated English sentence."""
from __future__ import annotations

import io
import re
from typing import Any

import pytest

from tests.browser.test_phone import crawl, sign_in

pytestmark = [
    pytest.mark.browser,
    pytest.mark.parametrize("backend", ["sqlite"], indirect=True),
]

# Words the code uses that people must never read: states, note kinds, engine details.
CODE_WORDS = re.compile(
    r"\b(approved|approve|opened|submitted|revising|draft|first_review\w*|final_\w+|gathered|returned|accepted|"
    r"audit_\w+|ready|cancelled|completed|active|pending|null|None|True|False|not accepted|this file type)\b")
SNAKE = re.compile(r"\b[a-z]+_[a-z_]+\b")  # an identifier: go_live, survey_form, task_not_ready …
ENGLISH = re.compile(r"\b[A-Za-z]{2,}(?:[ ,']+[A-Za-z]{2,}){3,}\b")  # four English words in a row

# Visible text of the page, leaving out what is rightly not Chinese: codes, checksums, file names, the language
# switch, the product name, and the process diagram (model text, drawn as is).
VISIBLE_TEXT_JS = """() => {
  const body = document.body.cloneNode(true);
  body.querySelectorAll('code, .code, .sha, svg, script, style, [lang=en], .brand, .gate-file, '
                        + 'a[href*="/artefacts/"], .sr-only, option').forEach(e => e.remove());
  return body.innerText;
}"""


def problems_in(text: str, where: str) -> list[str]:
    found = []
    for pattern in (CODE_WORDS, SNAKE, ENGLISH):
        for match in pattern.finditer(text):
            found.append(f"{where}: {match.group(0)!r} in …{text[max(0, match.start() - 30):match.end() + 30]!r}")
    return found


def xlsx_text(data: bytes) -> str:
    import openpyxl

    book = openpyxl.load_workbook(io.BytesIO(data), read_only=True)
    cells = []
    for sheet in book.worksheets:
        cells.append(sheet.title)
        for row in sheet.iter_rows(values_only=True):
            cells += [str(v) for v in row if isinstance(v, str)]
    book.close()
    # Item codes, filenames and checksums in a sheet are data, not words.
    return "\n".join(c for c in cells if not re.fullmatch(r"[\w.-]+\.(pdf|docx|xlsx|ofd|png|jpg|zip)|[0-9a-f]{64}|"
                                                         r"[A-Z]+(-[A-Z0-9]+)+", c))


@pytest.mark.parametrize("username", ["impl", "rev_ga", "pm", "auditor", "buyer", "admin"])
def test_every_page_and_export_is_plain_chinese(chromium: Any, live_url: str, demo_world: dict[str, str],
                                                username: str) -> None:
    context = chromium.new_context(viewport={"width": 1366, "height": 768}, locale="zh-CN", base_url=live_url)
    context.set_default_timeout(15_000)
    page = context.new_page()
    try:
        sign_in(page, username, demo_world[username])
        found: list[str] = []
        urls = crawl(page)
        for url in urls:
            page.goto(url)
            found += problems_in(page.evaluate(VISIBLE_TEXT_JS), url)
        # The documents people take away: the claim sheet (with its review trail) and the workload sheets.
        exports = [a for a in page.context.request.get(f"{live_url}/settlements").text().split('"')
                   if re.fullmatch(r"/settlements/\d+", a)][:1]
        for path in [f"{p}/claim.xlsx" for p in exports] + ["/exports/workload.xlsx"]:
            r = page.context.request.get(f"{live_url}{path}")
            if r.status == 200:
                found += problems_in(xlsx_text(r.body()), path)
        r = page.context.request.get(f"{live_url}/exports/workload.csv")
        if r.status == 200:
            text = r.body().decode("utf-8-sig")
            found += problems_in(re.sub(r"[A-Z]+(-[A-Z0-9]+)+", "", text), "/exports/workload.csv")
        assert urls and not found, "\n".join(found[:40])
    finally:
        context.close()


def test_the_scan_can_fail(backend: str) -> None:
    assert problems_in("状态 approved", "x") and problems_in("gathered 5 entries", "x")
    assert problems_in("上传失败：this file type is not accepted", "x") and problems_in("环节 go_live", "x")
    assert not problems_in("已审定（锁定） SH-GA-0001 PC端 XLSX", "x")

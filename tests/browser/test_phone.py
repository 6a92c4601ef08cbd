"""Every page, for every role, on a phone (390×844): nothing wider than the screen, the primary action reachable.

The pages are found by following the links each role sees from its inbox, so pages other modules add are
covered as soon as they are linked. Screenshots at 390×844 and 1366×768 go to ITEMGATE_SHOTS (default
tests/screenshots/phone) for people to look at. SQLite only: this exercises layout, not the database."""
from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from tests.browser.conftest import SCREENSHOTS

pytestmark = [
    pytest.mark.browser,
    pytest.mark.parametrize("backend", ["sqlite"], indirect=True),
]

PHONE = {"width": 390, "height": 844}
DESKTOP = {"width": 1366, "height": 768}
TIMEOUT_MS = 15_000
START = ["/inbox", "/inbox?scope=group", "/inbox?scope=all", "/items", "/dashboard", "/settlements", "/ledger",
         "/exports"]
# Links that download, sign out or change something are not pages to look at.
SKIP = re.compile(r"(/artefacts/|\.xlsx|\.csv|\.zip|\.pdf|/download|/file$|/logout|/content|lang=|/api/)")
MAX_PAGES = 40

# Elements wider than the viewport (or sticking out of it), outside any scrolling box; and the page's own width.
OVERFLOW_JS = """() => {
  const W = document.documentElement.clientWidth;
  const out = [];
  const SW = document.documentElement.scrollWidth;
  if (SW > W + 1) out.push('page scrollWidth ' + SW);
  for (const el of document.querySelectorAll('body *')) {
    const r = el.getBoundingClientRect();
    if (r.width <= 1 || r.height <= 1) continue;
    let p = el.parentElement, clipped = false;
    while (p && p !== document.body) {
      const o = getComputedStyle(p).overflowX;
      if (o === 'auto' || o === 'scroll' || o === 'hidden' || o === 'clip') { clipped = true; break; }
      p = p.parentElement;
    }
    if (clipped) continue;
    if (r.right > W + 1 || r.left < -1) {
      out.push(el.tagName.toLowerCase() + (el.id ? '#' + el.id : '') +
               (el.className && typeof el.className === 'string' ? '.' + el.className.split(' ').join('.') : '') +
               ' [' + Math.round(r.left) + '..' + Math.round(r.right) + ']');
    }
  }
  return out.slice(0, 10);
}"""


def shots_dir() -> Path:
    path = Path(os.environ.get("ITEMGATE_SHOTS") or SCREENSHOTS / "phone")
    path.mkdir(parents=True, exist_ok=True)
    return path


def sign_in(page: Any, username: str, password: str) -> None:
    page.goto("/login")
    page.get_by_label("用户名").fill(username)
    page.get_by_label("密码").fill(password)
    page.get_by_role("button", name="登录").click()
    page.wait_for_url(re.compile(r"/inbox"))


def pattern(url: str) -> str:
    parts = urlsplit(url)
    scope = re.search(r"scope=\w+", parts.query or "")
    return re.sub(r"\d+", "N", parts.path) + (f"?{scope.group(0)}" if scope else "")


def crawl(page: Any) -> list[str]:
    """Pages this user reaches by following links: one URL per page kind (ids folded)."""
    seen: dict[str, str] = {}
    queue = list(START)
    while queue and len(seen) < MAX_PAGES:
        url = queue.pop(0)
        key = pattern(url)
        if key in seen or SKIP.search(url):
            continue
        try:
            response = page.goto(url)
        except Exception as exc:  # a link that downloads a file is not a page
            if "Download is starting" in str(exc):
                continue
            raise
        if response is None or response.status in (403, 404):
            continue
        seen[key] = url
        links = "els => els.map(e => e.getAttribute('href'))"
        for href in page.eval_on_selector_all("a[href^='/']:not([download])", links):
            href = href.split("#")[0]
            if href and not SKIP.search(href) and pattern(href) not in seen:
                queue.append(href)
    return list(seen.values())


def check_page(page: Any, url: str) -> list[str]:
    problems = [f"{url}: {p}" for p in page.evaluate(OVERFLOW_JS)]
    primary = page.locator("main button.primary:visible, main button[type=submit]:visible").first
    if primary.count():
        primary.scroll_into_view_if_needed()
        box = primary.bounding_box()
        if box is None or box["x"] < 0 or box["x"] + box["width"] > PHONE["width"] + 1:
            problems.append(f"{url}: primary action off screen {box}")
        elif not primary.is_disabled():
            primary.click(trial=True)  # visible, stable and not covered by anything
    return problems


@pytest.mark.parametrize("username", ["impl", "rev_ga", "pm", "auditor", "buyer", "admin"])
def test_every_page_fits_a_phone(chromium: Any, live_url: str, demo_world: dict[str, str], username: str) -> None:
    context = chromium.new_context(viewport=PHONE, locale="zh-CN", base_url=live_url, is_mobile=True,
                                   has_touch=True, device_scale_factor=1)
    context.set_default_timeout(TIMEOUT_MS)
    page = context.new_page()
    try:
        sign_in(page, username, demo_world[username])
        urls = crawl(page)
        assert any("/tasks/" in u for u in urls) or username in ("buyer", "admin", "auditor"), urls
        problems: list[str] = []
        shots = shots_dir()
        for url in urls:
            page.goto(url)
            problems += check_page(page, url)
            name = re.sub(r"[^\w]+", "_", pattern(url)).strip("_")
            page.screenshot(path=str(shots / f"{username}-{name}-390.png"), full_page=True)
        assert not problems, "\n".join(problems)
        # The same pages on a desktop, for comparison.
        page.set_viewport_size(DESKTOP)
        for url in urls:
            page.goto(url)
            name = re.sub(r"[^\w]+", "_", pattern(url)).strip("_")
            page.screenshot(path=str(shots / f"{username}-{name}-1366.png"), full_page=False)
    finally:
        context.close()


def test_login_and_error_pages_fit_a_phone(chromium: Any, live_url: str, demo_world: dict[str, str]) -> None:
    context = chromium.new_context(viewport=PHONE, locale="zh-CN", base_url=live_url, is_mobile=True)
    page = context.new_page()
    try:
        page.goto("/login")
        assert page.evaluate(OVERFLOW_JS) == []
        sign_in(page, "impl", demo_world["impl"])
        page.goto("/items/999999")
        assert page.evaluate(OVERFLOW_JS) == []
    finally:
        context.close()

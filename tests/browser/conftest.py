"""Browser-test set-up: Debian's Chromium driven by Playwright, and the app served from a thread."""
from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import date
from pathlib import Path
from typing import Any

import pytest

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
VIEWPORT = {"width": 1366, "height": 768}
SCREENSHOTS = Path(__file__).resolve().parents[1] / "screenshots"


@pytest.fixture(scope="module")
def chromium() -> Iterator[Any]:
    """One headless Chromium per module; its Playwright driver (and event loop) ends with the module."""
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} is not installed (make test installs it with scripts/ensure-chromium.sh)")
    from playwright.sync_api import sync_playwright

    manager = sync_playwright()
    playwright = manager.start()
    try:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()
    finally:
        manager.__exit__(None, None, None)


@pytest.fixture(scope="module")
def live_url(app_for_backend: Any) -> Iterator[str]:
    """The app on a free loopback port, served by werkzeug from a thread of this process."""
    from werkzeug.serving import make_server

    server = make_server("127.0.0.1", 0, app_for_backend, threaded=True)
    thread = threading.Thread(target=server.serve_forever, name="itemgate-live", daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        thread.join(timeout=10)
        server.server_close()


@pytest.fixture
def screenshot_dir() -> Path:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    return SCREENSHOTS


@pytest.fixture(scope="module")
def demo_world(app_for_backend: Any) -> dict[str, str]:
    """The `itemgate demo` data plus one settlement, so every kind of page has something on it."""
    from api.demo import DEMO_PASSWORD, USERS, load_demo
    from api.extensions import db
    from engine.usecases import settlement as st
    from engine.usecases.tasks import Ctx
    from storage.models import User
    from tests.conftest import truncate_all

    truncate_all(app_for_backend)
    with app_for_backend.app_context():
        store = app_for_backend.extensions.get("itemgate_store")
        load_demo(app_for_backend, store, echo=lambda _text: None)
        pm = db.session.query(User).filter_by(username="pm").one()
        from tests.settlement_helpers import adhoc_contract

        adhoc_contract("SH-YWTB-2025")  # one claim over the whole demo period, whatever the schedule
        st.open_settlement(Ctx(session=db.session, user=pm, store=store), "SH-YWTB-2025", date(2020, 1, 1),
                           date(2030, 12, 31), "2025 年上半年")
        db.session.commit()
    return {u: DEMO_PASSWORD for u, *_ in USERS}

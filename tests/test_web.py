"""Web inbox routes through the Flask test client: login, CSRF, scope, the task page, dashboard, i18n."""
from __future__ import annotations

import ast
import hashlib
import io
import re
from datetime import timedelta
from pathlib import Path

from flask import g
from sqlalchemy import select

from api.extensions import db
from tests.conftest import PASSWORD
from tests.test_lifecycle_api import drive_to_survey_review

HTML = {"Accept": "text/html,application/xhtml+xml"}
ROOT = Path(__file__).resolve().parents[1]


def csrf_of(html: str) -> str:
    match = re.search(r'name="csrf_token" value="([^"]+)"', html) or re.search(
        r'name="csrf-token" content="([^"]+)"', html)
    assert match, "no CSRF token on the page"
    return match.group(1)


class Browser:
    """A signed-in web session: a test client that carries cookies and the page's CSRF token."""

    def __init__(self, app, username: str | None = None, password: str = PASSWORD):
        self.client = app.test_client()
        self.token = ""
        if username:
            r = self.login(username, password)
            assert r.status_code == 302, r.get_data(as_text=True)
            self.get(r.headers["Location"])  # the session is new after sign-in: so is its CSRF token

    @staticmethod
    def _fresh_g():
        # The `app` fixture holds one app context for the whole test, so `g` (where Flask-Login caches the
        # user, Flask-WTF the token and Flask-Babel the locale) would leak between requests and clients.
        for key in list(g.__dict__):
            g.pop(key)

    def get(self, url: str, **kw):
        self._fresh_g()
        r = self.client.get(url, headers=HTML, **kw)
        if r.mimetype == "text/html" and 'name="csrf-token"' in r.get_data(as_text=True):
            self.token = csrf_of(r.get_data(as_text=True))
        return r

    def post(self, url: str, data: dict | None = None, csrf: bool = True, **kw):
        data = dict(data or {})
        if csrf:
            data.setdefault("csrf_token", self.token)
        self._fresh_g()
        return self.client.post(url, data=data, headers=HTML, **kw)

    def login(self, username: str, password: str):
        self.get("/login")
        return self.post("/login", {"username": username, "password": password})


def test_login_failure_does_not_say_which_half(world, app):
    b = Browser(app)
    wrong_password = b.login("impl", "not-the-password")
    unknown_user = b.login("nobody", PASSWORD)
    for r in (wrong_password, unknown_user):
        assert r.status_code == 401
        body = r.get_data(as_text=True)
        assert "用户名或密码错误" in body
        assert "nobody" not in body.replace('value="nobody"', "")
    # Pages behind the login send you to it.
    r = b.get("/inbox")
    assert r.status_code == 302 and "/login" in r.headers["Location"]


def test_login_sets_a_timed_session_and_logout_ends_it(world, app):
    assert app.config["PERMANENT_SESSION_LIFETIME"] == timedelta(minutes=app.config["ITEMGATE"].session_minutes)
    b = Browser(app, "impl")
    cookie = b.client.get_cookie("session")
    assert cookie is not None and cookie.http_only and cookie.expires is not None
    assert b.get("/inbox").status_code == 200
    r = b.post("/logout")
    assert r.status_code == 302
    assert b.get("/inbox").status_code == 302


def test_csrf_token_missing_is_refused(world, app):
    item_id = world.new_item("SH-CSRF")["id"]
    intake = world.task_named(item_id, "intake")
    b = Browser(app, "impl")
    b.get("/inbox")
    r = b.post(f"/tasks/{intake['id']}/claim", csrf=False)
    assert r.status_code == 400
    assert r.mimetype == "text/html"
    assert "安全令牌" in r.get_data(as_text=True)
    assert world.task_named(item_id, "intake")["assignee"] is None
    r = b.post(f"/tasks/{intake['id']}/claim", {"csrf_token": "forged"})
    assert r.status_code == 400
    # The bearer-token API is not subject to the web's CSRF check.
    assert world.post("impl", f"/api/v1/tasks/{intake['id']}/claim").status_code == 200


def test_reviewer_of_another_department_gets_404(world, app):
    item_id = world.new_item("SH-SCOPE", department="DA")["id"]
    drive_to_survey_review(world, item_id)
    review = world.task_named(item_id, "confirm_survey")
    other = Browser(app, "rev_b")
    for url in (f"/items/{item_id}", f"/tasks/{review['id']}"):
        r = other.get(url)
        assert r.status_code == 404 and r.mimetype == "text/html"
        assert "事项 SH-SCOPE" not in r.get_data(as_text=True)
    assert "SH-SCOPE" not in other.get("/items").get_data(as_text=True)
    assert "SH-SCOPE" not in other.get("/inbox?scope=group").get_data(as_text=True)
    own = Browser(app, "rev_a")
    assert own.get(f"/items/{item_id}").status_code == 200
    inbox = own.get("/inbox").get_data(as_text=True)
    assert "部门确认调研梳理结果" in inbox and "SH-SCOPE" in inbox


def test_task_page_gate_upload_and_complete(world, app):
    item_id = world.new_item("SH-WEB-1")["id"]
    intake = world.task_named(item_id, "intake")
    b = Browser(app, "impl")
    r = b.post(f"/tasks/{intake['id']}/claim")
    assert r.status_code == 302
    page = b.get(f"/tasks/{intake['id']}").get_data(as_text=True)
    assert "需求函" in page and "缺少" in page
    assert re.search(r'id="complete-button"[^>]*disabled', page)

    # Completing anyway is refused by the engine's gate, shown on the page.
    r = b.post(f"/tasks/{intake['id']}/complete", {"summary": "x"})
    assert r.status_code == 422
    assert "以下交付物尚未上传" in r.get_data(as_text=True)

    from api.demo import demo_pdf

    for kind in ("requirement_letter", "complexity_statement"):
        b._fresh_g()
        r = b.client.post(f"/items/{item_id}/artefacts", headers={"Accept": "application/json",
                                                                  "X-CSRFToken": b.token},
                          data={"kind": kind, "task_id": str(intake["id"]),
                                "file": (io.BytesIO(demo_pdf(kind)), f"{kind}.pdf")},
                          content_type="multipart/form-data")
        assert r.status_code == 201, r.get_data(as_text=True)
        assert r.get_json()["kind"] == kind
    # A type the store refuses comes back as problem JSON to the uploading script.
    b._fresh_g()
    r = b.client.post(f"/items/{item_id}/artefacts", headers={"Accept": "application/json",
                                                              "X-CSRFToken": b.token},
                      data={"kind": "survey_form", "file": (io.BytesIO(b"MZ\x90\x00binary"), "x.exe")},
                      content_type="multipart/form-data")
    assert r.status_code == 415
    assert r.get_json()["code"] == "unsupported_media_type" and r.get_json()["detail"] == "不支持此文件类型。"
    page = b.get(f"/tasks/{intake['id']}").get_data(as_text=True)
    assert "已上传" in page and not re.search(r'id="complete-button"[^>]*disabled', page)
    r = b.post(f"/tasks/{intake['id']}/complete", {"summary": "新增接入"})
    assert r.status_code == 302, r.get_data(as_text=True)
    assert world.task_named(item_id, "confirm_difficulty")

    # The next step's form validates inline.
    difficulty = world.task_named(item_id, "confirm_difficulty")
    pm = Browser(app, "pm")
    r = pm.post(f"/tasks/{difficulty['id']}/complete", {"difficulty": "9"})
    body = r.get_data(as_text=True)
    assert r.status_code == 422
    assert "难度系数必须在 0.1–5 之间" in body and "此项必填" in body  # the limits, not "out of range"
    r = pm.post(f"/tasks/{difficulty['id']}/complete", {"difficulty": "1.5", "complexity_note": "跨系统"})
    assert r.status_code == 302


def test_review_return_requires_comment_and_shows_it(world, app):
    item_id = world.new_item("SH-WEB-RET")["id"]
    drive_to_survey_review(world, item_id)
    review = world.task_named(item_id, "confirm_survey")
    rev = Browser(app, "rev_a")
    page = rev.get(f"/tasks/{review['id']}").get_data(as_text=True)
    assert "待审交付物" in page and "survey_form.pdf" in page
    r = rev.post(f"/tasks/{review['id']}/complete", {"decision": "return"})
    assert r.status_code == 422 and "退回时必须填写审核意见" in r.get_data(as_text=True)
    r = rev.post(f"/tasks/{review['id']}/complete", {"decision": "return", "comment": "缺少材料字段"})
    assert r.status_code == 302
    rework = world.task_named(item_id, "survey_sorting")
    impl = Browser(app, "impl")
    inbox = impl.get("/inbox?scope=group").get_data(as_text=True)
    assert "退回" in inbox
    page = impl.get(f"/tasks/{rework['id']}").get_data(as_text=True)
    assert "缺少材料字段" in page
    assert 'value="3"' in page  # the earlier answer is offered again


def test_item_page_dashboard_and_language(world, app):
    item_id = world.new_item("SH-WEB-ITEM")["id"]
    world.complete_task_as("impl", item_id, "intake", {"summary": "s"})
    pm = Browser(app, "pm")
    page = pm.get(f"/items/{item_id}").get_data(as_text=True)
    assert "<svg" in page and 'data-element-id="confirm_difficulty"' in page
    assert re.search(r'class="[^"]*ig-current[^"]*" data-element-id="confirm_difficulty"', page)
    assert re.search(r'class="[^"]*ig-done[^"]*" data-element-id="intake"', page)
    assert "上传交付物" in page and "完成任务" in page  # the timeline
    dash = pm.get("/dashboard")
    assert dash.status_code == 200
    text = dash.get_data(as_text=True)
    assert 'id="kpi-active">1<' in text and "单部门事项接入" in text
    assert Browser(app, "impl").get("/dashboard").status_code == 403
    en = pm.get("/inbox?lang=en").get_data(as_text=True)
    assert "Inbox" in en and 'lang="en"' in en
    assert "Confirm difficulty coefficient" in en and "确认难度系数" not in en
    assert "Dashboard" in pm.get("/dashboard").get_data(as_text=True)  # the choice sticks
    assert "收件箱" in pm.get("/inbox?lang=zh").get_data(as_text=True)


def test_handover_to_colleague(world, app):
    item_id = world.new_item("SH-WEB-HO")["id"]
    intake = world.task_named(item_id, "intake")
    b = Browser(app, "impl")
    b.post(f"/tasks/{intake['id']}/claim")
    r = b.post(f"/tasks/{intake['id']}/handover", {"to": "impl2"})
    assert r.status_code == 302
    assert world.task_named(item_id, "intake")["assignee"] == "impl2"
    r = b.post(f"/tasks/{intake['id']}/handover", {"to": "rev_a"})
    assert r.status_code == 302  # refused with a message, nothing changed
    assert world.task_named(item_id, "intake")["assignee"] == "impl2"


def _literals() -> set[str]:
    found: set[str] = set()
    for path in (ROOT / "api" / "templates" / "web").glob("*.html"):
        found |= set(re.findall(r'_\(\s*"([^"]+)"', path.read_text()))
        found |= set(re.findall(r"_\(\s*'([^']+)'", path.read_text()))
    for path in (ROOT / "api" / "web").glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "_" and node.args \
                    and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str):
                found.add(node.args[0].value)
    return found


def test_every_web_text_has_an_english_translation():
    """Every Chinese text the web layer gives _() has an English msgstr in the gettext catalog (the .po)."""
    from api.web import _CODE_TEXT, _ERROR_TEXT
    from api.web.i18n import EN, translate
    from api.web.views import _REFUSALS

    texts = _literals() | set(_ERROR_TEXT.values()) | set(_REFUSALS.values()) | set(_CODE_TEXT.values())
    assert len(texts) > 50
    missing = sorted(t for t in texts if translate(t) == t and t not in EN and re.search(r"[\u4e00-\u9fff]", t))
    assert not missing, missing


def test_english_comes_from_the_gettext_catalog(tmp_path):
    """The .po is the translators' file: what it says is what English readers see (compiled or not)."""
    from babel.messages.pofile import read_po

    from api.web import i18n

    po = ROOT / "api" / "translations" / "en" / "LC_MESSAGES" / "messages.po"
    with po.open("rb") as f:
        catalog = read_po(f)
    assert catalog.get("收件箱").string == "Inbox"
    assert i18n.translate("收件箱") == "Inbox" and i18n.translate("没有这句") == "没有这句"
    assert not i18n.EN, "English texts belong in the .po (scripts/en_dict_to_po.py folds old ones in)"
    assert all(m.string for m in catalog if m.id), [m.id for m in catalog if m.id and not m.string][:5]


def test_dashboard_counts_a_completed_item_this_week(world, app):
    item_id = world.new_item("SH-WEB-DONE", mode="iteration", channels=["kiosk"])["id"]
    drive_to_survey_review(world, item_id)
    world.complete_task_as("rev_a", item_id, "confirm_survey", {"decision": "approve"})
    world.complete_task_as("impl", item_id, "design")
    world.complete_task_as("rev_a", item_id, "confirm_design", {"decision": "approve"})
    world.complete_task_as("impl", item_id, "build_integration", {"integration_done": True})
    world.complete_task_as("impl", item_id, "tests", {"tests_passed": True})
    world.complete_task_as("impl", item_id, "go_live", {"go_live_date": "2026-11-21"})
    world.complete_task_as("impl", item_id, "cosign_implementer", {"confirm": True})
    world.complete_task_as("rev_a", item_id, "cosign_department", {"confirm": True})
    pm = Browser(app, "pm")
    text = pm.get("/dashboard").get_data(as_text=True)
    assert 'id="kpi-month">1<' in text and 'id="kpi-active">0<' in text
    bars = re.findall(r'data-count="(\d+)"', text)
    assert len(bars) == 12 and bars[-1] == "1" and bars.count("0") == 11
    listed = pm.get("/items?status=completed&service_line=1").get_data(as_text=True)
    assert "SH-WEB-DONE" in listed
    assert "SH-WEB-DONE" not in pm.get("/items?status=active").get_data(as_text=True)
    page = pm.get(f"/items/{item_id}").get_data(as_text=True)
    assert "ig-current" not in page and "事项完成" in page


def test_overdue_tasks_are_marked_and_counted(world, app):
    from datetime import UTC, datetime

    from api.extensions import db
    from storage.models import HumanTask

    item_id = world.new_item("SH-WEB-LATE")["id"]
    drive_to_survey_review(world, item_id)
    review = db.session.get(HumanTask, world.task_named(item_id, "confirm_survey")["id"])
    review.due_at = datetime(2026, 1, 5, 2, 0, tzinfo=UTC)
    db.session.commit()
    rev = Browser(app, "rev_a")
    inbox = rev.get("/inbox?overdue=1").get_data(as_text=True)
    assert 'class="is-overdue"' in inbox and "已逾期" in inbox and "2026-01-05 10:00" in inbox  # Beijing time
    dash = Browser(app, "pm").get("/dashboard").get_data(as_text=True)
    assert 'id="kpi-overdue">1<' in dash and "部门确认调研梳理结果" in dash
    on_time = rev.get("/inbox?sort=created").get_data(as_text=True)
    assert "SH-WEB-LATE" in on_time


def test_upload_without_script_redirects_back_with_a_message(world, app):
    from api.demo import demo_pdf

    item_id = world.new_item("SH-WEB-NOJS")["id"]
    intake = world.task_named(item_id, "intake")
    b = Browser(app, "impl")
    back = f"/tasks/{intake['id']}"
    r = b.post(f"/items/{item_id}/artefacts", {"kind": "requirement_letter", "next": back,
                                                "file": (io.BytesIO(demo_pdf("x")), "需求函.pdf")},
               content_type="multipart/form-data")
    assert r.status_code == 302 and r.headers["Location"] == back
    assert "上传成功" in b.get(back).get_data(as_text=True)
    r = b.post(f"/items/{item_id}/artefacts", {"kind": "requirement_letter", "next": "//evil.example/",
                                                "file": (io.BytesIO(b"MZ\x90\x00"), "x.exe")},
               content_type="multipart/form-data")
    assert r.status_code == 302 and r.headers["Location"] == f"/items/{item_id}"  # never off-site
    assert "不支持此文件类型" in b.get(f"/items/{item_id}").get_data(as_text=True)


def test_web_upload_is_hashed_while_received_too(world, app, monkeypatch):
    """The web form's uploads go through the same one-pass parser as the API's (the CSRF check reads the form
    before the view runs, so the parser is the app's, not the view's)."""
    from api.demo import demo_pdf
    from storage import artefact_store as module
    from storage.models import Artefact

    def no_second_pass(*_args, **_kwargs):
        raise AssertionError("the spooled upload was read once more just to hash it")

    monkeypatch.setattr(module, "_hash_stream", no_second_pass)
    item_id = world.new_item("SH-WEB-ONEPASS")["id"]
    # Small enough that the test client's multipart encoder keeps it in memory (above 500 kB it spills to a temp
    # file the test client never closes); the one-pass hashing does not depend on the size.
    body = demo_pdf("web one pass") + b"%" + b"\x00" * (200 * 1024)
    b = Browser(app, "impl")
    r = b.post(f"/items/{item_id}/artefacts", {"kind": "requirement_letter",
                                                "file": (io.BytesIO(body), "需求函.pdf")},
               content_type="multipart/form-data")
    assert r.status_code == 302
    row = db.session.scalars(select(Artefact).where(Artefact.item_id == item_id)).one()
    assert row.size == len(body) and row.sha256 == hashlib.sha256(body).hexdigest()

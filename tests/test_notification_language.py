"""Notifications in the reader's language: each row keeps a message key and its params, so the same event reads in
Chinese (the default) or English in the API (Accept-Language), on the notifications page (the UI's language
switch) and in e-mail and chat (the recipient's chosen language; a department's robot in Chinese). A row written
before keys shows the text it was stored with. Both databases."""
from __future__ import annotations

from typing import Any

from sqlalchemy import select

from tests.test_notifications import _deliver
from tests.test_web import Browser

TITLE_ZH = "提交需求函与复杂度说明"
TITLE_EN = "Submit requirement letter and complexity statement"


def api_notes(world: Any, user: str, language: str | None = None) -> dict[str, Any]:
    headers = dict(world.headers(user))
    if language:
        headers["Accept-Language"] = language
    r = world.client.get("/api/v1/notifications?per_page=200", headers=headers)
    assert r.status_code == 200, r.get_json()
    return r.get_json()


def _user_id(username: str) -> int:
    from api.extensions import db
    from storage.models import User

    return int(db.session.execute(select(User.id).where(User.username == username)).scalar_one())


def test_the_same_event_reads_in_chinese_and_in_english(world, app):
    item = world.new_item("N-LANG-1")
    zh = [n for n in api_notes(world, "impl")["notifications"] if n["kind"] == "new_task"]
    assert len(zh) == 1
    note = zh[0]
    assert note["message"] == f"新任务「{TITLE_ZH}」（事项 N-LANG-1「事项 N-LANG-1」）已进入您的待办队列"
    assert note["message_key"] == "task.new_in_queue" and note["language"] == "zh"
    assert note["params"] == {"task": TITLE_ZH, "code": "N-LANG-1", "name": "事项 N-LANG-1"}
    en = [n for n in api_notes(world, "impl", "en-US,en;q=0.9,zh;q=0.5")["notifications"] if n["id"] == note["id"]]
    # The template and the step's title in English; the item's own code and name as written.
    assert en[0]["message"] == f"New task “{TITLE_EN}” (item N-LANG-1 “事项 N-LANG-1”) is in your queue"
    assert en[0]["language"] == "en"
    assert api_notes(world, "impl", "zh-CN,zh;q=0.9")["notifications"][0]["message"] == note["message"]
    # Marking read answers in the reader's language too.
    r = world.client.post(f"/api/v1/notifications/{note['id']}/read",
                          headers={**world.headers("impl"), "Accept-Language": "en"})
    assert r.status_code == 200 and r.get_json()["message"].startswith("New task")

    # The web: Chinese by default, English after the UI's switch.
    web = Browser(app, "impl")
    page = web.get("/notifications").get_data(as_text=True)
    assert f"新任务「{TITLE_ZH}」" in page and "New task “" not in page
    page = web.get("/notifications?lang=en").get_data(as_text=True)
    assert f"New task “{TITLE_EN}” (item N-LANG-1" in page and "已进入您的待办队列" not in page
    assert item["id"]


def test_a_row_written_before_keys_shows_its_stored_text(world, app):
    from datetime import UTC, datetime

    from api.extensions import db
    from storage.models import Notification

    old = Notification(user_id=_user_id("impl"), kind="reminder", message="任务「旧步骤」已超过办理期限，请尽快处理",
                       created_at=datetime.now(UTC))
    # A key this version does not know (a row from a later version, rolled back) also falls back to its text.
    unknown = Notification(user_id=_user_id("impl"), kind="new_task", message="未知键的通知", message_key="no.such.key",
                           params={"x": 1}, created_at=datetime.now(UTC))
    db.session.add_all([old, unknown])
    db.session.commit()
    for language in (None, "en"):
        shown = {n["id"]: n for n in api_notes(world, "impl", language)["notifications"]}
        assert shown[old.id]["message"] == "任务「旧步骤」已超过办理期限，请尽快处理"
        assert shown[old.id]["message_key"] is None and shown[old.id]["params"] is None
        assert shown[unknown.id]["message"] == "未知键的通知"
    web = Browser(app, "impl")
    assert "任务「旧步骤」已超过办理期限" in web.get("/notifications?lang=en").get_data(as_text=True)


def test_email_and_chat_use_the_recipients_language(world, app, smtp_sink, webhook):
    from api.extensions import db
    from storage.models import User

    # impl chooses English in the web; the choice is theirs from then on (their deliveries follow it).
    Browser(app, "impl").get("/inbox?lang=en")
    db.session.expire_all()
    assert db.session.get(User, _user_id("impl")).language == "en"
    assert db.session.get(User, _user_id("impl2")).language is None
    for who in ("impl", "impl2"):
        r = world.client.put("/api/v1/me/channels", headers=world.headers(who),
                             json={"webhook": {"target": webhook.url(f"/{who}")}})
        assert r.status_code == 200, r.get_json()
    r = world.client.put("/api/v1/me/channels", headers=world.headers("impl"),
                         json={"email": {"target": "impl@example.org"}, "webhook": {"target": webhook.url("/impl")}})
    assert r.status_code == 200, r.get_json()
    world.new_item("N-LANG-OUT")
    counts = _deliver(app, smtp_sink.port)
    assert counts["failed"] == 0 and counts["sent"] == 3, counts
    assert len(smtp_sink.messages) == 1
    assert str(smtp_sink.messages[0]["Subject"]) == "[ItemGate] New task"
    assert f"New task “{TITLE_EN}” (item N-LANG-OUT" in smtp_sink.bodies()[0]
    by_path = {path: body["message"] for path, body in webhook.posts}
    assert f"New task “{TITLE_EN}”" in by_path["/impl"]
    assert f"新任务「{TITLE_ZH}」（事项 N-LANG-OUT" in by_path["/impl2"]  # no language chosen: Chinese


def test_every_message_has_an_english_text_with_the_same_placeholders():
    import string

    from api.web.i18n import translate
    from engine.trust.notify import COMMENT_LABEL, KIND_TITLES, MESSAGES

    def names(text: str) -> set[str]:
        return {field for _, field, _, _ in string.Formatter().parse(text) if field}

    for key, template in MESSAGES.items():
        english = translate(template, "en")
        assert english != template, f"{key} has no English text in messages.po"
        assert names(english) == names(template), key
    for text in (*KIND_TITLES.values(), COMMENT_LABEL):
        assert translate(text, "en") != text, text

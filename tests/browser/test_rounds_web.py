"""Rounds in the browser: a round-2 reviewer sees round 1's comment, the reply and the changed file; a done step
shows what was submitted; the item page lists each step's data; the timeline speaks in names; co-sign refusal."""
from __future__ import annotations

import re
from typing import Any

import pytest

from tests.browser.conftest import VIEWPORT
from tests.browser.test_inbox_flow import TIMEOUT_MS, sign_in
from tests.test_cancel_rework import at_confirm_design
from tests.test_kinds_api import APPROVE, GO_LIVE, RETURN, do, open_named

pytestmark = [
    pytest.mark.browser,
    pytest.mark.parametrize("backend", ["sqlite"], indirect=True),
]


def page_for(chromium: Any, base: str, username: str) -> Any:
    context = chromium.new_context(viewport=VIEWPORT, locale="zh-CN", base_url=base)
    context.set_default_timeout(TIMEOUT_MS)
    page = context.new_page()
    sign_in(page, username)
    return page


def named(world: Any) -> None:
    from api.extensions import db
    from storage.models import User

    for username, name in (("impl", "张伟"), ("rev_a", "王芳"), ("pm", "陈静")):
        db.session.execute(User.__table__.update().where(User.username == username).values(display_name=name))
    db.session.commit()


def test_round_two_review_shows_round_one_reply_and_changed_file(chromium: Any, live_url: str, world: Any) -> None:
    named(world)
    item_id = at_confirm_design(world, "SH-WEB-RND")
    do(world, "rev_a", item_id, "confirm_design", RETURN)
    rework = open_named(world, item_id, "design")[0]
    assert world.upload("impl", item_id, "functional_design", body=b"%PDF-1.4\n% round two\n%%EOF\n",
                        task_id=rework["id"]).status_code == 201
    do(world, "impl", item_id, "design", {"reply": "已补充接口设计", "notes": "第二稿"})
    review = open_named(world, item_id, "confirm_design")[0]

    rev = page_for(chromium, live_url, "rev_a")
    rev.goto(f"/tasks/{review['id']}")
    rounds = rev.locator("#rounds")
    first, second = rounds.locator('[data-round="1"]'), rounds.locator('[data-round="2"]')
    assert RETURN["comment"] in first.inner_text()
    assert "王芳" in first.inner_text()
    assert "已补充接口设计" in second.inner_text() and "张伟" in second.inner_text()
    changed = second.locator('li.changed[data-kind="functional_design"]')
    assert "v1 → v2" in changed.inner_text()
    # Only the changed file is highlighted.
    assert second.locator("li.changed").count() == 1

    # The finished design step says what was submitted, by whom, with which versions.
    rev.goto(f"/tasks/{rework['id']}")
    done = rev.locator("#submitted").inner_text()
    assert "已补充接口设计" in done and "第二稿" in done and "张伟" in done and "v2" in done

    # The item page lists each step's data, and the timeline speaks in names without claims unless asked.
    rev.goto(f"/items/{item_id}")
    records = rev.locator("#records").inner_text()
    assert "梳理事项数" in records and "已补充接口设计" in records
    timeline = rev.locator("table.timeline").inner_text()
    assert "张伟" in timeline and "impl " not in timeline
    assert "认领任务" not in timeline
    rev.context.close()


def test_cosign_refused_in_the_browser_goes_back_to_the_implementer(chromium: Any, live_url: str,
                                                                   world: Any) -> None:
    item_id = at_confirm_design(world, "SH-WEB-COSIGN")
    do(world, "rev_a", item_id, "confirm_design", APPROVE)
    do(world, "impl", item_id, "build_integration", {"integration_done": True})
    do(world, "impl", item_id, "tests", {"tests_passed": True})
    do(world, "impl", item_id, "go_live", GO_LIVE)
    cosign = open_named(world, item_id, "cosign_department")[0]
    detail = world.get("rev_a", f"/api/v1/tasks/{cosign['id']}").get_json()
    for req in detail["required_artefacts"]:
        if not req["present"]:
            assert world.upload("rev_a", item_id, req["kind"], task_id=cosign["id"]).status_code == 201

    rev = page_for(chromium, live_url, "rev_a")
    rev.goto(f"/tasks/{cosign['id']}")
    rev.get_by_label("拒绝会签并退回").check()
    rev.get_by_role("button", name=re.compile("提交|完成任务")).click()
    assert rev.locator("#err-comment").count() == 1  # the reason is required
    rev.get_by_label("拒绝会签并退回").check()
    rev.get_by_label("意见").fill("上线截图不是生产环境")
    rev.get_by_role("button", name=re.compile("提交|完成任务")).click()
    rev.wait_for_url(re.compile(r"/inbox"))
    do(world, "impl", item_id, "cosign_implementer", {"confirm": True})
    again = open_named(world, item_id, "go_live")[0]
    assert again["assignee"] == "impl"

    impl = page_for(chromium, live_url, "impl")
    impl.goto(f"/tasks/{again['id']}")
    assert "上线截图不是生产环境" in impl.locator(".return-comment").inner_text()
    assert impl.get_by_label("对退回意见的答复").count() == 1
    rev.context.close()
    impl.context.close()

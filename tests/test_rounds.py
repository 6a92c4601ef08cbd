"""Rounds of work: a returned step goes back to whoever did it, co-sign can be refused, and each review round
knows the previous round's comment, the reply and which files changed."""
from __future__ import annotations

from typing import Any

from tests.test_cancel_rework import at_confirm_design
from tests.test_kinds_api import APPROVE, GO_LIVE, RETURN, do, open_named


def _task_row(task_id: int) -> Any:
    from api.extensions import db
    from storage.models import HumanTask

    db.session.expire_all()
    return db.session.get(HumanTask, task_id)


def test_a_returned_step_goes_back_claimed_by_who_did_it(world: Any) -> None:
    item_id = at_confirm_design(world, "SH-RND-1")
    do(world, "rev_a", item_id, "confirm_design", RETURN)
    rework = open_named(world, item_id, "design")[0]
    assert rework["assignee"] == "impl"
    row = _task_row(rework["id"])
    assert row.return_comment == RETURN["comment"]
    # It is in impl's own list, not waiting in the group queue for anyone to take.
    mine = world.get("impl", "/api/v1/tasks?scope=mine").get_json()["tasks"]
    assert rework["id"] in [t["id"] for t in mine]


def test_a_returned_step_goes_to_the_group_when_its_doer_is_gone(world: Any) -> None:
    from api.extensions import db
    from storage.models import User

    item_id = at_confirm_design(world, "SH-RND-2")
    db.session.execute(User.__table__.update().where(User.username == "impl").values(active=False))
    db.session.commit()
    do(world, "rev_a", item_id, "confirm_design", RETURN)
    rework = open_named(world, item_id, "design")[0]
    assert rework["assignee"] is None
    assert _task_row(rework["id"]).return_comment == RETURN["comment"]


def _at_cosign(world: Any, code: str) -> int:
    item_id = at_confirm_design(world, code)
    do(world, "rev_a", item_id, "confirm_design", APPROVE)
    do(world, "impl", item_id, "build_integration", {"integration_done": True})
    do(world, "impl", item_id, "tests", {"tests_passed": True})
    do(world, "impl", item_id, "go_live", GO_LIVE)
    return item_id


def test_cosign_can_be_refused_with_a_comment(world: Any) -> None:
    item_id = _at_cosign(world, "SH-RND-3")
    cosign = open_named(world, item_id, "cosign_department")[0]
    # Refusing needs the reason; confirming needs the tick.
    r = world.complete("rev_a", cosign["id"], {"decision": "return"})
    assert r.status_code == 422 and "comment" in r.get_json()["errors"]
    r = world.complete("rev_a", cosign["id"], {"decision": "approve"})
    assert r.status_code == 422 and "confirm" in r.get_json()["errors"]
    do(world, "rev_a", item_id, "cosign_department", {"decision": "return", "comment": "上线地址打不开"})
    do(world, "impl", item_id, "cosign_implementer", {"confirm": True})
    # Back to go-live, with the refusal as the reason, claimed by the implementer who did it.
    again = open_named(world, item_id, "go_live")[0]
    assert again["assignee"] == "impl"
    assert _task_row(again["id"]).return_comment == "上线地址打不开"
    assert world.get("pm", f"/api/v1/items/{item_id}").get_json()["status"] == "active"
    do(world, "impl", item_id, "go_live", {**GO_LIVE, "reply": "地址已修正"})
    do(world, "rev_a", item_id, "cosign_department", {"confirm": True})
    do(world, "impl", item_id, "cosign_implementer", {"confirm": True})
    assert world.get("pm", f"/api/v1/items/{item_id}").get_json()["status"] == "completed"


def test_round_two_sees_round_one_the_reply_and_the_changed_file(world: Any) -> None:
    from api.extensions import db
    from engine.usecases.rounds import review_rounds
    from storage.models import HumanTask

    item_id = at_confirm_design(world, "SH-RND-4")
    first = {a["kind"]: a for a in world.get("pm", f"/api/v1/items/{item_id}").get_json()["artefacts"]}
    do(world, "rev_a", item_id, "confirm_design", RETURN)
    rework = open_named(world, item_id, "design")[0]
    r = world.upload("impl", item_id, "functional_design", body=b"%PDF-1.4\n% v2\n%%EOF\n", task_id=rework["id"])
    assert r.status_code == 201, r.get_json()
    do(world, "impl", item_id, "design", {"reply": "已补充接口设计"})
    review = open_named(world, item_id, "confirm_design")[0]
    db.session.expire_all()
    from sqlalchemy import select

    from storage.models import User

    reviewer = db.session.execute(select(User).where(User.username == "rev_a")).scalar_one()
    rounds = review_rounds(db.session, reviewer, db.session.get(HumanTask, review["id"]))
    assert [r.number for r in rounds] == [1, 2]
    assert rounds[0].review is not None and rounds[0].review.data["comment"] == RETURN["comment"]
    assert rounds[1].review is None and rounds[1].submission is not None
    assert rounds[1].submission.data["reply"] == "已补充接口设计"
    changed = [e for e in rounds[1].submission.evidence if e.changed_from is not None]
    assert [(e.artefact.kind, e.previous_version, e.version) for e in changed] == [("functional_design", 1, 2)]
    assert changed[0].changed_from.id == first["functional_design"]["id"]
    assert changed[0].artefact.sha256 != first["functional_design"]["sha256"]
    unchanged = [e for e in rounds[1].submission.evidence if e.changed_from is None]
    assert all(not e.new for e in unchanged)


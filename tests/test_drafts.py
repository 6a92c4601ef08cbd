"""Task form drafts: kept per task and person, only the form's own fields, gone once the task is submitted."""
from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest


def test_a_draft_is_per_person_cleaned_and_discarded_on_completion(world: Any) -> None:
    from api.extensions import db
    from engine.errors import Conflict, Invalid
    from engine.usecases.drafts import load_draft, save_draft
    from storage.models import HumanTask, TaskDraft, User

    item_id = world.new_item("SH-DRAFT-1")["id"]
    task_id = world.task_named(item_id, "intake")["id"]
    task = db.session.get(HumanTask, task_id)
    impl, impl2 = (db.session.query(User).filter_by(username=u).one() for u in ("impl", "impl2"))
    now = datetime.now(UTC)
    saved = save_draft(db.session, task, impl, {"summary": "先写一半", "evil": "x", "reply": None}, now)
    assert saved == {"summary": "先写一半"}
    save_draft(db.session, task, impl, {"summary": "写完了"}, now)  # replaces, never a second row
    save_draft(db.session, task, impl2, {"summary": "别人的"}, now)
    db.session.commit()
    assert load_draft(db.session, task, impl) == {"summary": "写完了"}
    assert load_draft(db.session, task, impl2) == {"summary": "别人的"}
    assert db.session.query(TaskDraft).count() == 2
    with pytest.raises(Invalid):
        save_draft(db.session, task, impl, "not an object", now)
    with pytest.raises(Invalid):
        save_draft(db.session, task, impl, [], now)
    db.session.rollback()
    world.complete_task_as("impl", item_id, "intake", {"summary": "写完了"})
    db.session.expire_all()
    assert db.session.query(TaskDraft).count() == 0
    # A finished task takes no draft.
    with pytest.raises(Conflict) as refused:
        save_draft(db.session, db.session.get(HumanTask, task_id), impl, {"summary": "晚了"}, now)
    assert refused.value.code == "task_not_ready" and refused.value.status == 409

"""Separation of duties, retained gate evidence (object lock legal hold), and `itemgate fsck`."""
from __future__ import annotations

import io
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import func, select, update

from api.extensions import db
from engine.errors import Forbidden
from engine.evidence.integrity import discard_object, fsck
from storage.artefact_store import ArtefactStore, StoreUnavailable
from storage.models import Artefact, GatePass, User
from tests.test_lifecycle_api import drive_to_survey_review

# ---------------------------------------------------------------- separation of duties

def test_uploader_of_reviewed_evidence_cannot_approve_it(world):
    world.user("rev_a2", "dept_reviewer", "DA")
    item_id = world.new_item("SOD-1")["id"]
    world.complete_task_as("impl", item_id, "intake", {"summary": "x"})
    world.complete_task_as("pm", item_id, "confirm_difficulty", {"difficulty": "1.0", "complexity_note": "常规事项"})
    # The department reviewer supplies the sorting list themselves, then tries to confirm the survey.
    assert world.upload("rev_a", item_id, "sorting_list").status_code == 201
    world.complete_task_as("impl", item_id, "survey_sorting", {"item_count": 3})
    review = world.task_named(item_id, "confirm_survey")
    r = world.complete("rev_a", review["id"], {"decision": "approve"})
    assert r.status_code == 403 and r.get_json()["code"] == "separation_of_duties"
    assert world.task_named(item_id, "confirm_survey")["id"] == review["id"]  # nothing changed
    r = world.complete("rev_a2", review["id"], {"decision": "approve"})
    assert r.status_code == 200, r.get_json()


def test_cosignatures_need_two_people_in_two_roles(world):
    item_id = world.new_item("SOD-2", channels=["pc"])["id"]
    drive_to_survey_review(world, item_id)
    world.complete_task_as("rev_a", item_id, "confirm_survey", {"decision": "approve"})
    world.complete_task_as("impl", item_id, "design")
    world.complete_task_as("rev_a", item_id, "confirm_design", {"decision": "approve"})
    world.complete_task_as("impl", item_id, "build_integration", {"integration_done": True})
    world.complete_task_as("impl", item_id, "tests", {"tests_passed": True})
    world.complete_task_as("impl", item_id, "walkthrough")
    world.complete_task_as("impl", item_id, "go_live", {"go_live_date": "2026-11-20"})
    world.complete_task_as("rev_a", item_id, "cosign_department", {"confirm": True})
    # The department's signer changes role and tries to give the implementer's signature too.
    db.session.execute(update(User).where(User.username == "rev_a").values(role="implementer"))
    db.session.commit()
    task = world.task_named(item_id, "cosign_implementer")
    r = world.complete("rev_a", task["id"], {"confirm": True})
    assert r.status_code == 403 and r.get_json()["code"] == "separation_of_duties"
    world.complete_task_as("impl", item_id, "cosign_implementer", {"confirm": True})
    assert world.get("pm", f"/api/v1/items/{item_id}").get_json()["status"] == "completed"


# ---------------------------------------------------------------- retained evidence

def test_gate_evidence_is_held_and_never_deleted(world, store):
    item_id = world.new_item("HOLD-1")["id"]
    world.complete_task_as("impl", item_id, "intake", {"summary": "x"})
    passed = db.session.scalars(select(Artefact).join(GatePass, GatePass.artefact_id == Artefact.id)).all()
    assert passed
    for artefact in passed:
        assert store.is_held(artefact.key, artefact.version_id)
        # The server refuses to delete a held version (object lock) …
        with pytest.raises((StoreUnavailable, Exception)):
            store.delete(artefact.key, artefact.version_id)
        assert store.hash_object(artefact.key, artefact.version_id) == (artefact.size, artefact.sha256)
        # … and so does the application, before it even asks.
        with pytest.raises(Forbidden) as err:
            discard_object(db.session, store, artefact.key, artefact.version_id)
        assert err.value.code == "evidence_retained"


# ---------------------------------------------------------------- fsck

def _put_orphan(store: ArtefactStore) -> tuple[str, str | None]:
    # A contract code of its own: item ids restart per test, and no test holds anything under it.
    key = ArtefactStore.new_key("ORPHAN-TEST", 999_999, "requirement_letter")
    body = b"%PDF-1.4 orphan"
    stored = store.put_stream(key, io.BytesIO(body), len(body), "application/pdf", 1 << 20)
    return key, stored.version_id


def test_fsck_clean_then_finds_mismatch_missing_and_orphans(world, app, store, cli):
    item_id = world.new_item("FSCK-1")["id"]
    for kind in ("requirement_letter", "complexity_statement", "survey_form"):
        assert world.upload("impl", item_id, kind).status_code == 201
    report = fsck(db.session, store)
    assert report.checked >= 3 and not report.problems
    baseline_orphans = {(o.key, o.version_id) for o in report.orphans}

    rows = db.session.scalars(select(Artefact).where(Artefact.item_id == item_id).order_by(Artefact.id)).all()
    tampered, missing = rows[0], rows[1]
    missing_object = (missing.key, missing.version_id)
    db.session.execute(update(Artefact).where(Artefact.id == tampered.id).values(sha256="0" * 64))
    db.session.commit()
    # The row points at an object that is not there (as if it had been removed behind our back).
    db.session.execute(update(Artefact).where(Artefact.id == missing.id).values(key=missing.key + "-gone"))
    db.session.commit()
    orphan = _put_orphan(store)

    report = fsck(db.session, store)
    problems = {p.artefact_id: p.problem for p in report.problems}
    assert "SHA-256" in problems[tampered.id] and problems[missing.id] == "object missing"
    new_orphans = {(o.key, o.version_id) for o in report.orphans} - baseline_orphans
    assert new_orphans == {orphan, missing_object}  # the row no longer points at it

    # --repair keeps young orphans (an upload about to commit looks the same) …
    report = fsck(db.session, store, repair=True, grace_hours=24)
    assert orphan in {(o.key, o.version_id) for o in report.kept_young} and not report.removed
    # … and removes them once they are older than the grace period; referenced objects stay.
    later = datetime.now(UTC) + timedelta(hours=25)
    report = fsck(db.session, store, repair=True, grace_hours=24, now=later)
    assert orphan in {(o.key, o.version_id) for o in report.removed}
    assert store.hash_object(rows[2].key, rows[2].version_id)[1] == rows[2].sha256
    assert db.session.execute(select(func.count(Artefact.id))).scalar() == 3

    result = cli("fsck")
    assert result.exit_code == 1 and "object missing" in result.output and "SHA-256" in result.output


def test_fsck_reports_gate_evidence_without_hold_and_repair_places_it(world, store, monkeypatch):
    item_id = world.new_item("HOLD-2")["id"]
    # The store accepts the upload but refuses every hold the completion asks for (e.g. a brief outage).
    monkeypatch.setattr(ArtefactStore, "hold", lambda self, key, version_id: (_ for _ in ()).throw(
        StoreUnavailable("hold refused")))
    world.complete_task_as("impl", item_id, "intake", {"summary": "x"})  # the gate still passes
    monkeypatch.undo()
    passed = db.session.scalars(select(Artefact).join(GatePass, GatePass.artefact_id == Artefact.id)
                                .where(Artefact.item_id == item_id)).all()
    assert passed and not any(store.is_held(a.key, a.version_id) for a in passed)
    report = fsck(db.session, store, deep=False)
    unheld = {p.artefact_id for p in report.problems if p.problem == "gate evidence without a legal hold"}
    assert unheld == {a.id for a in passed}
    report = fsck(db.session, store, deep=False, repair=True)
    assert {p.artefact_id for p in report.held} == unheld
    assert all(store.is_held(a.key, a.version_id) for a in passed)
    assert not [p for p in fsck(db.session, store, deep=False).problems if p.artefact_id in unheld]

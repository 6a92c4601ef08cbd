"""Races on PostgreSQL, 50 rounds each, with real commits from threads that each have their own test client
(and so their own app context, session and connection): two completions of one task, a claim against a
completion, hand-overs and releases against each other, two reversals of one ledger entry, a reversal against
the settlement steps that claim its entry, co-signers signing at once, two ticks at once and uploads at once.

Each round checks the answers (exactly one winner, the loser a 409 with a stable code, never a 500) and then
the rows: what the answers say happened is what the database holds. SQLite serialises writers, so there is no
real race to test there; the rules themselves are tested on both backends in test_ledger.py and
test_settlement.py.
"""
from __future__ import annotations

import io
import threading
from collections.abc import Callable
from typing import Any

import pytest
from sqlalchemy import func, select

from api.extensions import db
from storage.models import Artefact, AuditEvent, HumanTask, ProcessInstance, Settlement, User, WorkloadEntry
from tests.settlement_helpers import adhoc_contract, completed_items, entry_ids

ROUNDS = 50
# One round's answers, as (status, problem code or None), in the order the calls were given.
Outcome = list[tuple[int, Any]]


@pytest.fixture(autouse=True)
def _postgresql_only(backend: str) -> None:
    if backend != "postgresql":
        pytest.skip("PostgreSQL only: SQLite serialises writers, so there is no real race to test")


def race(app: Any, calls: list[Callable[[Any], Any]]) -> Outcome:
    """Start every call at the same instant, each in its own thread with its own client; their answers."""
    db.session.remove()  # the main thread holds no snapshot or connection during the race
    barrier = threading.Barrier(len(calls))
    outcome: list[tuple[int, Any] | None] = [None] * len(calls)
    errors: list[BaseException] = []

    def worker(index: int, call: Callable[[Any], Any]) -> None:
        client = app.test_client()
        try:
            barrier.wait(timeout=30)
            r = call(client)
            body = r.get_json(silent=True) if r.mimetype.endswith("json") else None
            outcome[index] = (r.status_code, (body or {}).get("code") if r.status_code >= 400 else body)
            r.close()
        except BaseException as exc:  # surfaced in the main thread below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(i, c)) for i, c in enumerate(calls)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors, errors
    assert all(o is not None for o in outcome), outcome
    return [o for o in outcome if o is not None]


def post(url: str, headers: dict[str, str], body: Any = None) -> Callable[[Any], Any]:
    return lambda client: client.post(url, json={} if body is None else body, headers=headers)


def ready_intake(world: Any, code: str) -> dict[str, Any]:
    """A new item whose intake task has its evidence and can be completed."""
    item_id = world.new_item(code, channels=["pc"])["id"]
    for kind in ("requirement_letter", "complexity_statement"):
        assert world.upload("impl", item_id, kind).status_code == 201
    return world.task_named(item_id, "intake")


def user_id(username: str) -> int:
    return db.session.execute(select(User.id).where(User.username == username)).scalar_one()


def events(kind: str, target: Any) -> int:
    return db.session.execute(select(func.count(AuditEvent.id)).where(
        AuditEvent.event_type == kind, AuditEvent.target_id == str(target))).scalar_one()


# ---------------------------------------------------------------- tasks

def test_two_completes_of_one_task_one_wins(world, app):
    headers = [world.headers("impl"), world.headers("impl2")]
    for i in range(ROUNDS):
        task = ready_intake(world, f"RACE-{i}")
        item_id = task["item_id"]
        version = db.session.execute(select(ProcessInstance.version)
                                     .where(ProcessInstance.item_id == item_id)).scalar()
        url = f"/api/v1/tasks/{task['id']}/complete"
        outcome = race(app, [post(url, h, {"data": {"summary": "并发"}}) for h in headers])

        assert sorted(s for s, _ in outcome) == [200, 409], f"round {i}: {outcome}"
        assert events("task.completed", task["id"]) == 1, f"round {i}"
        after = db.session.execute(select(ProcessInstance.version)
                                   .where(ProcessInstance.item_id == item_id)).scalar()
        assert after == version + 1, f"round {i}: version {version} → {after}"
        row = db.session.get(HumanTask, task["id"])
        winner = ["impl", "impl2"][[s for s, _ in outcome].index(200)]
        assert row.status == "completed" and row.completed_by_id == row.assignee_id == user_id(winner)
        db.session.remove()


def test_claim_against_complete_by_two_users_one_wins(world, app):
    """impl claims while impl2 completes (an implicit claim): one wins, the other gets 409; the row says who."""
    impl, impl2 = world.headers("impl"), world.headers("impl2")
    seen: dict[str, int] = {}
    for i in range(ROUNDS):
        task = ready_intake(world, f"CLAIM-{i}")
        base = f"/api/v1/tasks/{task['id']}"
        outcome = race(app, [post(f"{base}/claim", impl), post(f"{base}/complete", impl2,
                                                               {"data": {"summary": "并发"}})])
        (claim_status, claim_code), (complete_status, complete_code) = outcome
        assert sorted([claim_status, complete_status]) == [200, 409], f"round {i}: {outcome}"
        row = db.session.get(HumanTask, task["id"])
        if claim_status == 200:
            assert complete_code == "claimed_by_other", f"round {i}: {outcome}"
            assert (row.status, row.assignee_id, row.completed_by_id) == ("ready", user_id("impl"), None)
            assert events("task.completed", task["id"]) == 0
            seen["claim won"] = seen.get("claim won", 0) + 1
        else:
            assert claim_code == "task_not_ready", f"round {i}: {outcome}"
            assert (row.status, row.assignee_id, row.completed_by_id) == ("completed", user_id("impl2"),
                                                                          user_id("impl2"))
            assert events("task.claimed", task["id"]) == 0
            seen["complete won"] = seen.get("complete won", 0) + 1
        db.session.remove()
    print(f"\nclaim vs complete: {seen}")


def test_hand_over_against_release_and_claim(world, app):
    """The holder hands the task on while the PM releases it and a colleague claims it. Whatever wins, the
    successes replayed in commit order (the audit chain's order) are each allowed at their turn and lead to
    exactly the holder the row has; every loser gets 409."""
    world.user("impl3", "implementer")
    holder, pm, other = world.headers("impl"), world.headers("pm"), world.headers("impl3")
    names = {user_id(n): n for n in ("impl", "impl2", "impl3")}
    seen: dict[str, int] = {}
    for i in range(ROUNDS):
        task = ready_intake(world, f"HAND-{i}")
        base = f"/api/v1/tasks/{task['id']}"
        assert world.post("impl", f"{base}/claim").status_code == 200
        outcome = race(app, [post(f"{base}/handover", holder, {"to": "impl2"}), post(f"{base}/unclaim", pm),
                             post(f"{base}/claim", other)])
        assert {s for s, _ in outcome} <= {200, 409}, f"round {i}: {outcome}"
        assert all(code == "claimed_by_other" for s, code in outcome if s == 409), f"round {i}: {outcome}"
        changes = db.session.execute(select(AuditEvent.event_type).where(
            AuditEvent.target_id == str(task["id"]), AuditEvent.target_type == "task")
            .order_by(AuditEvent.id)).scalars().all()[1:]  # after the set-up claim
        succeeded = {"task.handed_over": outcome[0][0] == 200, "task.unclaimed": outcome[1][0] == 200,
                     "task.claimed": outcome[2][0] == 200}
        assert sorted(changes) == sorted(k for k, ok in succeeded.items() if ok), f"round {i}: {changes} {outcome}"
        held: str | None = "impl"
        for change in changes:
            if change == "task.handed_over":  # by the holder: allowed while they hold it or nobody does
                assert held in (None, "impl"), f"round {i}: {changes}"
                held = "impl2"
            elif change == "task.unclaimed":  # by the PM: allowed while someone holds it
                assert held is not None, f"round {i}: {changes}"
                held = None
            else:  # a claim: allowed while nobody holds it
                assert held is None, f"round {i}: {changes}"
                held = "impl3"
        row = db.session.get(HumanTask, task["id"])
        assert (names.get(row.assignee_id) if row.assignee_id else None) == held, f"round {i}: {changes}"
        seen[" → ".join(c.removeprefix("task.") for c in changes)] = seen.get(
            " → ".join(c.removeprefix("task.") for c in changes), 0) + 1
        db.session.remove()
    print(f"\nhand-over vs release vs claim: {seen}")


def _to_cosign(world: Any, code: str) -> int:
    from tests.test_cancel_rework import at_confirm_design
    from tests.test_kinds_api import APPROVE, GO_LIVE, do

    item_id = at_confirm_design(world, code)
    do(world, "rev_a", item_id, "confirm_design", APPROVE)
    do(world, "impl", item_id, "build_integration", {"integration_done": True})
    do(world, "impl", item_id, "tests", {"tests_passed": True})
    do(world, "impl", item_id, "go_live", GO_LIVE)
    return item_id


def test_co_signers_at_once(world, app):
    """The department and the implementer sign the go-live confirmation at the same instant. Each answer is a
    success or a 409 version_conflict (the process state moved under it); a 409 signer signs again and
    succeeds; the item completes once and is tallied once per channel."""
    item_ids = [_to_cosign(world, f"COSIGN-{i}") for i in range(ROUNDS)]
    rev, impl = world.headers("rev_a"), world.headers("impl2")
    seen: dict[str, int] = {}
    for i, item_id in enumerate(item_ids):
        tasks = {t["name"]: t for t in world.open_tasks(item_id)}
        signers = [("cosign_department", rev), ("cosign_implementer", impl)]
        for name, _ in signers:  # the evidence is there before the race, so only the signatures race
            detail = world.get("impl", f"/api/v1/tasks/{tasks[name]['id']}").get_json()
            for req in detail["required_artefacts"]:
                if not req["present"]:
                    assert world.upload("impl", item_id, req["kind"]).status_code == 201
        outcome = race(app, [post(f"/api/v1/tasks/{tasks[n]['id']}/complete", h, {"data": {"confirm": True}})
                             for n, h in signers])
        assert 200 in [s for s, _ in outcome], f"round {i}: {outcome}"
        for (status, code), (name, h) in zip(outcome, signers, strict=True):
            assert status == 200 or (status, code) == (409, "version_conflict"), f"round {i}: {outcome}"
            row = db.session.get(HumanTask, tasks[name]["id"])
            assert row.status == ("completed" if status == 200 else "ready"), f"round {i}: {outcome}"
            if status == 409:
                db.session.remove()
                r = world.client.post(f"/api/v1/tasks/{tasks[name]['id']}/complete", headers=h,
                                      json={"data": {"confirm": True}})
                assert r.status_code == 200, r.get_json()
        seen[str(sorted(s for s, _ in outcome))] = seen.get(str(sorted(s for s, _ in outcome)), 0) + 1
        db.session.remove()
        detail = world.get("pm", f"/api/v1/items/{item_id}").get_json()
        assert detail["status"] == "completed", f"round {i}: {detail['status']} {detail['stage']}"
        assert events("item.completed", item_id) == 1
        assert db.session.execute(select(func.count(WorkloadEntry.id))
                                  .where(WorkloadEntry.item_id == item_id)).scalar() == 2
        db.session.remove()
    print(f"\nco-signers: {seen}")


def test_two_ticks_at_once_fire_each_timer_once(world, app):
    """Two hosts run `tick` at the same instant, 50 times over: each round's due timers (the reminder and the
    escalation of one overdue review) fire once, with one notification each."""
    from storage.models import Notification
    from tests.test_deadlines import frozen, tick, to_confirm_survey

    for i in range(ROUNDS):
        with frozen("2026-09-29 02:00:00", world):
            task = to_confirm_survey(world, f"SH-TK-{i}")
        db.session.remove()
        results: list[int] = []
        errors: list[BaseException] = []
        barrier = threading.Barrier(2)

        def host() -> None:
            try:
                barrier.wait(timeout=30)
                results.append(tick(app))
            except BaseException as exc:  # surfaced below; a thread must not swallow a failure
                errors.append(exc)

        with frozen("2026-10-14 00:00:00", world):
            threads = [threading.Thread(target=host) for _ in range(2)]
            for t in threads:
                t.start()
            for t in threads:
                t.join(timeout=120)
        assert not errors, errors
        assert sum(results) == 1, f"round {i}: ticks advanced {results}"
        notes = db.session.execute(select(func.count(Notification.id))
                                   .where(Notification.task_id == task["id"],
                                          Notification.kind.in_(["reminder", "escalation"]))).scalar()
        assert notes == 2, f"round {i}: {notes} notifications"
        assert events("timer.fired", task["item_id"]) == 1, f"round {i}"
        db.session.remove()


# ---------------------------------------------------------------- evidence

def test_uploads_at_once(world, app, store):
    """Two implementers upload the same kind to one item at the same instant: both are stored, each row names
    its own intact object version, one audit event each, and the gate takes the later row."""
    from engine.evidence.artefacts import verify_artefact

    headers = [world.headers("impl"), world.headers("impl2")]
    item_id = world.new_item("UPLOADS", channels=["pc"])["id"]
    url = f"/api/v1/items/{item_id}/artefacts"

    def upload(h: dict[str, str], body: bytes) -> Callable[[Any], Any]:
        return lambda client: client.post(url, headers=h, content_type="multipart/form-data", data={
            "kind": "requirement_letter", "file": (io.BytesIO(body), "letter.pdf")})

    from api.demo import demo_pdf

    for i in range(ROUNDS):
        bodies = [demo_pdf(f"round {i} by {n}") for n in ("impl", "impl2")]
        outcome = race(app, [upload(h, b) for h, b in zip(headers, bodies, strict=True)])
        assert [s for s, _ in outcome] == [201, 201], f"round {i}: {outcome}"
        ids = [body["id"] for _, body in outcome]
        for artefact_id, body in zip(ids, bodies, strict=True):
            row = db.session.get(Artefact, artefact_id)
            assert row.size == len(body) and verify_artefact(store, row), f"round {i}"
            assert events("artefact.uploaded", artefact_id) == 1
        assert len({(a.key, a.version_id) for a in map(lambda x: db.session.get(Artefact, x), ids)}) == 2
        db.session.remove()
    detail = world.get("impl", f"/api/v1/tasks/{world.task_named(item_id, 'intake')['id']}").get_json()
    assert {r["kind"]: r["present"] for r in detail["required_artefacts"]}["requirement_letter"] is True
    assert db.session.execute(select(func.count(Artefact.id)).where(Artefact.item_id == item_id)).scalar() \
        == 2 * ROUNDS


# ---------------------------------------------------------------- ledger and settlement

def test_two_reversals_of_one_entry_one_wins(world, app):
    pm = world.headers("pm")
    targets = entry_ids(completed_items(ROUNDS, prefix="REV2"))
    for i, entry in enumerate(targets):
        url = f"/api/v1/workload/entries/{entry}/reverse"
        outcome = race(app, [post(url, pm, {"reason": "重复登记"}), post(url, pm, {"reason": "重复登记"})])
        assert sorted(s for s, _ in outcome) == [201, 409], f"round {i}: {outcome}"
        assert [c for s, c in outcome if s == 409] == ["already_reversed"], f"round {i}: {outcome}"
        assert db.session.execute(select(func.count(WorkloadEntry.id))
                                  .where(WorkloadEntry.reverses_id == entry)).scalar() == 1
        db.session.remove()
    assert db.session.execute(select(func.count(AuditEvent.id))
                              .where(AuditEvent.event_type == "ledger.reversed")).scalar() == ROUNDS


def _settlement_with(world: Any, prefix: str) -> tuple[int, int]:
    """A new completed item and a settlement whose claim holds (at least) its one entry."""
    from tests.test_settlement import CURRENT

    adhoc_contract()
    entry = entry_ids(completed_items(1, prefix=prefix))[0]
    r = world.post("pm", "/api/v1/settlements", json=CURRENT)
    assert r.status_code == 201, r.get_json()
    assert entry in [ln["id"] for ln in r.get_json()["lines"]]
    return r.get_json()["id"], entry


def _reversal_event_before(entry: int, settlement_id: int, step: str) -> bool:
    """Whether the reversal of `entry` was committed before the settlement's `step` (the chain orders events
    by commit: they are linked under one lock at commit time)."""
    reversal = db.session.execute(select(WorkloadEntry.id).where(WorkloadEntry.reverses_id == entry)).scalar_one()
    reversed_at = db.session.execute(select(AuditEvent.id).where(
        AuditEvent.event_type == "ledger.reversed", AuditEvent.target_id == str(reversal))).scalar_one()
    step_at = db.session.execute(select(AuditEvent.id).where(
        AuditEvent.event_type == step, AuditEvent.target_id == str(settlement_id))).scalar_one()
    return bool(reversed_at < step_at)


def test_reversal_against_final_approval(world, app):
    """A claim at final approval (审定) is under review: the reversal of one of its entries is refused with
    409 entry_under_review whether it comes first or second, and the approval goes through every time."""
    world.user("buyer2", "buyer")
    pm, approver = world.headers("pm"), world.headers("buyer2")
    for i in range(ROUNDS):
        sid, entry = _settlement_with(world, f"FA{i}")
        assert world.post("pm", f"/api/v1/settlements/{sid}/submit", json={}).status_code == 200
        assert world.post("auditor", f"/api/v1/settlements/{sid}/accept", json={}).status_code == 200
        r = world.post("buyer", f"/api/v1/settlements/{sid}/first-review", json={"decision": "approve"})
        assert r.status_code == 200, r.get_json()
        outcome = race(app, [post(f"/api/v1/workload/entries/{entry}/reverse", pm, {"reason": "事后更正"}),
                             post(f"/api/v1/settlements/{sid}/final-approval", approver, {"decision": "approve"})])
        assert outcome[1][0] == 200, f"round {i}: {outcome}"
        assert outcome[0][0] == 409 and outcome[0][1] in ("entry_under_review", "settlement_locked"), \
            f"round {i}: {outcome}"
        assert db.session.execute(select(func.count(WorkloadEntry.id))
                                  .where(WorkloadEntry.reverses_id == entry)).scalar() == 0
        assert db.session.get(Settlement, sid).status == "approved"
        db.session.remove()


def test_reversal_against_submission(world, app):
    """While the claim is a draft its entries may be reversed; once submitted they may not. Racing the two,
    either the reversal commits before the submission, or it is refused — never a reversal after it."""
    pm = world.headers("pm")
    seen: dict[str, int] = {}
    for i in range(ROUNDS):
        sid, entry = _settlement_with(world, f"SB{i}")
        outcome = race(app, [post(f"/api/v1/workload/entries/{entry}/reverse", pm, {"reason": "事后更正"}),
                             post(f"/api/v1/settlements/{sid}/submit", pm, {})])
        assert outcome[1][0] == 200, f"round {i}: {outcome}"
        if outcome[0][0] == 201:
            assert _reversal_event_before(entry, sid, "settlement.submitted"), f"round {i}: reversed after submit"
            seen["reversed first"] = seen.get("reversed first", 0) + 1
        else:
            assert outcome[0] == (409, "entry_under_review"), f"round {i}: {outcome}"
            assert db.session.execute(select(func.count(WorkloadEntry.id))
                                      .where(WorkloadEntry.reverses_id == entry)).scalar() == 0
            seen["refused"] = seen.get("refused", 0) + 1
        db.session.remove()
    print(f"\nreversal vs submission: {seen}")

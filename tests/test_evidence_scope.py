"""Evidence belongs to the task, the department and the version it was submitted for: per-department steps
keep their own files, a deliverable under review cannot be swapped, and an upload's task_id is checked.

Every rule is exercised through each upload path (REST streamed, REST spooled, web), on SQLite and PostgreSQL,
with the real S3 server."""
from __future__ import annotations

import contextlib
import io
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from sqlalchemy import func, select

from api.demo import demo_pdf
from api.extensions import db
from storage.models import Artefact, GatePass
from tests.test_kinds_api import APPROVE, RETURN, do, intake, open_named
from tests.test_lifecycle_api import drive_to_survey_review
from tests.test_web import Browser

PATHS = ["streamed", "spooled", "web"]


@contextlib.contextmanager
def form_read_first(app: Any) -> Iterator[None]:
    """Make the REST upload take its spooled path: something reads the form before the view (as the web's CSRF
    check does), so werkzeug spools the file and the view stores that."""
    def read_form() -> None:
        from flask import request

        request.form  # noqa: B018

    # Appended directly: Flask refuses new setup hooks once the app has served a request.
    app.before_request_funcs.setdefault(None, []).append(read_form)
    try:
        yield
    finally:
        app.before_request_funcs[None].remove(read_form)


Send = Callable[..., Any]


@pytest.fixture(params=PATHS)
def send(request: pytest.FixtureRequest, world: Any, app: Any) -> Send:
    """Upload one file through one of the three upload paths; returns the response (JSON either way)."""
    browsers: dict[str, Browser] = {}

    def _send(user: str, item_id: int, kind: str, *, task_id: Any = None, body: bytes | None = None,
              filename: str | None = None) -> Any:
        body = body if body is not None else demo_pdf(f"{kind} {filename or ''}")
        filename = filename or f"{kind}.pdf"
        if request.param == "web":
            if user not in browsers:
                browsers[user] = Browser(app, user)
            b = browsers[user]
            data: dict[str, Any] = {"kind": kind}
            if task_id is not None:
                data["task_id"] = str(task_id)
            data["file"] = (io.BytesIO(body), filename)
            b._fresh_g()
            return b.client.post(f"/items/{item_id}/artefacts", data=data, content_type="multipart/form-data",
                                 headers={"Accept": "application/json", "X-CSRFToken": b.token})
        if request.param == "spooled":
            with form_read_first(app):
                return world.upload(user, item_id, kind, body, filename, task_id=task_id)
        return world.upload(user, item_id, kind, body, filename, task_id=task_id)

    return _send


def evidence_state(store: Any, item_id: int) -> dict[str, Any]:
    """The item's artefact rows and the objects under its prefix: unchanged by a refused upload."""
    prefix = f"contracts/SH-YWTB-2025/items/{item_id}/"
    return {"rows": db.session.execute(select(func.count(Artefact.id))).scalar(),
            "objects": {(o.key, o.version_id) for o in store.iter_objects(prefix)}}


def refused(r: Any, status: int, code: str) -> dict[str, Any]:
    body = r.get_json()
    assert r.status_code == status and body is not None and body["code"] == code, (r.status_code, body)
    return body


def one_thing_at_analysis(world: Any, code: str) -> tuple[int, dict[str, dict[str, Any]]]:
    """A one-thing with departments DA and DB, both at their linked-item analysis."""
    item_id = world.new_item(code, line="5", department="DA", attributes={"departments": ["DA", "DB"]})["id"]
    intake(world, item_id)
    do(world, "impl", item_id, "survey_current", {"item_count": 2})
    analyses = {t["department"]: t for t in open_named(world, item_id, "analyse_linked_item")}
    assert sorted(analyses) == ["DA", "DB"]
    return item_id, analyses


def passed_with(task_id: int) -> list[int]:
    """The artefact ids a task's gate pass recorded."""
    return list(db.session.scalars(select(GatePass.artefact_id).where(GatePass.task_id == task_id)
                                   .order_by(GatePass.id)))


def review_ids(world: Any, user: str, task_id: int) -> list[int]:
    r = world.get(user, f"/api/v1/tasks/{task_id}")
    assert r.status_code == 200, r.get_json()
    return [a["id"] for a in r.get_json()["artefacts_to_review"]]


# ---------------------------------------------------------------- one-thing: each department its own analysis

def test_each_department_must_upload_its_own_analysis(world, send):
    item_id, analyses = one_thing_at_analysis(world, "SH-SCOPE-1")
    r = send("impl", item_id, "item_analysis", task_id=analyses["DA"]["id"], filename="da.pdf")
    assert r.status_code == 201, r.get_json()
    da_file = r.get_json()

    # DA's file does not satisfy DB's gate: DB's checklist shows it missing, and completing is refused.
    detail = world.get("impl", f"/api/v1/tasks/{analyses['DB']['id']}").get_json()
    assert [(q["kind"], q["present"]) for q in detail["required_artefacts"]] == [("item_analysis", False)]
    r = world.complete("impl", analyses["DB"]["id"], {"notes": "DB"})
    assert refused(r, 422, "gate_unmet")["missing"] == ["item_analysis"]
    assert da_file["department"] == "DA" and da_file["task_id"] == analyses["DA"]["id"]
    assert world.complete("impl", analyses["DA"]["id"], {"notes": "DA"}).status_code == 200

    r = send("impl", item_id, "item_analysis", task_id=analyses["DB"]["id"], filename="db.pdf")
    assert r.status_code == 201, r.get_json()
    db_file = r.get_json()
    assert db_file["department"] == "DB"
    assert world.complete("impl", analyses["DB"]["id"], {"notes": "DB"}).status_code == 200
    # Each gate pass records its own department's file.
    assert passed_with(analyses["DA"]["id"]) == [da_file["id"]]
    assert passed_with(analyses["DB"]["id"]) == [db_file["id"]]


def test_a_reviewer_sees_only_their_departments_file(world, app):
    item_id, analyses = one_thing_at_analysis(world, "SH-SCOPE-2")
    files = {}
    for dept in ("DA", "DB"):  # DB's goes last: "the latest item_analysis" would be DB's for both reviews
        r = world.upload("impl", item_id, "item_analysis", demo_pdf(f"{dept} 关联事项分析"),
                         f"{dept.lower()}-analysis.pdf", task_id=analyses[dept]["id"])
        assert r.status_code == 201, r.get_json()
        files[dept] = r.get_json()["id"]
        assert world.complete("impl", analyses[dept]["id"], {"notes": dept}).status_code == 200
    confirms = {t["department"]: t for t in open_named(world, item_id, "confirm_linked_item")}
    reviewers = {"DA": "rev_a", "DB": "rev_b"}

    for dept, other in (("DA", "DB"), ("DB", "DA")):
        reviewer = reviewers[dept]
        # The API task detail lists exactly this department's submitted file.
        assert review_ids(world, reviewer, confirms[dept]["id"]) == [files[dept]]
        # The item, its artefact list and the download keep the other department's file from this reviewer.
        detail = world.get(reviewer, f"/api/v1/items/{item_id}").get_json()
        assert files[dept] in [a["id"] for a in detail["artefacts"]]
        assert files[other] not in [a["id"] for a in detail["artefacts"]]
        listed = world.get(reviewer, f"/api/v1/items/{item_id}/artefacts").get_json()["artefacts"]
        assert files[other] not in [a["id"] for a in listed]
        assert world.get(reviewer, f"/api/v1/artefacts/{files[other]}/content").status_code == 404
        assert world.get(reviewer, f"/api/v1/artefacts/{files[dept]}/content").status_code == 200

        # The web task page and item page show the same scope.
        b = Browser(app, reviewer)
        page = b.get(f"/tasks/{confirms[dept]['id']}").get_data(as_text=True)
        assert f"{dept.lower()}-analysis.pdf" in page and f"{other.lower()}-analysis.pdf" not in page
        assert f'data-artefact="{files[dept]}"' in page
        page = b.get(f"/items/{item_id}").get_data(as_text=True)
        assert f"{dept.lower()}-analysis.pdf" in page and f"{other.lower()}-analysis.pdf" not in page
        assert b.get(f"/artefacts/{files[other]}").status_code == 404

    # Those who read everything see both, each marked with its department.
    listed = world.get("pm", f"/api/v1/items/{item_id}/artefacts").get_json()["artefacts"]
    assert {a["id"]: a["department"] for a in listed if a["kind"] == "item_analysis"} == {
        files["DA"]: "DA", files["DB"]: "DB"}
    assert world.complete("rev_a", confirms["DA"]["id"], APPROVE).status_code == 200
    assert world.complete("rev_b", confirms["DB"]["id"], APPROVE).status_code == 200
    assert open_named(world, item_id, "business_technical_plan")


def test_a_department_review_locks_only_that_departments_file(world, store):
    item_id, analyses = one_thing_at_analysis(world, "SH-SCOPE-3")
    do(world, "impl", item_id, "analyse_linked_item", {"notes": "DA"}, department="DA")
    da_review = open_named(world, item_id, "confirm_linked_item", "DA")[0]
    submitted = review_ids(world, "rev_a", da_review["id"])
    assert submitted == passed_with(analyses["DA"]["id"])
    for user in ("impl", "rev_a"):
        world.headers(user)
    before = evidence_state(store, item_id)
    # DA's file is under review: nobody replaces it, naming the review or the finished analysis.
    for user in ("impl", "rev_a"):
        r = world.upload(user, item_id, "item_analysis", task_id=da_review["id"])
        assert refused(r, 409, "under_review")["review_task_id"] == da_review["id"]
    r = world.upload("impl", item_id, "item_analysis", task_id=analyses["DA"]["id"])
    refused(r, 422, "task_not_open")
    # A reviewer never puts files into another department's scope.
    refused(world.upload("rev_a", item_id, "item_analysis", task_id=analyses["DB"]["id"]), 403,
            "not_your_department")
    assert evidence_state(store, item_id) == before
    # DB's analysis is still open and takes its own file; with only DB's step needing one, no task_id is needed.
    r = world.upload("impl", item_id, "item_analysis")
    assert r.status_code == 201 and r.get_json()["department"] == "DB", r.get_json()
    assert review_ids(world, "rev_a", da_review["id"]) == submitted

    # Once DB's is under review too, nothing is open for the kind but the two reviews: refused.
    do(world, "impl", item_id, "analyse_linked_item", {"notes": "DB"}, department="DB")
    refused(world.upload("impl", item_id, "item_analysis"), 409, "under_review")

    # A return reopens DA's uploads; the second review shows the new version, and DB's still its own.
    assert world.complete("rev_a", da_review["id"], RETURN).status_code == 200
    rework = open_named(world, item_id, "analyse_linked_item", "DA")[0]
    r = world.upload("impl", item_id, "item_analysis", demo_pdf("DA v2"), "da-v2.pdf", task_id=rework["id"])
    assert r.status_code == 201, r.get_json()
    v2 = r.get_json()["id"]
    assert world.complete("impl", rework["id"], {"notes": "DA 修改"}).status_code == 200
    again = open_named(world, item_id, "confirm_linked_item", "DA")[0]
    assert review_ids(world, "rev_a", again["id"]) == [v2]
    db_review = open_named(world, item_id, "confirm_linked_item", "DB")[0]
    assert review_ids(world, "rev_b", db_review["id"]) == passed_with(analyses["DB"]["id"])


# ---------------------------------------------------------------- what was submitted is what is reviewed

def test_a_swap_during_review_is_refused_until_a_return(world, app, store, send):
    item_id = world.new_item("SH-SCOPE-4")["id"]
    drive_to_survey_review(world, item_id)
    sorting = next(t for t in world.get("pm", f"/api/v1/items/{item_id}").get_json()["tasks"]
                   if t["name"] == "survey_sorting")
    review = world.task_named(item_id, "confirm_survey")
    submitted = passed_with(sorting["id"])
    assert len(submitted) == 2 and review_ids(world, "rev_a", review["id"]) == submitted

    # The submitter, the reviewer and the PM alike: no new version of a kind under review, by any path.
    send("impl", item_id, "complexity_statement")  # a kind not under review still uploads (and logs users in)
    send("rev_a", item_id, "complexity_statement")
    send("pm", item_id, "complexity_statement")
    before = evidence_state(store, item_id)
    for user, task_id in (("impl", None), ("rev_a", None), ("rev_a", review["id"]), ("pm", None)):
        r = send(user, item_id, "survey_form", task_id=task_id, body=demo_pdf("swapped"), filename="swap.pdf")
        body = refused(r, 409, "under_review")
        assert body["kind"] == "survey_form" and body["review_task_id"] == review["id"]
    assert evidence_state(store, item_id) == before
    assert review_ids(world, "rev_a", review["id"]) == submitted
    # A co-sign or any other step that reviews no gate is not affected (covered by the lifecycle tests); here
    # the review itself goes on with what was submitted.
    assert world.complete("rev_a", review["id"], {"decision": "return", "comment": "请补充材料字段"}).status_code \
        == 200

    # The return reopens uploads; the round-2 review lists the new version and the unchanged one.
    rework = world.task_named(item_id, "survey_sorting")
    r = send("impl", item_id, "survey_form", task_id=rework["id"], body=demo_pdf("survey v2"),
             filename="survey-v2.pdf")
    assert r.status_code == 201, r.get_json()
    v2 = r.get_json()["id"]
    world.complete_task_as("impl", item_id, "survey_sorting", {"item_count": 4})
    again = world.task_named(item_id, "confirm_survey")
    old = {a["kind"]: a["id"] for a in world.get("pm", f"/api/v1/items/{item_id}/artefacts").get_json()["artefacts"]
           if a["id"] in submitted}
    assert review_ids(world, "rev_a", again["id"]) == [v2, old["sorting_list"]]
    page = Browser(app, "rev_a").get(f"/tasks/{again['id']}").get_data(as_text=True)
    assert "survey-v2.pdf" in page and f'data-artefact="{old["survey_form"]}"' not in page


# ---------------------------------------------------------------- an upload's task_id

def test_an_upload_a_kind_several_departments_need_must_name_its_task(world, store, send):
    item_id, analyses = one_thing_at_analysis(world, "SH-SCOPE-5")
    send("impl", item_id, "business_plan")  # an item-wide kind needs no task_id (and logs the user in)
    before = evidence_state(store, item_id)
    body = refused(send("impl", item_id, "item_analysis"), 422, "task_required")
    assert sorted((t["id"], t["department"]) for t in body["tasks"]) == sorted(
        (t["id"], dept) for dept, t in analyses.items())
    # A department's step takes only the kinds it is about.
    body = refused(send("impl", item_id, "current_state_survey", task_id=analyses["DA"]["id"]), 422,
                   "kind_not_for_task")
    assert body["kinds"] == ["item_analysis"]
    assert evidence_state(store, item_id) == before
    r = send("impl", item_id, "item_analysis", task_id=analyses["DB"]["id"])
    assert r.status_code == 201 and r.get_json()["department"] == "DB", r.get_json()


@pytest.mark.parametrize("bad", ["abc", "", "1e3", "-1", "0", "12.0", "١٢", "9" * 40])
def test_an_upload_task_id_that_is_not_a_number_is_422(world, store, send, bad, request):
    item_id = world.new_item("SH-SCOPE-6")["id"]
    send("impl", item_id, "complexity_statement")
    before = evidence_state(store, item_id)
    body = refused(send("impl", item_id, "requirement_letter", task_id=bad), 422, "invalid_task_id")
    # The API names the field; the task page's script shows the person a sentence in their language.
    web = request.node.callspec.params["send"] == "web"
    assert ("任务" in body["detail"]) if web else ("task_id" in body["detail"])
    assert evidence_state(store, item_id) == before


def test_an_upload_task_id_must_be_an_open_task_of_the_same_item(world, store, send):
    mine = world.new_item("SH-SCOPE-7")["id"]
    other = world.new_item("SH-SCOPE-8")["id"]
    other_intake = world.task_named(other, "intake")
    send("impl", mine, "complexity_statement")
    before = evidence_state(store, mine)
    # Another item's open task: refused, and no link across items is made.
    refused(send("impl", mine, "requirement_letter", task_id=other_intake["id"]), 422, "unknown_task")
    refused(send("impl", mine, "requirement_letter", task_id=10**15), 422, "unknown_task")
    assert evidence_state(store, mine) == before
    linked = db.session.execute(select(func.count(Artefact.id)).where(
        Artefact.task_id == other_intake["id"])).scalar()
    assert linked == 0
    # A task of this item that is closed takes no more evidence.
    intake_task = world.task_named(mine, "intake")
    world.complete_task_as("impl", mine, "intake", {"summary": "新增接入"})
    refused(send("impl", mine, "requirement_letter", task_id=intake_task["id"]), 422, "task_not_open")
    assert db.session.execute(select(func.count(Artefact.id)).where(Artefact.item_id == mine,
                                                                    Artefact.kind == "requirement_letter")
                              ).scalar() == 1
    # Its open task does.
    confirm = world.task_named(mine, "confirm_difficulty")
    r = send("pm", mine, "complexity_statement", task_id=confirm["id"])
    assert r.status_code == 201 and r.get_json()["task_id"] == confirm["id"], r.get_json()


# ---------------------------------------------------------------- an upload racing the submission it would change

RACE_ROUNDS = 50


def _at_once(app: Any, calls: list[Callable[[Any], Any]]) -> list[Any]:
    """Run each call with its own test client (its own app context and session) in its own thread, released
    together; returns their responses in order."""
    import threading

    barrier = threading.Barrier(len(calls))
    results: list[Any] = [None] * len(calls)
    errors: list[BaseException] = []

    def worker(n: int) -> None:
        try:
            client = app.test_client()
            barrier.wait(timeout=30)
            results[n] = calls[n](client)
        except BaseException as exc:  # surfaced in the main thread below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(len(calls))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors, errors
    return results


def test_an_upload_racing_the_submission_is_either_reviewed_or_refused(world, app, backend):
    """PostgreSQL, real commits from two threads: the submission of the survey and a new version of its survey
    form at the same instant. Either the upload lands first and is the version under review, or it is refused
    409 — never a version accepted after the gate was read and left out of the review."""
    if backend != "postgresql":
        pytest.skip("PostgreSQL only: SQLite serialises writers, so there is no real race to test")
    impl, impl2 = world.headers("impl"), world.headers("impl2")
    outcomes: dict[int, int] = {}
    for i in range(RACE_ROUNDS):
        item_id = world.new_item(f"SH-RACE-EV-{i}", channels=["pc"])["id"]
        world.complete_task_as("impl", item_id, "intake", {"summary": "新增接入"})
        world.complete_task_as("pm", item_id, "confirm_difficulty", {"difficulty": "1.0", "complexity_note": "一般"})
        sorting = world.task_named(item_id, "survey_sorting")
        for kind in ("survey_form", "sorting_list"):
            assert world.upload("impl", item_id, kind, task_id=sorting["id"]).status_code == 201
        db.session.remove()  # the main thread holds no snapshot or connection during the race

        def submit(client: Any, task_id: int = sorting["id"]) -> Any:
            return client.post(f"/api/v1/tasks/{task_id}/complete", json={"data": {"item_count": 3}}, headers=impl)

        def swap(client: Any, item: int = item_id) -> Any:
            data = {"kind": "survey_form", "file": (io.BytesIO(demo_pdf(f"v2 {item}")), "v2.pdf")}
            return client.post(f"/api/v1/items/{item}/artefacts", data=data, headers=impl2,
                               content_type="multipart/form-data")

        submitted, swapped = _at_once(app, [submit, swap])
        assert submitted.status_code == 200, (i, submitted.get_json())
        assert swapped.status_code in (201, 409), (i, swapped.get_json())
        outcomes[swapped.status_code] = outcomes.get(swapped.status_code, 0) + 1
        review = world.task_named(item_id, "confirm_survey")
        reviewed = review_ids(world, "rev_a", review["id"])
        latest = db.session.execute(select(func.max(Artefact.id)).where(
            Artefact.item_id == item_id, Artefact.kind == "survey_form")).scalar()
        # The newest survey form is the one under review, whichever request won.
        assert latest in reviewed, (i, swapped.status_code, latest, reviewed)
        if swapped.status_code == 201:
            assert swapped.get_json()["id"] == latest
        db.session.remove()
    assert sum(outcomes.values()) == RACE_ROUNDS and outcomes.get(409), outcomes  # the race was really run


# ---------------------------------------------------------------- rows from before the evidence scope

@pytest.fixture
def fresh_app(backend: str, s3_server: Any, tmp_path: Any) -> Iterator[Any]:
    """An app on a database of its own (this test moves the schema down and up again)."""
    import secrets

    import psycopg

    from tests.conftest import PG_ADMIN_DSN, _pg_url, make_app

    name = None
    if backend == "sqlite":
        url = f"sqlite:///{tmp_path / 'migrate.db'}"
    else:
        name = f"itemgate_mig_{secrets.token_hex(4)}"
        with psycopg.connect(PG_ADMIN_DSN, autocommit=True) as admin:
            admin.execute(f'CREATE DATABASE "{name}"')
        url = _pg_url(name)
    fresh = make_app(url, s3_server, f"itemgate-mig-{backend}")
    try:
        with fresh.app_context():
            yield fresh
            db.session.remove()
            db.engine.dispose()
    finally:
        if name is not None:
            with psycopg.connect(PG_ADMIN_DSN, autocommit=True) as admin:
                admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def test_the_migration_scopes_existing_per_department_evidence(fresh_app):
    """Rows written before the scope existed are filled in from the deployed model: the per-department steps'
    tasks are marked, and files uploaded for them become their department's; the rest stays the item's."""
    from flask_migrate import downgrade, upgrade

    from bpmn import CATALOG_DIR
    from engine.usecases.admin import load_catalog_file
    from storage.models import HumanTask
    from tests.conftest import World

    load_catalog_file(db.session, CATALOG_DIR / "shanghai.toml")
    db.session.commit()
    world = World(fresh_app, fresh_app.test_client())
    for username, role, dept in (("impl", "implementer", None), ("pm", "pm", None), ("rev_a", "dept_reviewer", "DA"),
                                 ("rev_b", "dept_reviewer", "DB")):
        world.user(username, role, dept)
    item_id, analyses = one_thing_at_analysis(world, "SH-MIG-1")
    uploaded = {}
    for dept, task in analyses.items():
        r = world.upload("impl", item_id, "item_analysis", task_id=task["id"])
        assert r.status_code == 201, r.get_json()
        uploaded[dept] = r.get_json()["id"]
    loose = world.upload("impl", item_id, "business_plan").get_json()["id"]
    db.session.remove()

    downgrade(revision="13a_export_job_attempts")
    upgrade(revision="heads")
    db.session.remove()

    marked = {t.spec_name: t.per_department for t in db.session.scalars(
        select(HumanTask).where(HumanTask.item_id == item_id))}
    assert marked == {"intake": False, "confirm_difficulty": False, "review_difficulty": False,
                      "survey_current": False, "analyse_linked_item": True}
    scoped = {a.id: a.department.code if a.department else None for a in db.session.scalars(
        select(Artefact).where(Artefact.item_id == item_id, Artefact.kind.in_(["item_analysis", "business_plan"])))}
    assert scoped == {uploaded["DA"]: "DA", uploaded["DB"]: "DB", loose: None}

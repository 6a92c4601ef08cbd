"""Every rule of the URL map × every role answers as the matrix in engine/trust/policy.py says (SQLite only:
authorisation does not depend on the database). A route without a matrix entry fails here."""
from __future__ import annotations

import re
from typing import Any

import pytest

from api import authz
from api.app import create_app
from api.config import load_settings
from engine.trust import policy
from tests.conftest import World, seeded_sqlite_world, truncate_all
from tests.test_web import HTML, Browser

ROLE_USERS = {"implementer": "impl", "dept_reviewer": "rev_a", "pm": "pm", "auditor": "auditor",
              "buyer": "buyer", "admin": "admin"}
CALLERS = [*ROLE_USERS, "anonymous"]


def _url_rules() -> list[tuple[str, str, str]]:
    app = create_app(load_settings({}, testing=True, database_url="sqlite:///:memory:", log_json=False))
    cases = []
    for rule in app.url_map.iter_rules():
        for method in sorted(rule.methods - {"HEAD", "OPTIONS"}):
            cases.append((rule.endpoint, method, rule.rule))
    return sorted(cases)


RULES = _url_rules()


@pytest.fixture(scope="module")
def matrix_world(_apps, tmp_path_factory, s3_server) -> Any:
    world = seeded_sqlite_world(_apps, tmp_path_factory, s3_server)
    app = world.app
    from api.extensions import db

    with app.app_context():
        item = world.new_item("AUTHZ-1")
        r = world.upload("impl", item["id"], "requirement_letter")
        assert r.status_code == 201
        world.ids = {"item_id": item["id"], "task_id": world.open_tasks(item["id"])[0]["id"],
                     "artefact_id": r.get_json()["id"], "note_id": 1, "year": 2026, "settlement_id": 1,
                     "definition_id": 1}
        world.browsers = {}
        yield world
        db.session.remove()
    truncate_all(app)


def _url(rule: str, ids: dict[str, Any]) -> str:
    def fill(match: re.Match[str]) -> str:
        converter, name = match.group(1), match.group(2)
        if name in ids:
            return str(ids[name])
        if converter == "path":
            return "app.css"
        return "1" if converter in ("int", "float") else "x"

    return re.sub(r"<(?:(\w+)(?:\([^)]*\))?:)?(\w+)>", fill, rule)


def _call(world: World, caller: str, method: str, url: str) -> Any:
    from flask import g

    # The test keeps one app context open, so Flask-Login's per-request user cache in `g` would leak from
    # one simulated browser to the next.
    g.pop("_login_user", None)
    api = url.startswith("/api/")
    if caller == "anonymous":
        client = world.app.test_client()
        return client.open(url, method=method, json={} if api and method != "GET" else None,
                           headers=None if api else HTML)
    username = ROLE_USERS[caller]
    if api:
        kwargs = {"json": {}} if method != "GET" else {}
        response = world.client.open(url, method=method, headers=world.headers(username), **kwargs)
        if url == "/api/v1/auth/logout" and response.status_code == 204:
            world.tokens.pop(username)  # that token has ended; the next call signs in afresh
        return response
    if username not in world.browsers:
        world.browsers[username] = Browser(world.app, username)
        g.pop("_login_user", None)
    browser = world.browsers[username]
    # No CSRF token on purpose: authorisation is decided before the CSRF check, and a 400 for the
    # missing token still shows that the role got past the matrix.
    return browser.client.open(url, method=method, headers=HTML, data={} if method != "GET" else None)


@pytest.mark.parametrize("caller", CALLERS)
@pytest.mark.parametrize(("endpoint", "method", "rule"), RULES, ids=[f"{m} {r}" for _, m, r in RULES])
def test_route_answers_as_the_matrix_says(matrix_world, endpoint, method, rule, caller):
    decided = authz.rule_for_endpoint(endpoint, method)
    assert decided is not None, f"{endpoint} ({method} {rule}) has no entry in api/authz.py ENDPOINTS"
    url = _url(rule, matrix_world.ids)
    r = _call(matrix_world, caller, method, url)
    status = r.status_code
    body = r.get_json(silent=True) or {}
    role = None if caller == "anonymous" else caller
    if decided.public:
        assert status not in (401, 403), (url, caller, status, body)
    elif role is None:
        if url.startswith("/api/"):
            assert status == 401, (url, status)
        else:  # the web sends the anonymous to the login page
            assert status in (302, 401) and (status == 401 or "/login" in r.headers["Location"]), (url, status)
    elif decided.allows(role):
        assert status != 401 and body.get("code") not in ("role_required", "no_policy"), (url, caller, status, body)
        assert status < 500, (url, caller, status, r.get_data(as_text=True)[:300])
        if not url.startswith("/api/") and method == "GET":
            assert status != 403, (url, caller, status)
    else:
        assert status == 403, (url, caller, status, body)
        if url.startswith("/api/"):
            assert body.get("code") == "role_required"


def test_every_matrix_entry_names_a_real_action():
    for endpoint, entry in authz.ENDPOINTS.items():
        actions = entry.values() if isinstance(entry, dict) else [entry]
        for action in actions:
            assert action in policy.RULES, f"{endpoint} → unknown action {action}"
    for command, action in authz.CLI_COMMANDS.items():
        assert action in policy.RULES, f"itemgate {command} → unknown action {action}"
    for rule in policy.RULES.values():
        assert set(rule.grants) <= set(policy.ROLES)
        assert set(rule.grants.values()) <= set(policy.SCOPE_TEXT)


def test_every_cli_command_has_an_entry():
    import click

    from api.cli import main

    def walk(group: click.Group, prefix: list[str]) -> list[str]:
        out = []
        for name, command in group.commands.items():
            if isinstance(command, click.Group):
                out += walk(command, [*prefix, name])
            else:
                out.append(" ".join([*prefix, name]))
        return out

    missing = sorted(set(walk(main, [])) - set(authz.CLI_COMMANDS))
    assert not missing, f"CLI commands without an entry in api/authz.py CLI_COMMANDS: {missing}"


def test_cli_refuses_a_command_without_an_entry(monkeypatch):
    from click.testing import CliRunner

    from api.cli import main

    monkeypatch.delitem(authz.CLI_COMMANDS, "authz table")
    result = CliRunner().invoke(main, ["authz", "table"])
    assert result.exit_code != 0 and "authorization matrix" in result.output


def test_committed_authz_doc_matches_the_matrix():
    from api.cli_trust import DOCS_AUTHZ

    assert DOCS_AUTHZ.read_text(encoding="utf-8") == authz.markdown_table(), \
        "docs/AUTHZ.md is stale: run `itemgate authz table --write`"


def test_unknown_endpoint_is_denied_by_default(world, monkeypatch):
    monkeypatch.delitem(authz.ENDPOINTS, "core.catalog")
    r = world.get("admin", "/api/v1/catalog")
    assert r.status_code == 403 and r.get_json()["code"] == "no_policy"


def test_scope_dimension_department_and_lane(world):
    """Role granted, row out of reach: another department's reviewer gets 404 (existence not revealed);
    a task in another lane gets 403 not_your_task."""
    item = world.new_item("SCOPE-1", department="DA")
    artefact = world.upload("impl", item["id"], "requirement_letter").get_json()
    task = world.open_tasks(item["id"])[0]
    for url in (f"/api/v1/items/{item['id']}", f"/api/v1/items/{item['id']}/artefacts",
                f"/api/v1/artefacts/{artefact['id']}/content", f"/api/v1/tasks/{task['id']}"):
        assert world.get("rev_b", url).status_code == 404, url
        r = world.get("rev_a", url)
        assert r.status_code == 200, url
        r.close()
    assert world.get("rev_b", "/api/v1/items").get_json()["total"] == 0
    r = world.post("rev_b", f"/api/v1/items/{item['id']}/artefacts",
                   data={"kind": "requirement_letter", "file": (__import__("io").BytesIO(b"%PDF-1.4\n"), "a.pdf")},
                   content_type="multipart/form-data")
    assert r.status_code == 404
    # The intake task is the implementer's lane: a PM (granted task.complete for their own lane) may not.
    r = world.complete("pm", task["id"], {})
    assert r.status_code == 403 and r.get_json()["code"] == "not_your_task"

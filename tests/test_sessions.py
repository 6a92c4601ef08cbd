"""Sessions and credentials end: web sign-out on the server, API token logout, password changes, an
administrator's deactivation and reset (REST and CLI), and login limits that a colleague's guesses cannot use
to lock someone out."""
from __future__ import annotations

from typing import Any

from sqlalchemy import func, select

from api.extensions import db
from storage.models import AuditEvent, HumanTask, LoginAttempt, User, WebSession
from tests.conftest import PASSWORD, make_app
from tests.test_web import HTML, Browser

NEW_PASSWORD = "a-brand-new-passphrase"  # noqa: S105


def _token(client: Any, username: str, password: str = PASSWORD, ip: str = "127.0.0.1") -> Any:
    return client.post("/api/v1/auth/token", json={"username": username, "password": password},
                       environ_base={"REMOTE_ADDR": ip})


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def _replay(app: Any, cookie: str, user_agent: str | None = None) -> Any:
    """A different client presenting a copy of a session cookie."""
    from flask import g

    g.pop("_login_user", None)
    other = app.test_client()
    other.set_cookie("session", cookie)
    headers = dict(HTML)
    if user_agent is not None:
        headers["User-Agent"] = user_agent
    return other.get("/inbox", headers=headers)


def _to_login(response: Any) -> bool:
    return response.status_code == 302 and "/login" in response.headers["Location"]


def _events(event_type: str, **where: Any) -> list[AuditEvent]:
    query = select(AuditEvent).where(AuditEvent.event_type == event_type)
    for key, value in where.items():
        query = query.where(getattr(AuditEvent, key) == value)
    return list(db.session.scalars(query.order_by(AuditEvent.id)))


# ---------------------------------------------------------------- web sessions

def test_web_logout_ends_the_session_on_the_server(world, app):
    b = Browser(app, "impl")
    cookie = b.client.get_cookie("session").value
    assert _replay(app, cookie).status_code == 200  # a copy of the cookie works while the session lives
    assert b.post("/logout").status_code == 302
    assert _to_login(_replay(app, cookie))  # … and not after sign-out, though its signature is still good
    assert db.session.execute(select(func.count(WebSession.id))).scalar() == 0


def test_session_cookie_from_another_client_is_refused(world, app):
    b = Browser(app, "impl")
    cookie = b.client.get_cookie("session").value
    assert b.get("/inbox").status_code == 200
    assert _to_login(_replay(app, cookie, user_agent="Mozilla/5.0 (somebody else)"))
    assert b.get("/inbox").status_code == 200  # the signed-in user keeps their session


# ---------------------------------------------------------------- API tokens and passwords

def test_api_logout_revokes_only_that_token(world, app, client):
    first = _token(client, "impl").get_json()["token"]
    second = _token(client, "impl").get_json()["token"]
    assert client.get("/api/v1/me", headers=_bearer(first)).status_code == 200
    r = client.post("/api/v1/auth/logout", headers=_bearer(first))
    assert r.status_code == 204 and not r.data
    r = client.get("/api/v1/me", headers=_bearer(first))
    assert r.status_code == 401 and r.get_json()["code"] == "unauthorized"
    assert client.post("/api/v1/auth/logout", headers=_bearer(first)).status_code == 401
    assert client.get("/api/v1/me", headers=_bearer(second)).status_code == 200
    assert len(_events("auth.logout")) == 1


def test_password_change_ends_every_token_and_web_session(world, app, client):
    tokens = [_token(client, "impl").get_json()["token"] for _ in range(2)]
    browser = Browser(app, "impl")
    assert browser.get("/inbox").status_code == 200
    url = "/api/v1/me/password"
    r = client.post(url, headers=_bearer(tokens[0]), json={"current_password": "not-it", "new_password": NEW_PASSWORD})
    assert r.status_code == 422 and r.get_json()["code"] == "wrong_password"
    r = client.post(url, headers=_bearer(tokens[0]), json={"current_password": PASSWORD, "new_password": "short"})
    assert r.status_code == 422
    assert all(client.get("/api/v1/me", headers=_bearer(t)).status_code == 200 for t in tokens)  # nothing ended

    r = client.post(url, headers=_bearer(tokens[0]), json={"current_password": PASSWORD, "new_password": NEW_PASSWORD})
    assert r.status_code == 204
    assert all(client.get("/api/v1/me", headers=_bearer(t)).status_code == 401 for t in tokens)
    assert _to_login(browser.get("/inbox"))
    assert _token(client, "impl").status_code == 401
    assert _token(client, "impl", NEW_PASSWORD).status_code == 200
    outcomes = [e.outcome for e in _events("user.password_changed")]
    assert outcomes == ["failure", "success"]
    assert _events("user.password_changed")[-1].detail["tokens_revoked"] == 2


# ---------------------------------------------------------------- the administrator

def _claim_intake(world: Any) -> int:
    item_id = world.new_item("DEACT-1")["id"]
    task = world.task_named(item_id, "intake")
    assert world.post("impl", f"/api/v1/tasks/{task['id']}/claim").status_code == 200
    assert world.upload("impl", item_id, "requirement_letter").status_code == 201
    return task["id"]


def test_admin_deactivates_a_user_everything_ends_and_claims_return(world, app, client):
    task_id = _claim_intake(world)
    impl_token = world.tokens["impl"]
    browser = Browser(app, "impl")
    assert browser.get("/inbox").status_code == 200

    assert world.client.patch("/api/v1/users/impl", json={"active": False},
                              headers=world.headers("pm")).status_code == 403
    r = world.client.patch("/api/v1/users/impl", json={"active": False}, headers=world.headers("admin"))
    assert r.status_code == 200, r.get_json()
    assert r.get_json()["active"] is False and r.get_json()["tasks_released"] == [task_id]

    assert client.get("/api/v1/me", headers=_bearer(impl_token)).status_code == 401
    assert _to_login(browser.get("/inbox"))
    r = _token(client, "impl")
    assert r.status_code == 401 and r.get_json()["code"] == "bad_credentials"
    # The claimed task is back in the implementers' queue; what impl did stays on record.
    task = db.session.get(HumanTask, task_id)
    assert task.assignee_id is None and task.status == "ready"
    group = world.get("impl2", "/api/v1/tasks?scope=group").get_json()["tasks"]
    assert task_id in [t["id"] for t in group]
    assert _events("task.unclaimed", target_id=str(task_id))[-1].detail["reason"] == "user_deactivated"
    assert _events("artefact.uploaded", username="impl")
    assert db.session.execute(select(User).where(User.username == "impl")).scalar() is not None

    r = world.client.patch("/api/v1/users/impl", json={"active": True}, headers=world.headers("admin"))
    assert r.status_code == 200 and r.get_json()["active"] is True
    assert _token(client, "impl").status_code == 200


def test_admin_reset_role_and_department_and_refusals(world, app, client):
    admin = world.headers("admin")
    old = world.tokens.get("impl") or world.headers("impl")["Authorization"].split()[1]
    r = world.client.patch("/api/v1/users/impl", json={"password": NEW_PASSWORD}, headers=admin)
    assert r.status_code == 200
    assert client.get("/api/v1/me", headers=_bearer(old)).status_code == 401
    assert _token(client, "impl", NEW_PASSWORD).status_code == 200

    r = world.client.patch("/api/v1/users/impl2", json={"role": "dept_reviewer"}, headers=admin)
    assert r.status_code == 422 and "department" in r.get_json()["errors"]
    r = world.client.patch("/api/v1/users/impl2", json={"role": "dept_reviewer", "department": "DB"}, headers=admin)
    assert r.status_code == 200 and (r.get_json()["role"], r.get_json()["department"]) == ("dept_reviewer", "DB")
    assert world.get("impl2", "/api/v1/me").get_json()["role"] == "dept_reviewer"  # next request, same token

    for body, status in (({}, 422), ({"active": "no"}, 422), ({"role": "king"}, 422), ({"password": "short"}, 422),
                         ({"colour": "red"}, 422)):
        assert world.client.patch("/api/v1/users/impl2", json=body, headers=admin).status_code == status, body
    assert world.client.patch("/api/v1/users/nobody", json={"active": False}, headers=admin).status_code == 404
    r = world.client.patch("/api/v1/users/admin", json={"active": False}, headers=admin)
    assert r.status_code == 409 and r.get_json()["code"] == "last_admin"
    assert world.get("admin", "/api/v1/me").status_code == 200
    changes = [e.detail["changes"] for e in _events("user.changed")]
    assert {"password": "reset"} in changes and all("hash" not in str(c) for c in changes)


def test_cli_deactivates_and_sets_a_password(world, app, client, cli):
    task_id = _claim_intake(world)
    impl_token = world.tokens["impl"]
    result = cli("users", "deactivate", "impl")
    assert result.exit_code == 0, result.output
    assert "1 token(s)" in result.output and "1 claimed task(s)" in result.output
    assert client.get("/api/v1/me", headers=_bearer(impl_token)).status_code == 401
    assert db.session.get(HumanTask, task_id).assignee_id is None
    assert _token(client, "impl").status_code == 401

    result = cli("users", "activate", "impl")
    assert result.exit_code == 0, result.output
    token = _token(client, "impl").get_json()["token"]
    result = cli("users", "set-password", "impl", "--password-stdin", input=NEW_PASSWORD + "\n")
    assert result.exit_code == 0, result.output
    assert client.get("/api/v1/me", headers=_bearer(token)).status_code == 401
    assert _token(client, "impl", NEW_PASSWORD).status_code == 200
    result = cli("users", "deactivate", "nobody", catch_exceptions=True)
    assert result.exit_code == 1 and "nobody" in result.output
    assert [e.username for e in _events("user.changed")] == ["cli", "cli", "cli"]


# ---------------------------------------------------------------- login limits

def _app_with_limits(app: Any, s3_server: Any, **limits: int) -> Any:
    """A second worker on the same database with small limits (each failed login costs a password hash)."""
    return make_app(app.config["SQLALCHEMY_DATABASE_URI"], s3_server, app.config["ITEMGATE"].s3_bucket, **limits)


def _close(other: Any) -> None:
    with other.app_context():
        db.session.remove()
        db.engine.dispose()


def test_guesses_behind_a_shared_address_do_not_lock_out_a_colleague(world, app, s3_server):
    other = _app_with_limits(app, s3_server, login_max_failures=3, login_user_max_failures=6,
                             login_ip_max_failures=10)
    try:
        with other.app_context():
            colleague = other.test_client()  # impl's own browser: has signed in before
            assert _token(colleague, "impl", ip="203.0.113.5").status_code == 200
            guesser = other.test_client()  # someone else in the same office, same address
            for _ in range(3):
                assert _token(guesser, "impl", "guess", ip="203.0.113.5").status_code == 401
            assert _token(guesser, "impl", PASSWORD, ip="203.0.113.5").status_code == 429
            assert _token(colleague, "impl", ip="203.0.113.5").status_code == 200
            # The same holds for the web sign-in of a browser that signed in before.
            browser = Browser(other, "impl2")
            for _ in range(3):
                assert _token(other.test_client(), "impl2", "guess").status_code == 401
            browser.post("/logout")
            assert browser.login("impl2", PASSWORD).status_code == 302
            db.session.remove()
    finally:
        _close(other)


def test_one_address_trying_many_usernames_is_limited(world, app, s3_server):
    other = _app_with_limits(app, s3_server, login_max_failures=3, login_user_max_failures=6,
                             login_ip_max_failures=5)
    try:
        with other.app_context():
            client = other.test_client()
            for i in range(5):
                assert _token(client, f"someone{i}", "guess", ip="198.51.100.7").status_code == 401
            r = _token(client, "pm", PASSWORD, ip="198.51.100.7")
            assert r.status_code == 429 and int(r.headers["Retry-After"]) >= 1
            assert _token(client, "pm", PASSWORD, ip="198.51.100.8").status_code == 200
            db.session.remove()
    finally:
        _close(other)


def test_one_username_from_many_addresses_is_limited_but_one_address_cannot_lock_it(world, app, s3_server):
    other = _app_with_limits(app, s3_server, login_max_failures=3, login_user_max_failures=6,
                             login_ip_max_failures=50)
    try:
        with other.app_context():
            guesser = other.test_client()
            for _ in range(5):  # 3 count, then this address is refused without counting
                _token(guesser, "auditor", "guess", ip="192.0.2.1")
            own = other.test_client()
            assert _token(own, "auditor", PASSWORD, ip="192.0.2.2").status_code == 200
            for _ in range(3):
                assert _token(other.test_client(), "auditor", "guess", ip="192.0.2.3").status_code == 401
            # Six failures from two addresses: the account now waits out the window for new clients …
            assert _token(other.test_client(), "auditor", PASSWORD, ip="192.0.2.4").status_code == 429
            # … but not on a client it signed in from before.
            assert _token(own, "auditor", PASSWORD, ip="192.0.2.2").status_code == 200
            keys = db.session.execute(select(func.count(func.distinct(LoginAttempt.key)))).scalar()
            assert keys == 5  # user+ip ×2, user, ip ×2
            db.session.remove()
    finally:
        _close(other)

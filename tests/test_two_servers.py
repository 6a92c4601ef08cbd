"""Two real server processes (gunicorn) on one PostgreSQL database and one S3 server: a one-thing with two
departments and a settlement driven to the end over HTTP, every request going to the other server than the one
before. What happens next must be decided by the rows and objects alone, never by what one process parsed or
ran before."""
from __future__ import annotations

import os
import secrets
import signal
import subprocess
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import psycopg
import pytest
import requests

from tests.conftest import PASSWORD, PG_ADMIN_DSN, _pg_url, make_app

ROOT = Path(__file__).resolve().parent.parent
CONTRACT = "SH-YWTB-2025"
APPROVE = {"decision": "approve", "comment": "同意"}
RETURN = {"decision": "return", "comment": "请补充修改"}
USERS = [("impl", "implementer", None), ("impl2", "implementer", None), ("rev_a", "dept_reviewer", "DA"),
         ("rev_b", "dept_reviewer", "DB"), ("pm", "pm", None), ("auditor", "auditor", None),
         ("buyer", "buyer", None), ("buyer2", "buyer", None)]


def _seed(url: str, s3_server: Any, bucket: str) -> None:
    """Schema, catalogue and users, written before either server starts."""
    from api.auth import hash_password
    from api.extensions import db
    from bpmn import CATALOG_DIR
    from engine.trust.accounts import create_user
    from engine.usecases.admin import load_catalog_file

    app = make_app(url, s3_server, bucket)
    with app.app_context():
        load_catalog_file(db.session, CATALOG_DIR / "shanghai.toml")
        from tests.settlement_helpers import adhoc_contract

        adhoc_contract(CONTRACT)
        for username, role, dept in USERS:
            create_user(db.session, username, hash_password(PASSWORD), role, dept)
        db.session.commit()
        db.session.remove()
        db.engine.dispose()
    app.extensions["itemgate_store"].close()


def _start(port: int, env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    from api.cli import gunicorn_command

    with open(log, "wb") as out:
        return subprocess.Popen(gunicorn_command("127.0.0.1", port, 1, 2), cwd=ROOT, env=env,  # noqa: S603
                                stdout=out, stderr=subprocess.STDOUT, start_new_session=True)


def _wait_up(base: str, proc: subprocess.Popen[bytes], log: Path, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"gunicorn exited with {proc.returncode}:\n{log.read_text(errors='replace')[-3000:]}")
        try:
            if requests.get(f"{base}/readyz", timeout=10).status_code == 200:
                return
        except requests.RequestException:
            pass
        time.sleep(0.2)
    pytest.fail(f"gunicorn on {base} did not get ready:\n{log.read_text(errors='replace')[-3000:]}")


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


@pytest.fixture(scope="module")
def servers(s3_server: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[str]]:
    from storage.s3server import free_port

    name = f"itemgate_2srv_{os.getpid()}_{secrets.token_hex(3)}"
    with psycopg.connect(PG_ADMIN_DSN, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    url = _pg_url(name)
    bucket = f"itemgate-2srv-{secrets.token_hex(3)}"
    procs: list[subprocess.Popen[bytes]] = []
    try:
        _seed(url, s3_server, bucket)
        env = {k: v for k, v in os.environ.items() if not k.startswith("ITEMGATE_")}
        env.update(ITEMGATE_DATABASE_URL=url, ITEMGATE_SECRET_KEY=secrets.token_hex(32),
                   ITEMGATE_S3_ENDPOINT=s3_server.endpoint, ITEMGATE_S3_ACCESS_KEY=s3_server.access_key,
                   ITEMGATE_S3_SECRET_KEY=s3_server.secret_key, ITEMGATE_S3_BUCKET=bucket, ITEMGATE_LOG_JSON="0",
                   ITEMGATE_DATA_DIR=str(tmp_path_factory.mktemp("two-servers")))
        logs = tmp_path_factory.mktemp("gunicorn-logs")
        bases = []
        for n in range(2):
            port = free_port()
            procs.append(_start(port, env, logs / f"server{n}.log"))
            bases.append(f"http://127.0.0.1:{port}")
        for n, base in enumerate(bases):
            _wait_up(base, procs[n], logs / f"server{n}.log")
        yield bases
    finally:
        for proc in procs:
            _stop(proc)
        with psycopg.connect(PG_ADMIN_DSN, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


class Alternating:
    """An HTTP client that sends each request to the other server than the one before."""

    def __init__(self, bases: list[str]) -> None:
        self.bases = bases
        self.http = requests.Session()
        self.sent = [0] * len(bases)
        self.n = 0
        self.tokens: dict[str, str] = {}

    def close(self) -> None:
        self.http.close()

    def request(self, method: str, path: str, user: str | None = None, **kw: Any) -> requests.Response:
        index = self.n % len(self.bases)
        self.n += 1
        self.sent[index] += 1
        headers = kw.pop("headers", {})
        if user is not None:
            headers["Authorization"] = f"Bearer {self.token(user)}"
        return self.http.request(method, self.bases[index] + path, headers=headers, timeout=60, **kw)

    def token(self, user: str) -> str:
        if user not in self.tokens:
            r = self.request("POST", "/api/v1/auth/token", json={"username": user, "password": PASSWORD})
            assert r.status_code == 200, r.text
            self.tokens[user] = r.json()["token"]
        return self.tokens[user]

    def get(self, user: str, path: str) -> Any:
        r = self.request("GET", path, user)
        assert r.status_code == 200, (path, r.status_code, r.text)
        return r.json()

    def post(self, user: str, path: str, body: dict[str, Any] | None = None, expect: int = 200) -> Any:
        r = self.request("POST", path, user, json=body or {})
        assert r.status_code == expect, (path, r.status_code, r.text)
        return r.json()

    def open_tasks(self, item_id: int) -> list[dict[str, Any]]:
        return [t for t in self.get("pm", f"/api/v1/items/{item_id}")["tasks"] if t["status"] == "ready"]

    def do(self, user: str, item_id: int, name: str, data: dict[str, Any], department: str | None = None) -> None:
        """Upload what the task's gate still needs, then complete it."""
        from api.demo import demo_pdf
        from engine.evidence.sheets import is_sheet_kind

        found = [t for t in self.open_tasks(item_id)
                 if t["name"] == name and (department is None or t["department"] == department)]
        assert found, f"no open {name} ({department}); open: {[t['name'] for t in self.open_tasks(item_id)]}"
        task = found[0]
        for req in self.get(user, f"/api/v1/tasks/{task['id']}")["required_artefacts"]:
            if not req["present"]:
                form = {"kind": req["kind"], "task_id": str(task["id"])}
                if is_sheet_kind(req["kind"]):
                    # A sign-off sheet: printed by one server, its code checked by the other on upload.
                    sheet = self.request("GET", f"/api/v1/items/{item_id}/sheets/{req['kind']}.pdf", user)
                    assert sheet.status_code == 200, sheet.text
                    form["verification_code"] = sheet.headers["X-Verification-Code"]
                r = self.request("POST", f"/api/v1/items/{item_id}/artefacts", user, data=form,
                                 files={"file": (f"{req['kind']}.pdf", demo_pdf(req["kind"]), "application/pdf")})
                assert r.status_code == 201, r.text
        self.post(user, f"/api/v1/tasks/{task['id']}/complete", {"data": data})


@pytest.mark.timeout(240)
def test_one_thing_and_settlement_with_requests_alternating_between_two_servers(servers):
    from engine.contract.calendar import TZ

    c = Alternating(servers)
    try:
        created = c.post("pm", "/api/v1/items", {
            "contract": CONTRACT, "service_line": "5", "name": "新生儿出生一件事", "code": "SH-YJS-2SRV",
            "department": "DA", "channels": ["pc"], "mode": "new", "difficulty": 1.0,
            "attributes": {"departments": ["DA", "DB"]}}, expect=201)
        item_id = created["id"]
        c.do("impl", item_id, "intake", {"summary": "需求概述"})
        c.do("pm", item_id, "confirm_difficulty", {"difficulty": "1.20", "complexity_note": "涉及多部门数据共享"})
        # The third party confirms the proposal on whichever server the request lands (a parallel branch).
        c.do("auditor", item_id, "review_difficulty", {"verdict": "confirm"})
        c.do("impl", item_id, "survey_current", {"item_count": 2})
        for dept in ("DA", "DB"):
            c.do("impl", item_id, "analyse_linked_item", {"notes": dept}, department=dept)
        c.do("rev_a", item_id, "confirm_linked_item", RETURN, department="DA")
        c.do("impl", item_id, "analyse_linked_item", {"notes": "补充"}, department="DA")
        c.do("rev_b", item_id, "confirm_linked_item", APPROVE, department="DB")
        c.do("rev_a", item_id, "confirm_linked_item", APPROVE, department="DA")
        state = c.get("pm", f"/api/v1/items/{item_id}")
        assert (state["status"], state["stage"]) == ("active", "plan")
        assert [t["name"] for t in c.open_tasks(item_id)] == ["business_technical_plan"]
        c.do("impl", item_id, "business_technical_plan", {"notes": "方案"})
        c.do("rev_a", item_id, "confirm_plan", APPROVE)
        c.do("impl", item_id, "build_integration", {"integration_done": True})
        c.do("impl", item_id, "quality_check", {"tests_passed": True})
        c.do("impl", item_id, "tests", {"tests_passed": True})
        c.do("impl", item_id, "walkthrough", {})
        c.do("impl", item_id, "go_live", {"go_live_date": "2026-11-20", "url": "https://zwdt.sh.gov.cn/item/1"})
        c.do("rev_a", item_id, "cosign_department", {"confirm": True})
        c.do("impl2", item_id, "cosign_implementer", {"confirm": True})
        done = c.get("pm", f"/api/v1/items/{item_id}")
        assert (done["status"], done["stage"]) == ("completed", "done")
        entries = c.get("pm", f"/api/v1/workload?contract={CONTRACT}")["entries"]
        assert [(e["item_id"], e["channel"], e["amount"]) for e in entries] == [(item_id, "pc", 600000.0)]

        today = datetime.now(TZ).date().isoformat()
        s = c.post("pm", "/api/v1/settlements", {"contract": CONTRACT, "period_start": "2026-01-01",
                                                 "period_end": today, "label": "两台服务器结算"}, expect=201)
        sid = s["id"]
        assert c.post("pm", f"/api/v1/settlements/{sid}/submit", {"note": "第一次申报"})["status"] == "audit"
        returned = c.post("auditor", f"/api/v1/settlements/{sid}/return", {"comment": "缺少上线截图"})
        assert returned["status"] == "revising"
        assert c.post("pm", f"/api/v1/settlements/{sid}/submit", {})["status"] == "audit"
        assert c.post("auditor", f"/api/v1/settlements/{sid}/accept", {})["status"] == "first_review"
        assert c.post("buyer", f"/api/v1/settlements/{sid}/first-review", APPROVE)["status"] == "final_approval"
        assert c.post("buyer2", f"/api/v1/settlements/{sid}/final-approval", APPROVE)["status"] == "approved"
        final = c.get("auditor", f"/api/v1/settlements/{sid}")
        assert final["locked"] and final["figures"]["gross"] == 600000.0
        assert c.sent[0] > 30 and abs(c.sent[0] - c.sent[1]) <= 1
    finally:
        c.close()

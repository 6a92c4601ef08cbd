"""Load test: N concurrent users for T seconds against gunicorn (4 workers) on PostgreSQL and a real S3.

Each virtual user registers items (as the PM) and drives them to the end: uploads every artefact a gate
needs and completes every task with the lane's user; every third item of each user is raced by two
implementers at once (one must get 409). Afterwards: zero errors other than the expected 409s, the ledger
holds exactly one entry per channel of every completed item (none lost, none doubled), and the workers' RSS
grew less than 10 %.

    make loadtest                                   # 50 users, 5 minutes
    ITEMGATE_LOAD_USERS=10 ITEMGATE_LOAD_SECONDS=30 .venv/bin/python scripts/loadtest.py
"""
from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

import psycopg
import requests

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from storage.s3server import EmbeddedS3, free_port  # noqa: E402

USERS = int(os.environ.get("ITEMGATE_LOAD_USERS", "50"))
SECONDS = int(os.environ.get("ITEMGATE_LOAD_SECONDS", "300"))
WORKERS = int(os.environ.get("ITEMGATE_LOAD_WORKERS", "4"))
RACE_EVERY = int(os.environ.get("ITEMGATE_LOAD_RACE_EVERY", "3"))  # every Nth item of a user is raced
PG_ADMIN = os.environ.get("ITEMGATE_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test")
PASSWORD = "load-test-password"  # noqa: S105 - throwaway accounts in a throwaway database
FORM_DATA = {
    "intake": {"summary": "压测"}, "difficulty_confirmation": {"difficulty": "1.20", "complexity_note": "压测事项"},
    "survey_sorting": {"item_count": 2}, "review": {"decision": "approve"}, "design": {},
    "build_integration": {"integration_done": True}, "tests": {"tests_passed": True}, "walkthrough": {},
    "go_live": {"go_live_date": "2026-11-20"}, "cosign": {"confirm": True}, "quality_check": {"tests_passed": True},
}
PDF = b"%PDF-1.4\n1 0 obj<<>>endobj\ntrailer<<>>\n%%EOF\n"


def rss_kb(pids: list[int]) -> int:
    total = 0
    for pid in pids:
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except FileNotFoundError:
            pass
    return total


def worker_pids(master: int) -> list[int]:
    out = subprocess.run(["ps", "-o", "pid=", "--ppid", str(master)], capture_output=True, text=True)  # noqa: S603,S607
    return [int(p) for p in out.stdout.split()]


class Client:
    def __init__(self, base: str, username: str):
        self.base, self.s = base, requests.Session()
        r = self.s.post(f"{base}/api/v1/auth/token", json={"username": username, "password": PASSWORD}, timeout=60)
        r.raise_for_status()
        self.s.headers["Authorization"] = f"Bearer {r.json()['token']}"

    def get(self, path: str) -> requests.Response:
        return self.s.get(self.base + path, timeout=120)

    def post(self, path: str, **kw) -> requests.Response:
        return self.s.post(self.base + path, timeout=120, **kw)


def run() -> int:
    tmp = Path(tempfile.mkdtemp(prefix="itemgate-load-"))
    dbname = f"itemgate_load_{secrets.token_hex(3)}"
    with psycopg.connect(PG_ADMIN, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{dbname}"')
    s3 = EmbeddedS3(tmp / "s3", "AKLOAD", secrets.token_hex(16), "itemgate-load", log_path=tmp / "weed.log")
    s3.start()
    port = free_port()
    env = dict(os.environ, ITEMGATE_DATABASE_URL=PG_ADMIN.rsplit("/", 1)[0] + f"/{dbname}",
               ITEMGATE_SECRET_KEY=secrets.token_hex(32), ITEMGATE_S3_ENDPOINT=s3.endpoint,
               ITEMGATE_S3_ACCESS_KEY=s3.access_key, ITEMGATE_S3_SECRET_KEY=s3.secret_key,
               ITEMGATE_S3_BUCKET="itemgate-load", ITEMGATE_LOG_JSON="1",
               ITEMGATE_LOGIN_MAX_FAILURES="1000")
    itemgate = [str(Path(sys.executable).parent / "itemgate")]
    gunicorn = None
    try:
        subprocess.run([*itemgate, "db", "upgrade"], env=env, cwd=ROOT, check=True)  # noqa: S603
        subprocess.run([*itemgate, "catalog", "load", "bpmn/catalogs/shanghai.toml"], env=env, cwd=ROOT,  # noqa: S603
                       check=True)
        accounts = [("pm", "pm", None), ("rev", "dept_reviewer", "DA")] + \
            [(f"impl{i}", "implementer", None) for i in range(USERS)]
        for name, role, dept in accounts:
            cmd = [*itemgate, "users", "create", name, "--role", role, "--password-stdin"]
            if dept:
                cmd += ["--department", dept]
            subprocess.run(cmd, env=env, cwd=ROOT, input=PASSWORD + "\n", text=True, check=True,  # noqa: S603
                           capture_output=True)
        log = open(tmp / "gunicorn.log", "w")  # noqa: SIM115
        gunicorn = subprocess.Popen([sys.executable, "-m", "gunicorn", "--workers", str(WORKERS), "--bind",  # noqa: S603
                                     f"127.0.0.1:{port}", "--timeout", "300", "wsgi:app"],
                                    env=env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
        base = f"http://127.0.0.1:{port}"
        for _ in range(120):
            try:
                if requests.get(base + "/healthz", timeout=1).ok:
                    break
            except requests.RequestException:
                time.sleep(0.5)
        return drive(base, gunicorn.pid, env, dbname)
    finally:
        if gunicorn is not None:
            gunicorn.terminate()
            gunicorn.wait(timeout=60)
        s3.stop()
        with psycopg.connect(PG_ADMIN, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{dbname}" WITH (FORCE)')


def _complete_into(client: Client, url: str, data: dict, results: list[int]) -> None:
    results.append(client.post(url, json=data).status_code)


def drive(base: str, master: int, env: dict[str, str], dbname: str) -> int:
    pm, rev = Client(base, "pm"), Client(base, "rev")
    impls = [Client(base, f"impl{i}") for i in range(USERS)]
    statuses: Counter[str] = Counter()
    errors: list[str] = []
    completed_items: set[int] = set()
    lock = threading.Lock()
    deadline = time.monotonic() + SECONDS
    warm_rss: list[int] = []

    def note(what: str, r: requests.Response, ok: tuple[int, ...] = (200, 201)) -> None:
        with lock:
            statuses[f"{what} {r.status_code}"] += 1
            if r.status_code not in ok and r.status_code != 409:
                errors.append(f"{what} {r.status_code} {r.text[:200]}")

    def user(n: int) -> None:
        me, partner = impls[n], impls[(n + 1) % USERS]
        lanes = {"implementer": me, "dept_reviewer": rev, "pm": pm}
        seq = 0
        while time.monotonic() < deadline:
            seq += 1
            r = pm.post("/api/v1/items", json={
                "contract": "SH-YWTB-2025", "service_line": "1", "name": f"压测 {n}-{seq}", "code": f"L{n}-{seq}",
                "department": "DA", "channels": ["pc", "mobile"], "mode": "new", "difficulty": 1.0,
                "attributes": {}})
            note("create", r)
            if r.status_code != 201:
                continue
            item = r.json()["id"]
            while time.monotonic() < deadline:
                tasks = [t for t in me.get(f"/api/v1/items/{item}").json()["tasks"] if t["status"] == "ready"]
                if not tasks:
                    with lock:
                        completed_items.add(item)
                    break
                task = tasks[0]
                detail = me.get(f"/api/v1/tasks/{task['id']}").json()
                for req in detail["required_artefacts"]:
                    if not req["present"]:
                        note("upload", me.post(f"/api/v1/items/{item}/artefacts", data={"kind": req["kind"]},
                                               files={"file": (f"{req['kind']}.pdf", PDF, "application/pdf")}))
                data = {"data": FORM_DATA.get(task["form_key"], {})}
                url = f"/api/v1/tasks/{task['id']}/complete"
                if task["role"] == "implementer" and seq % RACE_EVERY == 0:
                    # A race: two implementers complete the same task at once; one must get 409.
                    results: list[int] = []
                    threads = [threading.Thread(target=_complete_into, args=(c, url, data, results))
                               for c in (me, partner)]
                    for t in threads:
                        t.start()
                    for t in threads:
                        t.join()
                    with lock:
                        statuses[f"race {sorted(results)}"] += 1
                        if sorted(results) != [200, 409]:
                            errors.append(f"race {results}")
                else:
                    note("complete", lanes[task["role"]].post(url, json=data))

    threads = [threading.Thread(target=user, args=(n,), daemon=True) for n in range(USERS)]
    for t in threads:
        t.start()
    time.sleep(min(30, SECONDS / 5))  # warm-up: imports, pools, caches
    warm_rss.append(rss_kb(worker_pids(master)))
    for t in threads:
        t.join()
    end_rss = rss_kb(worker_pids(master))

    # Ledger check straight from the database.
    with psycopg.connect(env["ITEMGATE_DATABASE_URL"]) as conn:
        rows = conn.execute("SELECT w.id, count(e.id), coalesce(array_length(ARRAY(SELECT json_array_elements_text"
                            "(w.channels::json)), 1), 0) FROM work_items w LEFT JOIN workload_entries e ON "
                            "e.item_id = w.id AND e.reverses_id IS NULL WHERE w.status = 'completed' "
                            "GROUP BY w.id").fetchall()
        stray = conn.execute("SELECT count(*) FROM workload_entries e JOIN work_items w ON w.id = e.item_id "
                             "WHERE w.status <> 'completed'").fetchone()[0]
    wrong = [(item, got, want) for item, got, want in rows if got != want]
    growth = (end_rss - warm_rss[0]) / warm_rss[0] if warm_rss and warm_rss[0] else 0.0
    report = {
        "users": USERS, "seconds": SECONDS, "workers": WORKERS, "requests": sum(statuses.values()),
        "statuses": dict(sorted(statuses.items())), "errors": errors[:20], "error_count": len(errors),
        "completed_items_seen_by_clients": len(completed_items), "completed_items_in_db": len(rows),
        "ledger_mismatches": wrong[:20], "entries_for_unfinished_items": stray,
        "rss_kb_after_warmup": warm_rss[0] if warm_rss else None, "rss_kb_end": end_rss,
        "rss_growth": round(growth, 4),
    }
    print(json.dumps(report, ensure_ascii=False, indent=1))
    ok = not errors and not wrong and stray == 0 and growth < 0.10 and completed_items <= {r[0] for r in rows}
    print("LOAD TEST", "PASSED" if ok else "FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(run())

"""Background export jobs: queued from the web page, rendered with progress, stored in S3, downloaded."""
from __future__ import annotations

import csv
import io
import socket
import threading
import time
import zipfile
from datetime import UTC, datetime, timedelta

import openpyxl
import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import sessionmaker

from api.extensions import db
from engine.usecases import job_progress, jobs
from engine.usecases.jobs import run_job
from storage.artefact_store import ArtefactStore
from storage.models import ExportJob
from storage.unit_of_work import transactions
from tests.settlement_helpers import completed_items
from tests.test_web import Browser

JUNE = datetime(2026, 6, 10, 3, 0, tzinfo=UTC)


@pytest.fixture
def inline(app, monkeypatch):
    """Jobs are not started on a thread: the test runs them itself."""
    monkeypatch.setitem(app.config, "EXPORT_JOBS_THREAD", False)
    return app


def _factory():
    """Units of work in sessions of their own, as the job runner (an entry point) hands them to a job."""
    return transactions(sessionmaker(bind=db.engine, expire_on_commit=False))


def _queue(browser: Browser, kind: str, **filters: str) -> int:
    assert browser.get("/exports").status_code == 200
    r = browser.post("/exports/jobs", {"kind": kind, **filters})
    assert r.status_code == 302, r.get_data(as_text=True)
    location = r.headers["Location"]
    assert "/exports/jobs/" in location
    return int(location.rstrip("/").rsplit("/", 1)[1])


def _job(job_id: int) -> ExportJob:
    db.session.rollback()  # a fresh snapshot: the job was written by other sessions
    return db.session.get(ExportJob, job_id)


def test_xlsx_job_reports_progress_and_its_totals_equal_the_api(world, inline, store):
    completed_items(3, prefix="JA", channels=("pc", "mobile"), at=JUNE)
    completed_items(2, prefix="JB", line="2", channels=("kiosk",), department="DB", at=JUNE)
    pm = Browser(inline, "pm")
    page = pm.get("/exports").get_data(as_text=True)
    assert "后台生成" in page

    job_id = _queue(pm, "workload_xlsx")
    queued = pm.get(f"/exports/jobs/{job_id}")
    assert queued.status_code == 200
    html = queued.get_data(as_text=True)
    assert "<progress" in html and "排队中" in html and "location.reload" in html
    assert world.get("pm", f"/api/v1/jobs/{job_id}").get_json()["status"] == "queued"

    seen: list[tuple[int, int]] = []
    original = jobs._Progress.write

    def spy(self, **values):
        if "done" in values:
            seen.append((values["done"], values["total"]))
        original(self, **values)

    jobs._Progress.write = spy  # type: ignore[method-assign]
    try:
        assert run_job(_factory(), store, job_id) == "done"
    finally:
        jobs._Progress.write = original  # type: ignore[method-assign]
    assert seen and seen[-1] == (8, 8)  # 3 items × 2 channels + 2 items × 1 channel

    job = _job(job_id)
    assert job.status == "done" and job.progress_done == job.progress_total == 8
    assert job.key.startswith(f"exports/{job_id}/") and job.size and len(job.sha256) == 64
    assert job.started_at and job.finished_at and job.finished_at >= job.started_at

    body = world.get("pm", f"/api/v1/jobs/{job_id}").get_json()
    assert body["status"] == "done" and body["progress"] == {"done": 8, "total": 8} and body["error"] is None

    html = pm.get(f"/exports/jobs/{job_id}").get_data(as_text=True)
    assert "已完成" in html and f"/exports/jobs/{job_id}/download" in html and "location.reload" not in html
    r = pm.get(f"/exports/jobs/{job_id}/download")
    assert r.status_code == 200 and r.mimetype.endswith("spreadsheetml.sheet")
    assert "attachment" in r.headers["Content-Disposition"]
    api = world.get("pm", "/api/v1/workload").get_json()
    book = openpyxl.load_workbook(io.BytesIO(r.data), read_only=True)
    rows = list(book["工作量统计明细表"].iter_rows(values_only=True))
    book.close()
    grand = [row for row in rows[1:] if row[0] == "合计"]
    entries = [row for row in rows[1:] if isinstance(row[14], int)]
    assert len(entries) == len(api["entries"]) == 8
    assert grand[0][11] == pytest.approx(api["totals"]["amount"])
    assert grand[0][8] == pytest.approx(api["totals"]["units"])

    # Only the requester (or an administrator) sees the job; everyone else gets 404, not 403.
    auditor = Browser(inline, "auditor")
    assert auditor.get(f"/exports/jobs/{job_id}").status_code == 404
    assert auditor.get(f"/exports/jobs/{job_id}/download").status_code == 404
    assert world.get("auditor", f"/api/v1/jobs/{job_id}").status_code == 404
    assert world.get("admin", f"/api/v1/jobs/{job_id}").get_json()["status"] == "done"
    # A role without the export permission is refused outright.
    assert world.get("impl", f"/api/v1/jobs/{job_id}").status_code == 403
    assert world.get("pm", "/api/v1/jobs/999999").status_code == 404


def test_csv_job_with_a_filter(world, inline, store):
    completed_items(2, prefix="JC", at=JUNE)
    completed_items(1, prefix="JD", department="DB", at=JUNE)
    auditor = Browser(inline, "auditor")
    job_id = _queue(auditor, "workload_csv", department="DB", **{"from": "2026-06-01"})
    assert _job(job_id).params == {"department": "DB", "from": "2026-06-01"}
    assert run_job(_factory(), store, job_id) == "done"
    assert run_job(_factory(), store, job_id) == "skipped"  # a job runs once
    job = _job(job_id)
    assert (job.progress_done, job.progress_total) == (1, 1)
    r = auditor.get(f"/exports/jobs/{job_id}/download")
    assert r.status_code == 200 and r.headers["Content-Type"].startswith("text/csv")
    rows = list(csv.reader(io.StringIO(r.data.decode("utf-8-sig"))))
    api = world.get("auditor", "/api/v1/workload?department=DB").get_json()
    grand = [row for row in rows if row[0] == "合计"]
    assert len(api["entries"]) == 1 and grand[0][11] == f"{api['totals']['amount']:.2f}"


def test_unknown_kind_and_role_without_access_are_refused(world, inline):
    pm = Browser(inline, "pm")
    pm.get("/exports")
    r = pm.post("/exports/jobs", {"kind": "everything"})
    assert r.status_code == 302 and "/exports/jobs/" not in r.headers["Location"]
    impl = Browser(inline, "impl")
    impl.get("/inbox")
    assert impl.post("/exports/jobs", {"kind": "workload_xlsx"}).status_code == 403
    assert db.session.execute(select(func.count(ExportJob.id))).scalar() == 0


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_store_down_ends_the_job_failed_with_the_reason(world, inline):
    completed_items(1, prefix="JF", at=JUNE)
    pm = Browser(inline, "pm")
    job_id = _queue(pm, "workload_xlsx")
    good = inline.extensions["itemgate_store"]
    down = ArtefactStore(f"http://127.0.0.1:{_closed_port()}", "AKDOWN", "secret-down-123", "down",
                         connect_timeout=1.0, retries=0)
    inline.extensions["itemgate_store"] = down
    try:
        assert run_job(_factory(), inline.extensions["itemgate_store"], job_id) == "failed"
    finally:
        inline.extensions["itemgate_store"] = good
        down.close()
    job = _job(job_id)
    assert job.status == "failed" and job.finished_at is not None
    assert job.error and "StoreUnavailable" in job.error
    body = world.get("pm", f"/api/v1/jobs/{job_id}").get_json()
    assert body["status"] == "failed" and body["error"] == job.error
    html = pm.get(f"/exports/jobs/{job_id}").get_data(as_text=True)
    assert "生成失败" in html and "location.reload" not in html
    assert pm.get(f"/exports/jobs/{job_id}/download").status_code == 404


def _abandon(job_id: int, attempts: int = 1, minutes: int = 30) -> None:
    """What a runner that died mid-export leaves behind: running, its heartbeat long silent."""
    job = _job(job_id)
    job.status = "running"
    job.attempts = attempts
    job.runner = "gone-host:4242"
    job.started_at = job.heartbeat_at = datetime.now(UTC) - timedelta(minutes=minutes)
    db.session.commit()


def test_a_job_left_running_by_a_dead_process_is_finished_by_the_next_tick(world, inline, cli):
    completed_items(2, prefix="JD", at=JUNE)
    pm = Browser(inline, "pm")
    job_id = _queue(pm, "workload_csv")
    _abandon(job_id)
    body = world.get("pm", f"/api/v1/jobs/{job_id}").get_json()
    assert (body["status"], body["error"]) == ("queued", jobs.STALE_NOTE)
    assert "排队中" in pm.get(f"/exports/jobs/{job_id}").get_data(as_text=True)

    result = cli("tick")
    assert result.exit_code == 0, result.output
    assert "export jobs: 1 recovered, 1 done" in result.output
    job = _job(job_id)
    assert (job.status, job.attempts, job.error) == ("done", 2, None)
    assert job.runner != "gone-host:4242" and job.progress_done == job.progress_total == 2
    r = pm.get(f"/exports/jobs/{job_id}/download")
    assert r.status_code == 200
    assert sum(1 for row in csv.reader(io.StringIO(r.data.decode("utf-8-sig"))) if any("JD-" in c for c in row)) == 2
    # Nothing left to do: the next tick neither recovers nor runs anything, nor starts a store for it.
    again = cli("tick")
    assert again.exit_code == 0 and "export jobs" not in again.output


def test_a_job_whose_runners_keep_dying_fails_for_good_with_the_reason(world, inline, store):
    pm = Browser(inline, "pm")
    job_id = _queue(pm, "workload_csv")
    _abandon(job_id, attempts=jobs.MAX_ATTEMPTS)
    assert jobs.run_pending(_factory(), store) == {"recovered": 1}
    job = _job(job_id)
    assert job.status == "failed" and job.finished_at is not None
    assert "gone-host:4242" in job.error and f"given up after {jobs.MAX_ATTEMPTS} attempts" in job.error
    body = world.get("pm", f"/api/v1/jobs/{job_id}").get_json()
    assert body["status"] == "failed" and body["error"] == job.error
    assert "生成失败" in pm.get(f"/exports/jobs/{job_id}").get_data(as_text=True)


def test_a_runner_that_was_given_up_on_writes_nothing(world, inline, store):
    pm = Browser(inline, "pm")
    job_id = _queue(pm, "workload_csv")
    first = jobs._claim(_factory(), job_id)
    assert first is not None and first.attempts == 1
    slow = jobs._Progress(_factory(), job_id, first.attempts)
    slow(1, 10)
    _abandon(job_id, attempts=1)  # its heartbeat went silent (a long pause, a partitioned host)
    assert jobs.recover_stale(_factory()) == [job_id]
    assert jobs.run_pending(_factory(), store) == {"recovered": 0, "done": 1}
    # The first runner wakes up: its progress and its result are refused, and it stops.
    with pytest.raises(jobs.Superseded):
        slow(10, 10)
    with pytest.raises(jobs.Superseded):
        slow.write(status="failed", error="late", finished_at=datetime.now(UTC))
    job = _job(job_id)
    assert (job.status, job.attempts, job.error) == ("done", 2, None)


def test_the_heartbeat_keeps_a_long_silent_job_its_own(world, inline, store, monkeypatch):
    """A render that reports no progress for longer than STALE_AFTER is still alive: its heartbeat thread keeps
    it fresh, and recoverers running all the while never take it away."""
    monkeypatch.setattr(job_progress, "HEARTBEAT_SECONDS", 0.1)
    monkeypatch.setattr(jobs, "STALE_AFTER", timedelta(seconds=1.5))
    real_render = jobs._render

    def slow_render(*args, **kwargs):
        time.sleep(4)
        return real_render(*args, **kwargs)

    monkeypatch.setattr(jobs, "_render", slow_render)
    pm = Browser(inline, "pm")
    job_id = _queue(pm, "workload_csv")
    stolen: list[int] = []
    stop = threading.Event()
    factory = _factory()

    def recoverer():
        while not stop.wait(0.2):
            stolen.extend(jobs.recover_stale(factory))

    watcher = threading.Thread(target=recoverer)
    watcher.start()
    try:
        assert run_job(_factory(), store, job_id) == "done"
    finally:
        stop.set()
        watcher.join()
    assert stolen == []
    assert (_job(job_id).status, _job(job_id).attempts) == ("done", 1)


def test_runners_on_many_hosts_run_each_job_once(world, inline, store, backend):
    """Three runners (as `tick` on three hosts) at once, over queued and abandoned jobs: every job ends done,
    each run by exactly one attempt after its abandonment, none twice."""
    if backend != "postgresql":
        pytest.skip("row locks with SKIP LOCKED: PostgreSQL")
    completed_items(1, prefix="JM", at=JUNE)
    pm = Browser(inline, "pm")
    for _round in range(5):
        queued = [_queue(pm, "workload_csv") for _ in range(6)]
        abandoned = [_queue(pm, "workload_csv") for _ in range(4)]
        for job_id in abandoned:
            _abandon(job_id)
        db.session.remove()
        barrier = threading.Barrier(3)
        outcomes: list[dict[str, int]] = []
        factory = _factory()

        def runner():
            barrier.wait()
            outcomes.append(jobs.run_pending(factory, store))

        threads = [threading.Thread(target=runner) for _ in range(3)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert sum(o["recovered"] for o in outcomes) == len(abandoned)
        assert sum(o.get("done", 0) for o in outcomes) == len(queued) + len(abandoned)
        assert sum(o.get("superseded", 0) for o in outcomes) == 0
        for job_id in queued + abandoned:
            job = _job(job_id)
            assert job.status == "done", (job_id, job.status, job.error)
            assert job.attempts == (2 if job_id in abandoned else 1)


def test_the_background_thread_completes_an_evidence_bundle(world, app, store):
    completed_items(2, prefix="JZ", at=JUNE, store=store)
    buyer = Browser(app, "buyer")
    job_id = _queue(buyer, "evidence_zip")
    deadline = time.monotonic() + 60
    while True:
        body = world.get("buyer", f"/api/v1/jobs/{job_id}").get_json()
        if body["status"] in ("done", "failed") or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert body["status"] == "done", body
    assert body["progress"]["done"] == body["progress"]["total"] > 0
    r = buyer.get(f"/exports/jobs/{job_id}/download")
    assert r.status_code == 200 and r.mimetype == "application/zip"
    with zipfile.ZipFile(io.BytesIO(r.data)) as zf:
        names = zf.namelist()
    assert "manifest.csv" in names and sum(1 for n in names if n.endswith(".pdf")) == 6


def test_progress_is_written_at_most_every_500_rows_or_second(monkeypatch):
    writes: list[int] = []
    monkeypatch.setattr(jobs._Progress, "write", lambda self, **v: writes.append(v["done"]))
    clock = [1000.0]
    monkeypatch.setattr(job_progress.time, "monotonic", lambda: clock[0])
    report = jobs._Progress(lambda: None, 1)  # type: ignore[arg-type, return-value]
    for done in range(1, 2001):
        report(done, 2000)
    assert writes == [1, 501, 1001, 1501, 2000]
    writes.clear()
    report = jobs._Progress(lambda: None, 1)  # type: ignore[arg-type, return-value]
    report(1, 100)
    clock[0] += 1.5  # a slow stretch: a second has passed, so the next row is reported
    report(2, 100)
    report(3, 100)
    assert writes == [1, 2]

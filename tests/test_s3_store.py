"""Tests of the artefact store and the embedded S3 server against a real `weed` and the real minio SDK."""

from __future__ import annotations

import gc
import hashlib
import io
import json
import os
import shutil
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from storage import s3server
from storage.artefact_store import ArtefactStore, StoredObject, StoreUnavailable, TooLarge
from storage.s3server import GRPC_OFFSET, EmbeddedS3, find_weed, free_port

MiB = 1024 * 1024
REPO = Path(__file__).resolve().parent.parent


class OneWayStream(io.RawIOBase):
    """A stream that cannot seek, like a chunked request body."""

    def __init__(self, data: bytes, chunk: int = 64 * 1024) -> None:
        self._data = memoryview(data)
        self._pos = 0
        self._chunk = chunk

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:  # type: ignore[override]
        n = min(len(buffer), self._chunk, len(self._data) - self._pos)
        buffer[:n] = self._data[self._pos : self._pos + n]
        self._pos += n
        return n


def versions_of(store: ArtefactStore, key: str) -> list:
    return [obj for obj in store.iter_objects(key) if obj.key == key]


def test_round_trip_small_object(artefact_store: ArtefactStore) -> None:
    data = "需求函 v1\n".encode() * 100
    key = ArtefactStore.new_key("HT-2024", 7, "requirement_letter")
    stored = artefact_store.put_stream(key, io.BytesIO(data), len(data), "text/plain; charset=utf-8", 10 * MiB)

    expected = hashlib.sha256(data).hexdigest()
    assert stored == StoredObject("itemgate-test", key, stored.version_id, expected, len(data))
    assert stored.version_id
    assert artefact_store.hash_object(key, stored.version_id) == (len(data), expected)
    assert b"".join(artefact_store.iter_content(key, stored.version_id, chunk=100)) == data
    size, metadata = artefact_store.stat(key, stored.version_id)
    assert size == len(data)
    assert metadata["sha256"] == expected
    assert metadata["content-type"] == "text/plain; charset=utf-8"


def test_round_trip_multipart_object_from_the_middle_of_a_file(artefact_store: ArtefactStore, tmp_path) -> None:
    # Larger than one 16 MiB part, so the SDK uses a multipart upload; the stream starts mid-file the way
    # an upload inside a larger spooled body might.
    data = os.urandom(37 * MiB + 123)
    path = tmp_path / "big.bin"
    path.write_bytes(b"prefix" + data)
    key = ArtefactStore.new_key("HT", 1, "test_report")
    with open(path, "rb") as fh:
        fh.seek(6)
        stored = artefact_store.put_stream(key, fh, -1, "application/pdf", 64 * MiB)
    assert stored.size == len(data)
    assert stored.sha256 == hashlib.sha256(data).hexdigest()
    assert artefact_store.hash_object(key, stored.version_id) == (len(data), stored.sha256)
    assert artefact_store.stat(key, stored.version_id)[1]["sha256"] == stored.sha256


def test_unseekable_stream_is_spooled_and_stored(artefact_store: ArtefactStore) -> None:
    data = os.urandom(3 * MiB)
    key = ArtefactStore.new_key("HT", 2, "survey_form")
    stored = artefact_store.put_stream(key, OneWayStream(data), -1, "application/zip", 8 * MiB)
    assert stored.sha256 == hashlib.sha256(data).hexdigest()
    assert artefact_store.hash_object(key, stored.version_id) == (len(data), stored.sha256)


def test_empty_object(artefact_store: ArtefactStore) -> None:
    key = ArtefactStore.new_key("HT", 3, "go_live_record")
    stored = artefact_store.put_stream(key, io.BytesIO(b""), 0, "text/plain", MiB)
    assert (stored.size, stored.sha256) == (0, hashlib.sha256(b"").hexdigest())
    assert artefact_store.hash_object(key, stored.version_id) == (0, stored.sha256)


def test_versioning_keeps_both_puts(artefact_store: ArtefactStore) -> None:
    key = ArtefactStore.new_key("HT", 4, "functional_design")
    first = artefact_store.put_stream(key, io.BytesIO(b"first"), 5, "text/plain", MiB)
    second = artefact_store.put_stream(key, io.BytesIO(b"second!"), 7, "text/plain", MiB)

    assert first.version_id and second.version_id and first.version_id != second.version_id
    assert b"".join(artefact_store.iter_content(key, first.version_id)) == b"first"
    assert b"".join(artefact_store.iter_content(key, second.version_id)) == b"second!"
    assert b"".join(artefact_store.iter_content(key, None)) == b"second!"
    listed = {(o.version_id, o.size) for o in versions_of(artefact_store, key)}
    assert listed == {(first.version_id, 5), (second.version_id, 7)}

    artefact_store.delete(key, first.version_id)
    with pytest.raises(KeyError):
        artefact_store.stat(key, first.version_id)
    assert artefact_store.stat(key, second.version_id)[0] == 7


def test_declared_length_over_limit_is_refused_before_storing(artefact_store: ArtefactStore) -> None:
    key = ArtefactStore.new_key("HT", 5, "test_report")
    with pytest.raises(TooLarge):
        artefact_store.put_stream(key, io.BytesIO(b"x" * 2000), 2000, "text/plain", 1000)
    assert versions_of(artefact_store, key) == []


@pytest.mark.parametrize("make_stream", [io.BytesIO, OneWayStream], ids=["seekable", "unseekable"])
def test_stream_longer_than_limit_is_refused_and_nothing_stored(artefact_store, make_stream) -> None:
    # The declared length lies (unknown here): the limit must hold on what is actually read.
    key = ArtefactStore.new_key("HT", 6, "test_report")
    with pytest.raises(TooLarge):
        artefact_store.put_stream(key, make_stream(b"x" * (MiB + 1)), -1, "text/plain", MiB)
    assert versions_of(artefact_store, key) == []


def test_stream_shorter_than_declared_is_refused(artefact_store: ArtefactStore) -> None:
    key = ArtefactStore.new_key("HT", 6, "test_report")
    with pytest.raises(ValueError):
        artefact_store.put_stream(key, io.BytesIO(b"abc"), 10, "text/plain", MiB)
    assert versions_of(artefact_store, key) == []


def test_missing_objects_raise_key_error(artefact_store: ArtefactStore) -> None:
    key = ArtefactStore.new_key("HT", 8, "test_report")
    with pytest.raises(KeyError):
        artefact_store.stat(key, None)
    with pytest.raises(KeyError):
        artefact_store.hash_object(key, None)
    with pytest.raises(KeyError):
        artefact_store.iter_content(key, None)
    stored = artefact_store.put_stream(key, io.BytesIO(b"data"), 4, "text/plain", MiB)
    other = "0" * len(stored.version_id or "x")
    with pytest.raises(KeyError):
        artefact_store.stat(key, other)


def test_abandoned_download_releases_its_connection(artefact_store: ArtefactStore) -> None:
    key = ArtefactStore.new_key("HT", 9, "test_report")
    stored = artefact_store.put_stream(key, io.BytesIO(b"z" * (3 * MiB)), -1, "text/plain", 4 * MiB)
    stream = artefact_store.iter_content(key, stored.version_id, chunk=1024)
    assert len(next(stream)) == 1024
    stream.close()  # what a WSGI server does when the client goes away
    never_started = artefact_store.iter_content(key, stored.version_id)
    never_started.close()
    del stream, never_started
    gc.collect()
    # The pool still works afterwards.
    assert artefact_store.hash_object(key, stored.version_id)[0] == 3 * MiB


def test_ensure_bucket_creates_a_versioned_bucket(s3_server: EmbeddedS3) -> None:
    with ArtefactStore(s3_server.endpoint, s3_server.access_key, s3_server.secret_key, "itemgate-extra") as store:
        assert not store.ping()
        store.ensure_bucket()
        store.ensure_bucket()  # idempotent
        assert store.ping()
        key = ArtefactStore.new_key("HT", 1, "kind")
        a = store.put_stream(key, io.BytesIO(b"a"), 1, "text/plain", 10)
        b = store.put_stream(key, io.BytesIO(b"b"), 1, "text/plain", 10)
        assert a.version_id != b.version_id


def test_wrong_credentials_are_reported_as_unavailable(s3_server: EmbeddedS3) -> None:
    with ArtefactStore(s3_server.endpoint, s3_server.access_key, "wrong-secret", s3_server.bucket) as store:
        assert not store.ping()
        with pytest.raises(StoreUnavailable):
            store.put_stream("contracts/x/items/1/k/u", io.BytesIO(b"a"), 1, "text/plain", 10)


def test_new_key_is_server_chosen_and_safe() -> None:
    key = ArtefactStore.new_key("合同/../A B", 12, "test_report")
    parts = key.split("/")
    assert parts[:5] == ["contracts", "___.._A_B", "items", "12", "test_report"]
    assert len(parts) == 6 and len(parts[5]) == 36
    assert ArtefactStore.new_key("..", 1, "k").split("/")[1] == "_.."
    assert ArtefactStore.new_key("HT", 1, "k") != ArtefactStore.new_key("HT", 1, "k")
    with pytest.raises(ValueError):
        ArtefactStore.new_key("HT", -1, "k")


def test_endpoint_must_be_a_url() -> None:
    with pytest.raises(ValueError):
        ArtefactStore("127.0.0.1:9000", "a", "b", "c")


def test_free_ports_are_unique_with_free_twins() -> None:
    ports = [free_port() for _ in range(50)]
    claimed = set(ports) | {p + GRPC_OFFSET for p in ports}
    assert len(claimed) == 100
    assert all(p + GRPC_OFFSET <= 65535 for p in ports)


def test_weed_binary_is_found() -> None:
    assert os.access(find_weed(), os.X_OK)


def test_store_down_fails_fast_with_store_unavailable(tmp_path) -> None:
    server = EmbeddedS3(tmp_path / "data", "AKFAULT", "fault-secret-123", "faulty", log_path=tmp_path / "weed.log")
    started = time.monotonic()
    server.start()
    startup = time.monotonic() - started
    with ArtefactStore(server.endpoint, "AKFAULT", "fault-secret-123", "faulty") as store:
        try:
            store.ensure_bucket()
            key = ArtefactStore.new_key("HT", 1, "test_report")
            stored = store.put_stream(key, io.BytesIO(b"before"), 6, "text/plain", MiB)
        finally:
            server.stop()
        assert not server.is_running()

        began = time.monotonic()
        with pytest.raises(StoreUnavailable):
            store.put_stream(key, io.BytesIO(b"after"), 5, "text/plain", MiB)
        assert time.monotonic() - began < 5
        assert not store.ping()
        with pytest.raises(StoreUnavailable):
            store.stat(key, stored.version_id)
        with pytest.raises(StoreUnavailable):
            store.hash_object(key, stored.version_id)
        with pytest.raises(StoreUnavailable):
            list(store.iter_objects())
        with pytest.raises(StoreUnavailable):
            store.delete(key, stored.version_id)

        # Restarted on the same data dir and ports, the store comes back with the object intact.
        server.start()
        try:
            assert store.ping()
            assert store.hash_object(key, stored.version_id) == (6, hashlib.sha256(b"before").hexdigest())
        finally:
            server.stop()
    assert startup < 30


def test_start_failure_raises_with_log_tail(tmp_path) -> None:
    # Hold the S3 port so weed cannot bind it.
    with socket.socket() as blocker:
        blocker.bind(("127.0.0.1", 0))
        blocker.listen()
        port = blocker.getsockname()[1]
        server = EmbeddedS3(tmp_path / "d", "AK", "secret-secret", "blocked", s3_port=port, log_path=tmp_path / "w.log")
        with pytest.raises(RuntimeError) as excinfo:
            server.start(timeout=15)
        assert not server.is_running()
    assert "weed" in str(excinfo.value)


def test_embedded_server_context_manager_and_credentials(tmp_path) -> None:
    with EmbeddedS3(tmp_path / "d", "AKCTX", "ctx-secret-456", "ctx-bucket") as server:
        assert server.is_running()
        assert server.endpoint.startswith("http://127.0.0.1:")
        # The identity file is not left readable in the data dir.
        assert not any(p.name == "s3.json" for p in (tmp_path / "d").rglob("*"))
        with ArtefactStore(server.endpoint, "AKCTX", "ctx-secret-456", "ctx-bucket") as store:
            assert store.ping()
        with ArtefactStore(server.endpoint, "AKOTHER", "ctx-secret-456", "ctx-bucket") as intruder:
            assert not intruder.ping()
    assert not server.is_running()


@pytest.mark.slow
def test_200_mb_upload_streams_without_growing_memory(s3_server: EmbeddedS3, tmp_path) -> None:
    # Measured in a fresh interpreter: the peak RSS of the pytest process reflects earlier tests.
    path = tmp_path / "big.bin"
    with open(path, "wb") as fh:
        block = os.urandom(MiB)
        for i in range(200):
            fh.write(block[i:] + block[:i])
    script = textwrap.dedent(
        """
        import io, json, sys
        from storage.artefact_store import ArtefactStore

        def kib(field):
            with open("/proc/self/status") as fh:
                return next(int(line.split()[1]) for line in fh if line.startswith(field + ":"))

        def reset_peak():
            # Writing 5 resets the VmHWM watermark (Linux >= 4.0); ru_maxrss cannot be reset and is even
            # inherited from the parent across exec.
            with open("/proc/self/clear_refs", "w") as fh:
                fh.write("5")

        endpoint, ak, sk, bucket, path = sys.argv[1:]
        with ArtefactStore(endpoint, ak, sk, bucket) as store:
            store.put_stream("warm/up", io.BytesIO(b"x"), 1, "text/plain", 10)
            reset_peak()
            before = kib("VmRSS")
            with open(path, "rb") as fh:
                stored = store.put_stream("big/object", fh, -1, "application/octet-stream", 210 * 2**20)
            upload_peak = kib("VmHWM")
            reset_peak()
            size, digest = store.hash_object("big/object", stored.version_id)
            download_peak = kib("VmHWM")
        print(json.dumps({"upload_kb": upload_peak - before, "download_kb": download_peak - before,
                          "size": size, "sha": digest, "stored_sha": stored.sha256}))
        """
    )
    out = subprocess.run(
        [
            sys.executable,
            "-W",
            "error",
            "-c",
            script,
            s3_server.endpoint,
            s3_server.access_key,
            s3_server.secret_key,
            s3_server.bucket,
            str(path),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=240,
        check=True,
    )
    result = json.loads(out.stdout)
    with open(path, "rb") as fh:
        expected = hashlib.file_digest(fh, "sha256").hexdigest()
    assert result["size"] == 200 * MiB
    assert result["sha"] == result["stored_sha"] == expected
    assert 0 < result["upload_kb"] < 64 * 1024, result
    assert result["download_kb"] < 64 * 1024, result


def test_start_retries_with_fresh_ports_when_one_is_taken(tmp_path, monkeypatch) -> None:
    # Another process binds a port between our check and weed's start: simulate by handing out a port
    # that is already held.
    real_free_port = s3server.free_port
    with socket.socket() as blocker:
        taken = real_free_port()
        blocker.bind(("127.0.0.1", taken))
        blocker.listen()
        handed_out = iter([taken])
        monkeypatch.setattr(
            s3server, "free_port", lambda host="127.0.0.1": next(handed_out, None) or real_free_port(host)
        )
        with EmbeddedS3(
            tmp_path / "d", "AKRETRY", "retry-secret-1", "retry-bucket", log_path=tmp_path / "w.log"
        ) as server:
            assert server.s3_port != taken
            with ArtefactStore(server.endpoint, "AKRETRY", "retry-secret-1", "retry-bucket") as store:
                assert store.ping()
    assert "Port allocation failed" in (tmp_path / "w.log").read_text()


def test_weed_does_not_outlive_a_killed_parent(tmp_path) -> None:
    # A SIGKILLed app never runs atexit; the kernel must still take weed down with it.
    script = textwrap.dedent(
        """
        import os, signal, sys
        from storage.s3server import EmbeddedS3
        server = EmbeddedS3(sys.argv[1], "AKORPHAN", "orphan-secret-1", "orphan-bucket")
        server.start()
        print(server._proc.pid, server._runtime_dir, flush=True)
        os.kill(os.getpid(), signal.SIGKILL)
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path / "d")], cwd=REPO, capture_output=True, text=True, timeout=120
    )
    weed_pid, runtime_dir = out.stdout.split()
    weed_pid = int(weed_pid)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            os.kill(weed_pid, 0)
        except ProcessLookupError:
            break
        time.sleep(0.2)
    else:
        pytest.fail(f"weed {weed_pid} survived its parent")
    # Its private dir (identity file) is what a hard kill leaves behind; do not litter /tmp.
    shutil.rmtree(runtime_dir, ignore_errors=True)


def test_hashing_spool_is_stored_without_a_second_hash_pass(artefact_store: ArtefactStore, monkeypatch) -> None:
    from storage import artefact_store as module

    data = os.urandom(3 * MiB + 5)
    spool = module.HashingSpool(64 * 1024)
    for start in range(0, len(data), 100_000):
        spool.write(data[start : start + 100_000])
    spool.seek(0)

    def no_second_pass(*_args, **_kwargs):
        raise AssertionError("the spool was read once more just to hash it")

    monkeypatch.setattr(module, "_hash_stream", no_second_pass)
    key = ArtefactStore.new_key("HT", 21, "test_report")
    stored = artefact_store.put_stream(key, spool, len(data), "application/pdf", 8 * MiB)
    assert stored.sha256 == hashlib.sha256(data).hexdigest() and stored.size == len(data)
    assert artefact_store.hash_object(key, stored.version_id) == (len(data), stored.sha256)
    assert artefact_store.stat(key, stored.version_id)[1]["sha256"] == stored.sha256

    # Bytes changed behind the running hash: the spool no longer vouches for a digest, the store hashes itself.
    spool.seek(10)
    spool.write(b"X")
    spool.seek(0)
    assert spool.written() is None
    monkeypatch.undo()
    changed = data[:10] + b"X" + data[11:]
    stored = artefact_store.put_stream(key, spool, len(data), "application/pdf", 8 * MiB)
    assert stored.sha256 == hashlib.sha256(changed).hexdigest()
    spool.close()


class _FailsOnUpload(io.BytesIO):
    """Reads fine for the hash pass; once rewound for the upload, fails past `fail_at` like a dying disk."""

    def __init__(self, data: bytes, fail_at: int) -> None:
        super().__init__(data)
        self.fail_at = fail_at
        self.armed = False

    def seek(self, pos: int, whence: int = 0) -> int:
        self.armed = True
        return super().seek(pos, whence)

    def read(self, size: int | None = -1) -> bytes:
        if self.armed and self.tell() >= self.fail_at:
            raise OSError("read error")
        return super().read(size)


def test_multipart_upload_failing_midway_is_aborted_without_leftovers(artefact_store: ArtefactStore) -> None:
    import threading

    from storage.artefact_store import PART_SIZE

    data = os.urandom(5 * PART_SIZE + 77)
    key = ArtefactStore.new_key("HT", 22, "test_report")
    with pytest.raises(OSError, match="read error"):
        artefact_store.put_stream(key, _FailsOnUpload(data, 4 * PART_SIZE), len(data), "application/pdf",
                                  64 * MiB)
    assert versions_of(artefact_store, key) == []
    uploads = artefact_store._client._list_multipart_uploads(artefact_store.bucket, prefix=key)
    assert not list(uploads.uploads)
    assert not [t for t in threading.enumerate() if t.name.startswith("s3-part")]

    # The same store uploads fine afterwards, in parallel parts, and what it stored is what was hashed.
    stored = artefact_store.put_stream(key, io.BytesIO(data), len(data), "application/pdf", 64 * MiB)
    assert artefact_store.hash_object(key, stored.version_id) == (len(data), hashlib.sha256(data).hexdigest())

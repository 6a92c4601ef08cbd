"""Evidence lock: what object lock does on the real S3 server, and how ItemGate tells the operator when the bucket
has none (`serve` refuses, /readyz reports, administrators see a warning, fsck reports a problem)."""
from __future__ import annotations

import io
import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import urllib3
from minio import Minio
from minio.versioningconfig import ENABLED, VersioningConfig

from api.extensions import db
from engine.evidence.integrity import fsck
from storage.artefact_store import ArtefactStore, StoreUnavailable
from storage.s3server import free_port
from tests.conftest import make_app
from tests.test_web import Browser

ROOT = Path(__file__).resolve().parents[1]
WARNING = "证据存储桶未启用对象锁定"


def _client(s3_server: Any) -> Minio:
    return Minio(s3_server.endpoint.removeprefix("http://"), s3_server.access_key, s3_server.secret_key,
                 secure=False, region="us-east-1")


@pytest.fixture(scope="module")
def plain_bucket(s3_server: Any) -> str:
    """A bucket made the way other tools make one (plain CreateBucket, as `weed -bucket=` does): versioned, but
    without object lock."""
    name = f"plain-{secrets.token_hex(4)}"
    client = _client(s3_server)
    client.make_bucket(name)
    client.set_bucket_versioning(name, VersioningConfig(ENABLED))
    return name


@pytest.fixture
def plain_store(s3_server: Any, plain_bucket: str) -> Iterator[ArtefactStore]:
    with ArtefactStore(s3_server.endpoint, s3_server.access_key, s3_server.secret_key, plain_bucket) as store:
        yield store


def _put(store: ArtefactStore, key: str) -> str | None:
    body = b"%PDF-1.4 held evidence"
    return store.put_stream(key, io.BytesIO(body), len(body), "application/pdf", 1 << 20).version_id


# ---------------------------------------------------------------- the facts, measured on SeaweedFS

def test_in_a_bucket_with_object_lock_a_held_version_cannot_be_deleted(app, store):
    assert store.object_lock_enabled()
    key = ArtefactStore.new_key("LOCK-TEST", 1, "requirement_letter")
    version = _put(store, key)
    assert store.hold(key, version) and store.is_held(key, version)
    with pytest.raises(StoreUnavailable, match="AccessDenied"):
        store.delete(key, version)
    assert store.hash_object(key, version)[0] == len(b"%PDF-1.4 held evidence")


def test_in_a_bucket_without_object_lock_a_held_version_is_deleted(plain_store):
    assert not plain_store.object_lock_enabled()
    key = ArtefactStore.new_key("LOCK-TEST", 2, "requirement_letter")
    version = _put(plain_store, key)
    # The hold is accepted and reads back as set …
    assert plain_store.hold(key, version) and plain_store.is_held(key, version)
    # … and protects nothing: the application's own credentials delete the held version.
    plain_store.delete(key, version)
    with pytest.raises(KeyError):
        plain_store.stat_object(key, version)


def test_the_embedded_server_makes_its_bucket_with_object_lock(s3_server):
    with ArtefactStore(s3_server.endpoint, s3_server.access_key, s3_server.secret_key, s3_server.bucket) as store:
        assert store.object_lock_enabled()


# ---------------------------------------------------------------- telling the operator

@pytest.fixture
def unlocked_apps(app, s3_server, plain_bucket) -> Iterator[dict[str, Any]]:
    """Workers on the test database whose bucket has no object lock: one accepting that, one not."""
    url = app.config["SQLALCHEMY_DATABASE_URI"]
    apps = {"off": make_app(url, s3_server, plain_bucket, evidence_lock=False),
            "on": make_app(url, s3_server, plain_bucket)}
    yield apps
    for other in apps.values():
        with other.app_context():
            db.session.remove()
            db.engine.dispose()
        other.extensions["itemgate_store"].close()


def test_readyz_reports_the_evidence_lock(app, client, unlocked_apps):
    r = client.get("/readyz")
    assert r.status_code == 200 and r.get_json()["evidence_lock"] == "on"
    with unlocked_apps["off"].app_context():
        r = unlocked_apps["off"].test_client().get("/readyz")
        assert r.status_code == 200 and r.get_json()["evidence_lock"] == "off", r.get_json()
    with unlocked_apps["on"].app_context():
        r = unlocked_apps["on"].test_client().get("/readyz")
        assert r.status_code == 503 and r.get_json()["evidence_lock"] == "off"
        assert "object lock" in r.get_json()["checks"]["evidence_lock"]


def test_administrators_see_a_standing_warning_when_the_lock_is_off(world, app, unlocked_apps):
    off = unlocked_apps["off"]
    with off.app_context():
        for page in ("/inbox", "/items", "/dashboard"):
            assert WARNING in Browser(off, "admin").get(page).get_data(as_text=True), page
        assert "has no object lock" in Browser(off, "admin").get("/inbox?lang=en").get_data(as_text=True)
        assert WARNING not in Browser(off, "pm").get("/inbox").get_data(as_text=True)
        db.session.remove()
    assert WARNING not in Browser(app, "admin").get("/inbox").get_data(as_text=True)


def test_fsck_reports_a_bucket_without_object_lock(app, store, plain_store, cli, monkeypatch):
    assert not fsck(db.session, store).lock_missing
    report = fsck(db.session, plain_store)
    assert report.lock_missing and not report.clean
    monkeypatch.setitem(app.extensions, "itemgate_store", plain_store)  # the app's bucket is the plain one
    result = cli("fsck", "--quick")
    assert result.exit_code == 1, result.output
    assert f"bucket {plain_store.bucket}: no object lock" in result.output


# ---------------------------------------------------------------- `itemgate serve`, for real

def _serve_env(app: Any, tmp_path: Path, bucket: str, **extra: str) -> dict[str, str]:
    settings = app.config["ITEMGATE"]
    env = {k: v for k, v in os.environ.items() if not k.startswith("ITEMGATE_")}
    env.update(ITEMGATE_DATABASE_URL=f"sqlite:///{tmp_path / 'serve.db'}", ITEMGATE_SECRET_KEY=secrets.token_hex(16),
               ITEMGATE_S3_ENDPOINT=settings.s3_endpoint, ITEMGATE_S3_ACCESS_KEY=settings.s3_access_key,
               ITEMGATE_S3_SECRET_KEY=settings.s3_secret_key, ITEMGATE_S3_BUCKET=bucket,
               ITEMGATE_DATA_DIR=str(tmp_path / "var"), ITEMGATE_LOG_JSON="0", **extra)
    return env


def _itemgate(*args: str) -> list[str]:
    return [str(Path(sys.executable).parent / "itemgate"), *args]


def test_serve_refuses_a_bucket_without_object_lock_unless_told(app, plain_bucket, tmp_path):
    env = _serve_env(app, tmp_path, plain_bucket)
    subprocess.run(_itemgate("db", "upgrade"), env=env, cwd=ROOT, check=True, capture_output=True, timeout=120)
    port = free_port()
    serve = _itemgate("serve", "--port", str(port), "--workers", "1", "--threads", "1")
    refused = _start(serve, env)
    try:
        refused.wait(timeout=60)
    except subprocess.TimeoutExpired as exc:
        raise AssertionError("serve started on a bucket without object lock") from exc
    finally:
        out, err = _stop(refused)
    assert refused.returncode == 1, out + err
    assert "without object lock" in err and "ITEMGATE_EVIDENCE_LOCK=off" in err

    env["ITEMGATE_EVIDENCE_LOCK"] = "off"
    proc = _start(serve, env)
    http = urllib3.PoolManager(retries=False, timeout=urllib3.Timeout(connect=1, read=5))
    try:
        deadline = time.monotonic() + 60
        body = None
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                r = http.request("GET", f"http://127.0.0.1:{port}/readyz")
                body = (r.status, r.json())
                break
            except (urllib3.exceptions.HTTPError, ValueError):
                time.sleep(0.3)
    finally:
        http.clear()
        out, err = _stop(proc)
    assert body is not None, out + err
    assert body[0] == 200 and body[1]["evidence_lock"] == "off", body
    assert "has no object lock; running anyway" in err


def _start(argv: list[str], env: dict[str, str]) -> subprocess.Popen[str]:
    # Its own process group, so that stopping it reaches the gunicorn it starts as well.
    return subprocess.Popen(argv, env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,  # noqa: S603
                            text=True, start_new_session=True)


def _stop(proc: subprocess.Popen[str]) -> tuple[str, str]:
    """Stop the process group if it still runs; return what it wrote."""
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        return proc.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        return proc.communicate()

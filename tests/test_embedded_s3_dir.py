"""The embedded S3 server belongs to its data directory: a server some other process runs on the embedded port is
never used (not by `fsck --repair` either), and every command on one directory finds the same server and port."""
from __future__ import annotations

import io
import json
import os
import socket
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from storage.artefact_store import ArtefactStore
from storage.s3server import SERVER_RECORD, EmbeddedS3, data_dir_server, free_port, listens_on

# The settings' defaults: what an ItemGate with nothing configured uses, and so what another one would too.
DEFAULT_KEY, DEFAULT_SECRET, DEFAULT_BUCKET = "itemgate", "itemgate-secret", "itemgate"


@pytest.fixture
def own_dir_cli(tmp_path: Path) -> Any:
    """Commands in an app that configures no S3 server (so each command starts the data directory's embedded
    one), on a data directory and SQLite file of its own."""
    from api.app import create_app
    from api.config import load_settings
    from tests.conftest import Cli, dispose_app

    data_dir = tmp_path / "ours"
    data_dir.mkdir()
    app = create_app(load_settings({}, testing=True, data_dir=str(data_dir), log_json=False,
                                   database_url=f"sqlite:///{data_dir / 'itemgate.db'}"))
    try:
        yield Cli(app)
    finally:
        dispose_app(app)


@pytest.fixture
def foreign(tmp_path: Path) -> Any:
    """Another ItemGate's embedded server (default credentials and bucket) on a port of its own."""
    server = EmbeddedS3(tmp_path / "foreign", DEFAULT_KEY, DEFAULT_SECRET, DEFAULT_BUCKET,
                        log_path=tmp_path / "foreign.log")
    server.start()
    try:
        yield server
    finally:
        server.stop()


def test_fsck_repair_never_uses_the_server_another_process_runs_on_the_embedded_port(tmp_path, foreign,
                                                                                    own_dir_cli, monkeypatch):
    import api.cli
    import engine.evidence.integrity

    # The other instance's evidence: an object no row of ours refers to, old enough for --repair to sweep.
    with ArtefactStore(foreign.endpoint, DEFAULT_KEY, DEFAULT_SECRET, DEFAULT_BUCKET) as theirs:
        key = ArtefactStore.new_key("OTHER", 7, "requirement_letter")
        kept = theirs.put_stream(key, io.BytesIO(b"%PDF-1.4 theirs"), 15, "application/pdf", 1 << 20)
    monkeypatch.setattr(api.cli_base, "EMBEDDED_S3_PORT", foreign.s3_port)
    run_fsck = engine.evidence.integrity.fsck
    monkeypatch.setattr(engine.evidence.integrity, "fsck", lambda *a, **kw: run_fsck(
        *a, **dict(kw, now=datetime.now(UTC) + timedelta(days=3))))
    data_dir = tmp_path / "ours"
    cli = own_dir_cli
    assert cli("db", "upgrade").exit_code == 0

    result = cli("fsck", "--repair")
    assert result.exit_code == 0, result.output
    assert f"port {foreign.s3_port} is in use by another process" in result.output
    assert "0 orphan(s), 0 removed" in result.output
    record = json.loads((data_dir / SERVER_RECORD).read_text())
    assert record["port"] != foreign.s3_port
    with ArtefactStore(foreign.endpoint, DEFAULT_KEY, DEFAULT_SECRET, DEFAULT_BUCKET) as theirs:
        assert theirs.stat(key, kept.version_id)[0] == 15

    # The next command on the same directory finds the recorded port (and the data stored there).
    again = cli("fsck")
    assert again.exit_code == 0, again.output
    assert f"started the embedded S3 server (SeaweedFS) on 127.0.0.1:{record['port']}" in again.output
    assert "in use by another process" not in again.output


def test_commands_on_one_data_directory_share_its_server(tmp_path):
    data_dir = tmp_path / "var"
    with data_dir_server(data_dir, "AKDIR", "dir-secret-123", "dir-bucket", preferred_port=free_port()) as first:
        assert first.started and first.displaced_from is None
        with ArtefactStore(first.endpoint, "AKDIR", "dir-secret-123", "dir-bucket") as store:
            stored = store.put_stream("contracts/D/items/1/x/1", io.BytesIO(b"kept"), 4, "text/plain", 1 << 20)
        # A second command while the first runs: the same server, not a second one on the same files.
        with data_dir_server(data_dir, "AKDIR", "dir-secret-123", "dir-bucket",
                             preferred_port=free_port()) as second:
            assert (second.started, second.endpoint) == (False, first.endpoint)
        with ArtefactStore(first.endpoint, "AKDIR", "dir-secret-123", "dir-bucket") as store:
            assert store.ping(), "the attached command must not stop the server it did not start"
    # Later, with the first stopped: started again on the recorded port, with the same data.
    with data_dir_server(data_dir, "AKDIR", "dir-secret-123", "dir-bucket", preferred_port=free_port()) as third:
        assert third.started and third.port == first.port
        with ArtefactStore(third.endpoint, "AKDIR", "dir-secret-123", "dir-bucket") as store:
            assert store.stat("contracts/D/items/1/x/1", stored.version_id)[0] == 4


def test_a_recorded_port_taken_since_moves_and_is_recorded_again(tmp_path):
    data_dir = tmp_path / "var"
    data_dir.mkdir()
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        taken = squatter.getsockname()[1]
        (data_dir / SERVER_RECORD).write_text(json.dumps({"port": taken, "pid": None}))
        with data_dir_server(data_dir, "AKMV", "move-secret-1", "move-bucket", preferred_port=taken) as found:
            assert found.started and found.displaced_from == taken and found.port != taken
        assert json.loads((data_dir / SERVER_RECORD).read_text())["port"] == found.port


def test_listener_ownership_is_read_from_proc():
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        assert listens_on(os.getpid(), port) is True
        assert listens_on(os.getppid(), port) is False

"""Pytest plugin: a real SeaweedFS S3 server for the session and an ArtefactStore bound to it."""

from __future__ import annotations

import secrets
from collections.abc import Iterator

import pytest

from storage.artefact_store import ArtefactStore
from storage.s3server import EmbeddedS3

TEST_BUCKET = "itemgate-test"


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedS3]:
    base = tmp_path_factory.mktemp("s3")
    # Random credentials: a test that passes with wrong keys would mean auth is not really on.
    server = EmbeddedS3(
        base / "data",
        access_key="AK" + secrets.token_hex(8).upper(),
        secret_key=secrets.token_hex(20),
        bucket=TEST_BUCKET,
        log_path=base / "weed.log",
    )
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def artefact_store(s3_server: EmbeddedS3) -> Iterator[ArtefactStore]:
    store = ArtefactStore(s3_server.endpoint, s3_server.access_key, s3_server.secret_key, s3_server.bucket)
    store.ensure_bucket()
    try:
        yield store
    finally:
        # Pooled sockets left to the garbage collector raise ResourceWarning, an error under -W error.
        store.close()

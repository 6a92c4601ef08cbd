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


def remove_anchors(store: ArtefactStore) -> None:
    """Test clean-up only: lift the holds on audit anchors and delete them, bypassing governance retention (the test
    server's identity may; production credentials must not). Each test starts with a fresh audit chain, and the
    anchors of an earlier one would contradict it."""
    from minio.deleteobjects import DeleteObject

    from engine.trust.anchors import PREFIX

    client = store._client
    versions = [o for o in store.iter_objects(PREFIX)]
    for obj in versions:
        if not obj.is_delete_marker and store.is_held(obj.key, obj.version_id):
            client.disable_object_legal_hold(store.bucket, obj.key, version_id=obj.version_id)
    if versions:
        errors = list(client.remove_objects(store.bucket, [DeleteObject(o.key, o.version_id) for o in versions],
                                            bypass_governance_mode=True))
        assert not errors, errors

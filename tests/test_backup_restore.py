"""`itemgate backup` then `itemgate restore` into an empty database and an empty bucket: same rows, same bytes,
`fsck` clean, the audit chain verifies, gate evidence held again."""
from __future__ import annotations

import json
import os
import secrets

import psycopg
from sqlalchemy import create_engine, func, select

from api.extensions import db
from storage.artefact_store import PART_SIZE, ArtefactStore
from storage.models import Artefact, AuditEvent, Base, GatePass, ServiceOrder
from tests.conftest import PG_ADMIN_DSN, Cli, _pg_url, dispose_app, make_app
from tests.test_lifecycle_api import drive_to_survey_review


def test_backup_and_restore_into_empty_database_and_bucket(world, app, store, s3_server, backend, tmp_path, cli):
    item_id = world.new_item("BACKUP-1")["id"]
    drive_to_survey_review(world, item_id)
    world.upload("impl", item_id, "functional_design", filename="设计.pdf")
    # Larger than one part: streamed in as a multipart upload, so its object has no SHA-256 metadata and the
    # row an ETag, which the restore must replace with the new object's.
    streamed = b"%PDF-1.4\n" + os.urandom(PART_SIZE + 1024).replace(b"P", b"p")
    assert world.upload("impl", item_id, "test_report", streamed, "streamed.pdf").status_code == 201
    # A service order's 需求函 is no artefact, but its file must travel with the backup too.
    from tests.test_service_orders import LETTER, file_order

    order = file_order(world, "rev_a", body=LETTER + b"% backup\n")
    assert order.status_code == 201
    order_sha = order.get_json()["file"]["sha256"]
    counts = {t.name: db.session.execute(select(func.count()).select_from(t)).scalar()
              for t in Base.metadata.sorted_tables}
    artefacts = {a.id: (a.key, a.sha256, a.size) for a in db.session.scalars(select(Artefact))}
    assert artefacts and counts["gate_passes"] > 0

    result = cli("backup", str(tmp_path / "bk"))
    assert result.exit_code == 0, result.output
    manifest = json.loads((tmp_path / "bk" / "manifest.json").read_text())
    assert manifest["tables"] == counts
    assert manifest["objects"] == len({s for _, s, _ in artefacts.values()} | {order_sha})

    # An empty database and an empty bucket.
    bucket = f"restore-{secrets.token_hex(4)}"
    if backend == "sqlite":
        url = f"sqlite:///{tmp_path / 'restored.db'}"
        dbname = None
    else:
        dbname = f"itemgate_restore_{secrets.token_hex(4)}"
        with psycopg.connect(PG_ADMIN_DSN, autocommit=True) as admin:
            admin.execute(f'CREATE DATABASE "{dbname}"')
        url = _pg_url(dbname).replace("postgresql://", "postgresql+psycopg://")
    # The restoring side: an app on that database and bucket, with no schema yet.
    restoring = make_app(url, s3_server, bucket, migrate=False)
    on_restored = Cli(restoring)
    try:
        assert on_restored("db", "upgrade").exit_code == 0
        result = on_restored("restore", str(tmp_path / "bk"))
        assert result.exit_code == 0, result.output
        result = on_restored("fsck")
        assert result.exit_code == 0, result.output
        result = on_restored("fsck", "--quick")
        assert result.exit_code == 0, result.output
        assert "0 problem(s), 0 orphan(s)" in result.output
        result = on_restored("audit", "verify")
        assert result.exit_code == 0, result.output
        # A second restore into the now-full database is refused.
        result = on_restored("restore", str(tmp_path / "bk"), catch_exceptions=True)
        assert result.exit_code != 0 and "not empty" in result.output

        engine = create_engine(url)
        try:
            with engine.connect() as conn:
                restored = {t.name: conn.execute(select(func.count()).select_from(t)).scalar()
                            for t in Base.metadata.sorted_tables}
                rows = conn.execute(select(Artefact.id, Artefact.key, Artefact.version_id, Artefact.sha256,
                                           Artefact.size, Artefact.etag)).all()
                held = set(conn.execute(select(GatePass.artefact_id)).scalars())
                letter = conn.execute(select(ServiceOrder.key, ServiceOrder.version_id, ServiceOrder.size,
                                             ServiceOrder.sha256)).one()
                latest = conn.execute(select(AuditEvent.event_type).order_by(AuditEvent.id.desc()).limit(4)
                                      ).scalars().all()
        finally:
            engine.dispose()
        # The restore's own event, then what the checks after it keep in the chain (18a: the admin's status page
        # shows the last fsck and audit verify): fsck, fsck --quick, audit verify.
        assert restored == dict(counts, audit_events=counts["audit_events"] + 4)
        assert latest[::-1] == ["backup.restored", "evidence.fsck", "evidence.fsck", "audit.verified"]
        settings = app.config["ITEMGATE"]
        with ArtefactStore(settings.s3_endpoint, settings.s3_access_key, settings.s3_secret_key, bucket) as new:
            for artefact_id, key, version_id, sha, size, etag in rows:
                assert (key, sha, size) == artefacts[artefact_id]
                assert new.hash_object(key, version_id) == (size, sha)
                assert etag and new.stat_object(key, version_id).etag == etag
                if artefact_id in held:
                    assert new.is_held(key, version_id)
            assert letter.sha256 == order_sha
            assert new.hash_object(letter.key, letter.version_id) == (letter.size, letter.sha256)
    finally:
        dispose_app(restoring)
        if dbname:
            with psycopg.connect(PG_ADMIN_DSN, autocommit=True) as admin:
                admin.execute(f'DROP DATABASE IF EXISTS "{dbname}" WITH (FORCE)')

"""Downloading an artefact whose object is gone, or while the store is down, answers a problem (502
object_missing / 503 store_unavailable with Retry-After) before any byte of the file is sent — over the API and
on the web page alike, which share one download helper. Both backends, against the real S3 server."""
from __future__ import annotations

import pytest
from sqlalchemy import func, select

from api.extensions import db
from storage.artefact_store import ArtefactStore
from storage.models import Artefact, AuditEvent
from tests.test_faults import _with_store
from tests.test_web import Browser


@pytest.fixture
def artefact(world):
    item_id = world.new_item("DL-1")["id"]
    r = world.upload("impl", item_id, "requirement_letter")
    assert r.status_code == 201, r.get_json()
    return db.session.get(Artefact, r.get_json()["id"])


def _downloads() -> int:
    return db.session.execute(select(func.count(AuditEvent.id))
                              .where(AuditEvent.event_type == "artefact.downloaded")).scalar()


def _fetch(world, app, where: str, artefact_id: int):
    if where == "api":
        return world.get("auditor", f"/api/v1/artefacts/{artefact_id}/content")
    return Browser(app, "auditor").get(f"/artefacts/{artefact_id}")


@pytest.mark.parametrize("where", ["api", "web"])
def test_download_of_an_object_that_is_gone(world, app, store, artefact, where):
    ok = _fetch(world, app, where, artefact.id)
    assert ok.status_code == 200 and ok.data.startswith(b"%PDF")
    before = _downloads()
    store.delete(artefact.key, artefact.version_id)  # the version itself, not a delete marker
    r = _fetch(world, app, where, artefact.id)
    assert r.status_code == 502, (r.status_code, r.get_data()[:200])
    assert "Content-Disposition" not in r.headers and not r.get_data().startswith(b"%PDF")
    if where == "api":
        assert r.mimetype == "application/problem+json" and r.get_json()["code"] == "object_missing"
    else:
        assert r.mimetype == "text/html" and "文件" in r.get_data(as_text=True)
    assert _downloads() == before  # a download that did not happen is not recorded as one


@pytest.mark.parametrize("where", ["api", "web"])
def test_download_while_the_store_is_down(world, app, s3_server, artefact, where):
    before = _downloads()
    down = ArtefactStore("http://127.0.0.1:9", s3_server.access_key, s3_server.secret_key, artefact.bucket,
                         read_timeout=1.0)
    r = _with_store(app, down, lambda: _fetch(world, app, where, artefact.id))
    assert r.status_code == 503 and int(r.headers["Retry-After"]) >= 1, (r.status_code, r.get_data()[:200])
    assert "Content-Disposition" not in r.headers
    if where == "api":
        assert r.get_json()["code"] == "store_unavailable"
    assert _downloads() == before


def test_download_of_an_object_whose_size_is_not_the_recorded_one(world, app, artefact):
    """The row says one size and the store holds another (a restore gone wrong): Content-Length would promise
    bytes the body cannot keep, so the answer is 502 object_mismatch, before any byte."""
    artefact.size += 1
    db.session.commit()
    r = _fetch(world, app, "api", artefact.id)
    assert r.status_code == 502 and r.get_json()["code"] == "object_mismatch", r.get_data()[:200]

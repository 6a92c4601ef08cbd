"""Evidence bundles: a settlement of 200 items with real stored artefacts verifies clean; tampering is named."""
from __future__ import annotations

import csv
import io
import shutil
import struct
import time
import zipfile
from pathlib import Path

import openpyxl

from api.extensions import db
from engine.money.bundle import ANCHOR, MANIFEST, SUMMARY, verify_bundle
from storage.models import Artefact
from tests.settlement_helpers import KINDS, adhoc_contract, completed_items

CURRENT = {"contract": "SH-YWTB-2025", "period_start": "2026-01-01", "period_end": "2099-12-31"}


def _flip_byte_in_member(path: Path, name: str) -> None:
    """Flip one byte in the middle of a member's stored data, in place (the raw archive bytes)."""
    with zipfile.ZipFile(path) as zf:
        info = zf.getinfo(name)
    with path.open("r+b") as fh:
        fh.seek(info.header_offset)
        header = fh.read(30)
        name_len, extra_len = struct.unpack("<HH", header[26:30])
        target = info.header_offset + 30 + name_len + extra_len + info.compress_size // 2
        fh.seek(target)
        byte = fh.read(1)
        fh.seek(target)
        fh.write(bytes([byte[0] ^ 0xFF]))


def _rewrite_member(src: Path, dst: Path, name: str) -> None:
    """A consistent forgery: the member's content changes by one byte, with a valid CRC."""
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w", zipfile.ZIP_DEFLATED) as zout:
        for info in zin.infolist():
            data = zin.read(info)
            if info.filename == name:
                data = data[:100] + bytes([data[100] ^ 0x01]) + data[101:]
            zout.writestr(info.filename, data)


def test_settlement_bundle_of_200_items_verifies_and_a_flipped_byte_is_named(world, store, tmp_path, app, cli):
    items = completed_items(200, prefix="EV", channels=("pc",), store=store)
    adhoc_contract()
    r = world.post("pm", "/api/v1/settlements", json=CURRENT)
    assert r.status_code == 201
    sid = r.get_json()["id"]
    assert len(r.get_json()["lines"]) == 200

    r = world.get("auditor", f"/api/v1/settlements/{sid}/evidence.zip")
    assert r.status_code == 200 and r.mimetype == "application/zip"
    assert r.is_streamed
    bundle = tmp_path / "bundle.zip"
    bundle.write_bytes(r.data)

    with zipfile.ZipFile(bundle) as zf:
        names = zf.namelist()
        rows = list(csv.DictReader(io.StringIO(zf.read(MANIFEST).decode("utf-8-sig"))))
        summary = openpyxl.load_workbook(io.BytesIO(zf.read(SUMMARY)), read_only=True)
    assert len(rows) == 200 * len(KINDS)
    assert {int(row["item_id"]) for row in rows} == set(items)
    assert set(rows[0]) >= {"item_id", "gate", "kind", "file", "size", "sha256", "uploaded_by", "uploaded_at",
                            "object_version"}
    assert all(row["uploaded_by"] == "impl" and row["status"] == "ok" for row in rows)
    assert len({name.split("/")[0] for name in names if "/" in name}) == 200  # one folder per item
    sheet = {row[0]: row[1] for row in summary.worksheets[0].iter_rows(values_only=True) if row and row[0]}
    assert sheet["合计"] == 200 and sheet["异常文件"] == "无"
    summary.close()

    report = verify_bundle(bundle)
    assert report.ok, report.mismatches
    assert report.files_checked == 600

    result = cli("evidence", "verify", "--quiet", str(bundle))
    assert result.exit_code == 0, result.output
    assert "bundle OK: 600 file(s)" in result.output

    # One byte flipped in one file: verify names exactly that file.
    victim = rows[123]["file"]
    damaged = tmp_path / "damaged.zip"
    shutil.copy(bundle, damaged)
    _flip_byte_in_member(damaged, victim)
    report = verify_bundle(damaged)
    assert [m.file for m in report.mismatches] == [victim]
    result = cli("evidence", "verify", "--quiet", str(damaged))
    assert result.exit_code == 1 and f"MISMATCH {victim}" in result.output

    # A forged file with a valid CRC is caught by its hash.
    forged = tmp_path / "forged.zip"
    _rewrite_member(bundle, forged, victim)
    report = verify_bundle(forged)
    assert [(m.file, m.problem) for m in report.mismatches] == [(victim, "sha256 differs")]
    assert report.mismatches[0].expected == rows[123]["sha256"]


def test_cli_bundle_by_settlement_and_a_missing_object(world, store, tmp_path, app, cli):
    items = completed_items(4, prefix="CB", channels=("pc", "mobile"), store=store)
    adhoc_contract()
    sid = world.post("pm", "/api/v1/settlements", json=CURRENT).get_json()["id"]
    # One stored object disappears behind the database's back.
    lost = db.session.query(Artefact).filter(Artefact.item_id == items[2]).order_by(Artefact.id).first()
    store.delete(lost.key, lost.version_id)
    db.session.commit()

    out = tmp_path / "cli.zip"
    result = cli("evidence", "bundle", "--settlement", str(sid), "-o", str(out))
    assert result.exit_code == 0, result.output
    report = verify_bundle(out)
    assert len(report.mismatches) == 1
    assert report.mismatches[0].file.startswith(f"CB-0002-{items[2]}/")
    assert report.mismatches[0].problem == "missing from the bundle"
    assert report.files_checked == 4 * len(KINDS) - 1

    # The filtered export of the same items carries the same manifest.
    r = world.get("pm", "/api/v1/exports/evidence.zip?contract=SH-YWTB-2025&service_line=1")
    assert r.status_code == 200
    with zipfile.ZipFile(io.BytesIO(r.data)) as zf:
        rows = list(csv.DictReader(io.StringIO(zf.read(MANIFEST).decode("utf-8-sig"))))
    assert len(rows) == 4 * len(KINDS)
    assert sum(1 for row in rows if row["status"] != "ok") == 1


class _TrackingStore:
    """Hands out the real store's streams in small chunks and keeps them, to check they all get closed."""

    def __init__(self, real) -> None:
        self.real = real
        self.streams: list = []
        self.most_open = 0

    def open_streams(self) -> int:
        return sum(1 for s in self.streams if s._response is not None)

    def __getattr__(self, name):  # everything else (the bundle's audit anchor) goes to the real store
        return getattr(self.real, name)

    def iter_content(self, key, version_id, chunk=1 << 20):
        stream = self.real.iter_content(key, version_id, chunk=256)
        self.streams.append(stream)
        self.most_open = max(self.most_open, self.open_streams())
        return stream


def _fetch_threads() -> list:
    import threading

    return [t for t in threading.enumerate() if t.name.startswith("bundle-fetch")]


def test_prefetched_bundle_streams_large_objects_in_order_and_closes_everything(world, store, tmp_path,
                                                                               monkeypatch):
    from engine.money import bundle as bundle_module
    from engine.money.reports import WorkloadFilter

    completed_items(6, prefix="PF", store=store)
    # Objects larger than what a fetching thread may hold: the rest streams through the writer.
    monkeypatch.setattr(bundle_module, "PREFETCH_BYTES", 512)
    tracking = _TrackingStore(store)
    f = WorkloadFilter(contract="SH-YWTB-2025")
    out = tmp_path / "prefetched.zip"
    with out.open("wb") as fh:
        for chunk in bundle_module.stream_bundle(db.session, tracking, f, "t"):
            fh.write(chunk)
    report = verify_bundle(out)
    assert report.ok, report.mismatches
    assert report.files_checked == 6 * len(KINDS) == len(tracking.streams)
    with zipfile.ZipFile(out) as zf:
        rows = list(csv.DictReader(io.StringIO(zf.read(MANIFEST).decode("utf-8-sig"))))
        members = [n for n in zf.namelist() if n not in (MANIFEST, SUMMARY, ANCHOR)]
    assert members == [row["file"] for row in rows]  # archive order is manifest order
    assert tracking.open_streams() == 0
    assert tracking.most_open <= bundle_module.PREFETCH + 1

    # The client goes away after the first bytes: every fetched-ahead response is released, threads stop.
    monkeypatch.setattr(bundle_module, "FLUSH_AT", 1)
    tracking = _TrackingStore(store)
    chunks = bundle_module.stream_bundle(db.session, tracking, f, "t")
    next(chunks)
    time.sleep(0.5)
    assert tracking.open_streams() > 1  # fetches ran ahead of the writer
    chunks.close()
    assert tracking.open_streams() == 0
    assert not _fetch_threads()

"""Evidence bundles: a ZIP streamed from the object store with a manifest, and its offline verification."""
from __future__ import annotations

import contextlib
import csv
import hashlib
import io
import json
import re
import tempfile
import zipfile
import zlib
from collections import defaultdict, deque
from collections.abc import Callable, Generator, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from engine.money.reports import TZ, XLSX_OPTIONS, WorkloadFilter, filtered_entries, joined_entries, totals
from engine.trust import anchors
from storage.artefact_store import ArtefactStore, ObjectMissing, ObjectStream
from storage.models import Artefact, GatePass, ServiceLine, User, WorkItem, WorkloadEntry

MANIFEST = "manifest.csv"
SUMMARY = "summary.xlsx"
ANCHOR = "anchor.json"
MANIFEST_HEADER = ["item_id", "item_code", "item_name", "service_line", "gate", "kind", "file", "size", "sha256",
                   "uploaded_by", "uploaded_at", "object_version", "artefact_id", "status"]
# Hand bytes to the client once this much is buffered; one S3 chunk is 1 MiB, so memory stays ~2 MiB.
FLUSH_AT = 1 << 20
_UNSAFE = re.compile(r'[\x00-\x1f\x7f/\\:*?"<>|]+')


class BundleError(Exception):
    """The file is not a bundle this tool can check (not a ZIP, or without its manifest)."""


def _safe(part: str, limit: int = 80) -> str:
    cleaned = _UNSAFE.sub("_", part).strip().strip(".") or "_"
    return cleaned[:limit]


class _Sink:
    """A write-only, non-seekable file for zipfile: it buffers what is written until the generator drains it.

    zipfile notices it cannot seek and writes data descriptors after each member instead of patching headers,
    which is what lets the archive leave as a stream.
    """

    def __init__(self) -> None:
        self._parts: list[bytes] = []
        self._pos = 0
        self.buffered = 0

    def write(self, data: bytes) -> int:
        self._parts.append(bytes(data))
        self._pos += len(data)
        self.buffered += len(data)
        return len(data)

    def tell(self) -> int:
        return self._pos

    def flush(self) -> None:
        pass

    def drain(self) -> bytes:
        out = b"".join(self._parts)
        self._parts.clear()
        self.buffered = 0
        return out


@dataclass
class _Stats:
    items: set[int] = field(default_factory=set)
    files: int = 0
    bytes: int = 0


def _evidence_query(f: WorkloadFilter) -> Any:
    items = filtered_entries(joined_entries(select(WorkloadEntry.item_id).select_from(WorkloadEntry)), f).distinct()
    return (select(GatePass.gate, GatePass.kind, Artefact.id.label("artefact_id"), Artefact.filename, Artefact.key,
                   Artefact.version_id, Artefact.sha256, Artefact.size, Artefact.media_type, Artefact.uploaded_at,
                   User.username, WorkItem.id.label("item_id"), WorkItem.code.label("item_code"),
                   WorkItem.name.label("item_name"), ServiceLine.code.label("line_code"))
            .join(Artefact, Artefact.id == GatePass.artefact_id)
            .join(User, User.id == Artefact.uploaded_by_id)
            .join(WorkItem, WorkItem.id == GatePass.item_id)
            .join(ServiceLine, ServiceLine.id == WorkItem.service_line_id)
            .where(GatePass.item_id.in_(items))
            .order_by(WorkItem.id, Artefact.id, GatePass.id))


def evidence_count(session: Session, f: WorkloadFilter) -> int:
    """How many evidence rows (artefact × gate) a bundle walks: the total a progress report counts towards."""
    return int(session.execute(select(func.count()).select_from(
        _evidence_query(f).order_by(None).subquery())).scalar_one())


def stream_bundle(session: Session, store: ArtefactStore, f: WorkloadFilter, title: str,
                  facts: list[tuple[str, Any]] | None = None,
                  progress: Callable[[int, int], None] | None = None) -> Iterator[bytes]:
    """Yield a ZIP: one folder per item with every artefact that made its gates pass, manifest.csv and
    summary.xlsx. Objects are copied chunk by chunk and the manifest spools to a temp file, so memory does
    not grow with the bundle's size. `progress(done, total)` is called with evidence rows handled so far."""
    total = evidence_count(session, f) if progress is not None else 0
    done = 0
    sink = _Sink()
    manifest = tempfile.SpooledTemporaryFile(max_size=1 << 20, mode="w+", encoding="utf-8", newline="")
    writer = csv.writer(manifest)
    manifest.write("\ufeff")
    writer.writerow(MANIFEST_HEADER)
    stats: dict[str, _Stats] = defaultdict(_Stats)
    problems: list[tuple[str, str]] = []
    prefetch = _Prefetcher(store)
    rows = None
    try:
        with zipfile.ZipFile(sink, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=1,  # type: ignore[call-overload]
                             allowZip64=True) as zf:
            rows = session.execute(_evidence_query(f).execution_options(yield_per=500))
            for r, path, fetch in _planned(rows, prefetch):
                if progress is not None:
                    done += 1
                    progress(min(done, total), total)
                if path is None:
                    continue  # the same artefact passed the same gate again after a rework
                status = "ok"
                if fetch is not None:
                    status = yield from _copy_object(zf, sink, r, path, fetch.result())
                    if status != "ok":
                        problems.append((path, status))
                    st = stats[r.line_code]
                    st.items.add(r.item_id)
                    st.files += 1
                    st.bytes += r.size
                writer.writerow([r.item_id, r.item_code, r.item_name, r.line_code, r.gate, r.kind, path, r.size,
                                 r.sha256, r.username, r.uploaded_at.astimezone(UTC).isoformat(),
                                 r.version_id or "", r.artefact_id, status])
            manifest.flush()
            manifest.seek(0)
            manifest_hash = hashlib.sha256()
            with zf.open(MANIFEST, "w") as dst:
                while block := manifest.read(1 << 16):
                    encoded = block.encode("utf-8")
                    manifest_hash.update(encoded)
                    dst.write(encoded)
            # The bundle is made under an anchor that also records its manifest's SHA-256: `evidence verify
            # --against-anchors` later proves that this manifest (and so every file hash in it) is the one made.
            anchor = anchors.anchor_now(session, store, "evidence_bundle",
                                        manifest_sha256=manifest_hash.hexdigest(), title=title)
            with zf.open(ANCHOR, "w") as dst:
                dst.write(json.dumps({"manifest_sha256": manifest_hash.hexdigest(),
                                      "anchor": None if anchor is None else anchor.ref()},
                                     ensure_ascii=False, indent=2).encode("utf-8"))
            yield sink.drain()
            anchor_fact = [("审计锚点", "无" if anchor is None else f"{anchor.key}（审计事件 {anchor.event_id}）")]
            summary = _summary_xlsx(session, f, title, [*(facts or []), *anchor_fact], stats, problems)
            try:
                with zf.open(SUMMARY, "w") as dst:
                    while chunk := summary.read(1 << 16):
                        dst.write(chunk)
            finally:
                summary.close()
        yield sink.drain()
    finally:
        prefetch.close()
        if rows is not None:
            rows.close()  # a client that went away leaves a server-side cursor open otherwise
        manifest.close()


# Evidence is mostly PDFs, images and Office/OFD files, which are already compressed: deflating them again
# cost ~70 % of the bundle's CPU for no gain. Only plain text and the old binary Office formats are deflated.
_DEFLATE_TYPES = ("text/", "application/msword", "application/vnd.ms-excel")


def _compression_for(media_type: str | None) -> int:
    if media_type and media_type.startswith(_DEFLATE_TYPES):
        return zipfile.ZIP_DEFLATED
    return zipfile.ZIP_STORED


def _copy_object(zf: zipfile.ZipFile, sink: _Sink, r: Any, path: str,
                 fetched: _Fetched | None) -> Generator[bytes, None, str]:
    """Copy one stored object version into the archive; returns "ok" or why the copy is not the record."""
    if fetched is None:
        return "missing from the object store"
    info = zipfile.ZipInfo(path, date_time=r.uploaded_at.astimezone(TZ).timetuple()[:6])
    info.compress_type = _compression_for(r.media_type)
    info.file_size = r.size
    digest, size = fetched.digest, fetched.size
    with contextlib.ExitStack() as cleanup:
        if fetched.rest is not None:
            cleanup.enter_context(fetched.rest)
        dst = cleanup.enter_context(zf.open(info, "w", force_zip64=r.size > (1 << 30)))
        while fetched.head:
            dst.write(fetched.head.pop(0))  # already hashed by the fetching thread
            if sink.buffered >= FLUSH_AT:
                yield sink.drain()
        for chunk in fetched.rest or ():
            digest.update(chunk)
            size += len(chunk)
            dst.write(chunk)
            if sink.buffered >= FLUSH_AT:
                yield sink.drain()
    if size != r.size or digest.hexdigest() != r.sha256:
        # The bundle carries the stored bytes, the manifest the recorded hash: verify will name this file.
        return "stored object differs from the record"
    return "ok"


# Objects are fetched ahead by a few threads while the archive is written: most of a GET is waiting for the
# store, and one object's transfer and SHA-256 (which release the GIL) overlap the CRC and sending of the
# previous ones. Memory stays bounded: at most PREFETCH objects are ahead, each holding at most PREFETCH_BYTES
# (plus one chunk); the rest of a larger object stays in its open response and is streamed by the writer.
PREFETCH = 4
PREFETCH_BYTES = 2 << 20
# How many manifest rows may be read ahead of the writer (rows that need no fetch: repeats of an artefact).
_LOOKAHEAD_ROWS = 512


@dataclass
class _Fetched:
    head: list[bytes]
    digest: Any  # hashlib's sha256 object, over head
    size: int
    rest: ObjectStream | None  # the unread remainder of an object larger than PREFETCH_BYTES


def _fetch(store: ArtefactStore, key: str, version_id: str | None) -> _Fetched | None:
    """Open a GET and read the first PREFETCH_BYTES of it; None if the object version is missing."""
    try:
        stream = store.iter_content(key, version_id)
    except ObjectMissing:
        return None
    try:
        head: list[bytes] = []
        digest = hashlib.sha256()
        size = 0
        while size < PREFETCH_BYTES:
            chunk = next(stream, None)
            if chunk is None:
                return _Fetched(head, digest, size, None)  # the stream closed itself at its end
            digest.update(chunk)
            size += len(chunk)
            head.append(chunk)
        return _Fetched(head, digest, size, stream)
    except BaseException:
        stream.close()
        raise


class _Prefetcher:
    """A few threads fetching objects ahead of the archive writer, in the writer's order."""

    def __init__(self, store: ArtefactStore, depth: int = PREFETCH) -> None:
        self.store = store
        self.depth = depth
        self.pending: deque[Future[_Fetched | None]] = deque()
        self._pool: ThreadPoolExecutor | None = None

    def submit(self, key: str, version_id: str | None) -> Future[_Fetched | None]:
        if self._pool is None:
            self._pool = ThreadPoolExecutor(self.depth, thread_name_prefix="bundle-fetch")
        future = self._pool.submit(_fetch, self.store, key, version_id)
        self.pending.append(future)
        return future

    def close(self) -> None:
        """Stop fetching and free the connections of fetched objects that were not written (e.g. the client
        went away)."""
        for future in self.pending:
            future.cancel()
        if self._pool is not None:
            self._pool.shutdown(wait=True)
        while self.pending:
            future = self.pending.popleft()
            if future.cancelled() or future.exception() is not None:
                continue
            fetched = future.result()
            if fetched is not None and fetched.rest is not None:
                fetched.rest.close()


def _planned(rows: Iterable[Any], prefetch: _Prefetcher) -> Iterator[tuple[Any, str | None, Any]]:
    """The evidence rows in order, each with its archive path (None: a repeat of an artefact×gate pair, left
    out) and, for the first row of each artefact, the future of its fetch; fetches run ahead of the writer."""
    written: dict[int, str] = {}
    seen_pairs: set[tuple[int, str, int]] = set()
    ahead: deque[tuple[Any, str | None, Future[_Fetched | None] | None]] = deque()
    source = iter(rows)
    exhausted = False
    while True:
        while not exhausted and len(prefetch.pending) < prefetch.depth and len(ahead) < _LOOKAHEAD_ROWS:
            r = next(source, None)
            if r is None:
                exhausted = True
                break
            pair = (r.item_id, r.gate, r.artefact_id)
            if pair in seen_pairs:
                ahead.append((r, None, None))
                continue
            seen_pairs.add(pair)
            path = written.get(r.artefact_id)
            if path is not None:
                ahead.append((r, path, None))
                continue
            folder = f"{_safe(r.item_code)}-{r.item_id}"
            path = f"{folder}/{_safe(r.kind, 40)}-{r.artefact_id}-{_safe(r.filename, 120)}"
            written[r.artefact_id] = path
            ahead.append((r, path, prefetch.submit(r.key, r.version_id)))
        if not ahead:
            return
        r, path, future = ahead.popleft()
        if future is not None:
            assert prefetch.pending[0] is future
            prefetch.pending.popleft()
        yield r, path, future


def _summary_xlsx(session: Session, f: WorkloadFilter, title: str, facts: list[tuple[str, Any]],
                  stats: dict[str, _Stats], problems: list[tuple[str, str]]) -> IO[bytes]:
    import xlsxwriter

    out = tempfile.SpooledTemporaryFile(max_size=4 << 20)
    tmp = tempfile.TemporaryDirectory(prefix="itemgate-bundle-")
    try:
        book = xlsxwriter.Workbook(out, XLSX_OPTIONS | {"tmpdir": tmp.name})
        bold = book.add_format({"bold": True})
        money = book.add_format({"num_format": "#,##0.00"})
        sheet = book.add_worksheet("佐证材料汇总")
        t = totals(session, f)
        head: list[tuple[str, Any]] = [("佐证材料包", title),
                                       ("生成时间", datetime.now(TZ).strftime("%Y-%m-%d %H:%M:%S")), *facts,
                                       ("工作量金额合计（元）", t["amount"]), ("数量合计", t["units"])]
        r = 0
        for r, (label, value) in enumerate(head):
            sheet.write(r, 0, label, bold)
            if hasattr(value, "as_tuple"):
                sheet.write_number(r, 1, float(value), money)
            else:
                sheet.write(r, 1, "" if value is None else str(value))
        r += 2
        sheet.write_row(r, 0, ["服务类别", "事项数", "文件数", "字节数"], bold)
        lines = {sl.code: sl.name for sl in session.scalars(select(ServiceLine))}
        all_items: set[int] = set()
        files = size = 0
        for code in sorted(stats):
            r += 1
            st = stats[code]
            sheet.write_row(r, 0, [f"{code} {lines.get(code, '')}", len(st.items), st.files, st.bytes])
            all_items |= st.items
            files += st.files
            size += st.bytes
        r += 1
        sheet.write_row(r, 0, ["合计", len(all_items), files, size], bold)
        r += 2
        sheet.write(r, 0, "异常文件", bold)
        sheet.write(r, 1, "无" if not problems else str(len(problems)))
        for path, why in problems:
            r += 1
            sheet.write_row(r, 0, [path, why])
        sheet.set_column(0, 0, 28)
        sheet.set_column(1, 1, 40)
        book.close()
    finally:
        tmp.cleanup()
    out.seek(0)
    return out  # type: ignore[return-value]


# ---------------------------------------------------------------- verification

@dataclass
class Mismatch:
    file: str
    problem: str
    expected: str | None = None
    actual: str | None = None


@dataclass
class VerifyReport:
    files_checked: int = 0
    bytes_checked: int = 0
    mismatches: list[Mismatch] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.mismatches


def read_manifest(zf: zipfile.ZipFile) -> list[dict[str, str]]:
    try:
        raw = zf.read(MANIFEST)
    except KeyError as exc:
        raise BundleError(f"the bundle has no {MANIFEST}") from exc
    rows = list(csv.DictReader(io.StringIO(raw.decode("utf-8-sig"))))
    if rows and not {"file", "size", "sha256"} <= set(rows[0]):
        raise BundleError(f"{MANIFEST} lacks the file/size/sha256 columns")
    return rows


def expected_files(rows: list[dict[str, str]]) -> dict[str, tuple[int, str, str]]:
    """file → (size, sha256, status) from the manifest, in manifest order."""
    out: dict[str, tuple[int, str, str]] = {}
    for row in rows:
        out.setdefault(row["file"], (int(row["size"] or 0), row["sha256"].lower(), row.get("status") or "ok"))
    return out


def verify_bundle(path: str | Path, progress: Callable[[int], None] | None = None,
                  on_start: Callable[[int], None] | None = None) -> VerifyReport:
    """Re-hash every file against the manifest; name each file that is missing, damaged, altered or extra."""
    try:
        zf = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as exc:
        raise BundleError(f"{path}: not a readable ZIP: {exc}") from exc
    report = VerifyReport()
    with zf:
        expected = expected_files(read_manifest(zf))
        if on_start is not None:
            on_start(sum(size for size, _, _ in expected.values()))
        present = {i.filename: i for i in zf.infolist() if not i.is_dir()}
        for name, (size, sha, status) in expected.items():
            if name not in present:
                report.mismatches.append(Mismatch(name, "missing from the bundle"))
                continue
            digest = hashlib.sha256()
            count = 0
            try:
                with zf.open(present[name]) as src:
                    while block := src.read(1 << 20):
                        digest.update(block)
                        count += len(block)
                        if progress is not None:
                            progress(len(block))
            except (zipfile.BadZipFile, zlib.error, EOFError, OSError, ValueError) as exc:
                report.mismatches.append(Mismatch(name, f"damaged: {exc}"))
                continue
            report.files_checked += 1
            report.bytes_checked += count
            actual = digest.hexdigest()
            if count != size:
                report.mismatches.append(Mismatch(name, "size differs", str(size), str(count)))
            elif actual != sha:
                report.mismatches.append(Mismatch(name, "sha256 differs", sha, actual))
            elif status != "ok":
                report.mismatches.append(Mismatch(name, f"flagged when bundled: {status}"))
        for name in present:
            if name not in expected and name not in (MANIFEST, SUMMARY, ANCHOR):
                report.mismatches.append(Mismatch(name, "not in the manifest"))
    return report


# ---------------------------------------------------------------- against the anchors in the store

@dataclass
class AnchorCheck:
    manifest_sha256: str
    claimed: dict[str, Any] | None  # what the bundle's anchor.json names
    matched: anchors.Anchor | None  # a stored anchor that carries this manifest's SHA-256
    problem: str | None

    @property
    def ok(self) -> bool:
        return self.matched is not None and self.problem is None


def check_against_anchors(path: str | Path, store: ArtefactStore) -> AnchorCheck:
    """Does an anchor in the store (written under object lock when the bundle was made) carry the SHA-256 of this
    bundle's manifest? The anchor its anchor.json names is read first; failing that, every stored anchor."""
    try:
        with zipfile.ZipFile(path) as zf:
            try:
                digest = hashlib.sha256(zf.read(MANIFEST)).hexdigest()
            except KeyError as exc:
                raise BundleError(f"the bundle has no {MANIFEST}") from exc
            try:
                claimed = json.loads(zf.read(ANCHOR)).get("anchor")
            except (KeyError, ValueError, AttributeError):
                claimed = None
    except (zipfile.BadZipFile, OSError) as exc:
        raise BundleError(f"{path}: not a readable ZIP: {exc}") from exc
    if isinstance(claimed, dict) and isinstance(claimed.get("key"), str):
        try:
            named = anchors.read_anchor(store, claimed["key"], claimed.get("version_id"))
        except (ObjectMissing, ValueError):
            named = None
        if named is not None and named.detail.get("manifest_sha256") == digest:
            return AnchorCheck(digest, claimed, named, None)
    else:
        claimed = None
    for anchor in anchors.stored_anchors(store).anchors:
        if anchor.detail.get("manifest_sha256") == digest:
            problem = None if claimed is None or claimed.get("key") == anchor.key else \
                f"anchor.json names {claimed.get('key')}, but the manifest matches {anchor.key}"
            return AnchorCheck(digest, claimed, anchor, problem)
    why = "no anchor in the store carries this manifest's SHA-256: the manifest was changed after the bundle " \
          "was made, or the bundle was not made by this installation"
    return AnchorCheck(digest, claimed, None, why)

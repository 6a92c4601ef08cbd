"""The export registry: each filtered export kind with its builder, format, file names, permission and whether
it may run as a background job. The REST routes, web pages, export jobs and templates all read it."""
from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import IO, Any

from sqlalchemy.orm import Session

from engine.money.bundle import stream_bundle
from engine.money.reports import WorkloadFilter, counts_csv_stream, counts_xlsx_file, csv_stream, xlsx_file
from storage.artefact_store import ArtefactStore

XLSX = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
CSV = "text/csv; charset=utf-8"
ZIP = "application/zip"

Progress = Callable[[int, int], None]


@dataclass
class ExportRequest:
    """What a builder needs: the rows to export (`filter`), a description of the filter for the file itself,
    the object store (for evidence) and an optional progress callback."""

    session: Session
    filter: WorkloadFilter
    store: ArtefactStore | None = None
    described: str = "全部"
    facts: list[tuple[str, Any]] | None = None
    progress: Progress | None = None


# A builder returns either an iterator of chunks (streamed as produced) or a file positioned at its start.
Output = Iterator[bytes] | IO[bytes]


@dataclass(frozen=True)
class ExportKind:
    kind: str
    title: str                 # what people call it (Chinese source string)
    format: str                # file extension shown next to the title
    action: str                # the policy action that may take it
    content_type: str
    name: str                  # download file name
    ascii_name: str            # its ASCII fallback
    build: Callable[[ExportRequest], Output] = field(compare=False)
    background: bool = True    # may run as an export job (its builder reports progress)
    needs_store: bool = False  # reads evidence from the object store
    on_web: bool = True        # offered on the web export page (else REST only)


def _workload_xlsx(r: ExportRequest) -> Output:
    return xlsx_file(r.session, r.filter, progress=r.progress)


def _workload_csv(r: ExportRequest) -> Output:
    return csv_stream(r.session, r.filter, progress=r.progress)


def _evidence_zip(r: ExportRequest) -> Output:
    if r.store is None:
        raise RuntimeError("an evidence bundle needs the object store")
    return stream_bundle(r.session, r.store, r.filter, f"筛选：{r.described}", r.facts, progress=r.progress)


def _counts_csv(r: ExportRequest) -> Output:
    return counts_csv_stream(r.session, r.filter)


def _counts_xlsx(r: ExportRequest) -> Output:
    return counts_xlsx_file(r.session, r.filter)


EXPORTS: dict[str, ExportKind] = {e.kind: e for e in (
    ExportKind("workload_xlsx", "工作量统计明细表", "XLSX", "workload.read", XLSX, "工作量统计明细表.xlsx",
               "workload.xlsx", _workload_xlsx),
    ExportKind("workload_csv", "工作量统计明细表", "CSV", "workload.read", CSV, "工作量统计明细表.csv",
               "workload.csv", _workload_csv),
    ExportKind("evidence_zip", "佐证材料包", "ZIP", "settlement.read", ZIP, "佐证材料.zip", "evidence.zip",
               _evidence_zip, needs_store=True),
    ExportKind("counts_csv", "完成事项统计", "CSV", "workload.read", CSV, "完成事项统计.csv", "counts.csv",
               _counts_csv, background=False, on_web=False),
    ExportKind("counts_xlsx", "完成事项统计", "XLSX", "workload.read", XLSX, "完成事项统计.xlsx", "counts.xlsx",
               _counts_xlsx, background=False, on_web=False),
)}


def export_kind(kind: str) -> ExportKind | None:
    return EXPORTS.get(kind)


def export_named(file_name: str) -> ExportKind | None:
    """The export whose download is called `file_name` (its ASCII name, as in /exports/workload.csv)."""
    return next((e for e in EXPORTS.values() if e.ascii_name == file_name), None)


def background_kinds() -> dict[str, ExportKind]:
    return {k: e for k, e in EXPORTS.items() if e.background}

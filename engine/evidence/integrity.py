"""Evidence integrity: fsck compares artefact rows with their objects and sweeps orphaned objects."""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from sqlalchemy import exists, select
from sqlalchemy.orm import Session

from engine.errors import Forbidden
from engine.evidence.artefacts import object_mismatch
from storage.artefact_store import ArtefactStore, ObjectInfo, ObjectMissing, StoreUnavailable
from storage.models import Artefact, GatePass

# Only evidence lives under this prefix; audit exports and anything else in the bucket are never orphans.
EVIDENCE_PREFIX = "contracts/"


@dataclass
class Problem:
    artefact_id: int
    key: str
    version_id: str | None
    problem: str


@dataclass
class FsckReport:
    checked: int = 0
    problems: list[Problem] = field(default_factory=list)
    orphans: list[ObjectInfo] = field(default_factory=list)
    removed: list[ObjectInfo] = field(default_factory=list)
    kept_young: list[ObjectInfo] = field(default_factory=list)
    refused: list[ObjectInfo] = field(default_factory=list)
    held: list[Problem] = field(default_factory=list)  # gate evidence whose missing hold --repair placed
    # The bucket was created without object lock: holds read back as set but protect nothing.
    lock_missing: bool = False

    @property
    def clean(self) -> bool:
        return not self.problems and not self.orphans and not self.lock_missing


def _referenced(session: Session, key: str, version_id: str | None) -> bool:
    query = select(Artefact.id).where(Artefact.key == key)
    if version_id is not None:
        query = query.where((Artefact.version_id == version_id) | Artefact.version_id.is_(None))
    return session.execute(query.limit(1)).scalar() is not None


def discard_object(session: Session, store: ArtefactStore, key: str, version_id: str | None) -> None:
    """Delete one object version, unless a row refers to it (a gate may have passed on it): evidence that
    any artefact row points at is never removed by the application."""
    if _referenced(session, key, version_id):
        passed = session.execute(select(exists().where(GatePass.artefact_id == Artefact.id,
                                                       Artefact.key == key))).scalar()
        raise Forbidden(f"object {key} is {'gate evidence' if passed else 'referenced by an artefact'}; "
                        "it is retained", code="evidence_retained")
    store.delete(key, version_id)


def fsck(session: Session, store: ArtefactStore, *, repair: bool = False, grace_hours: int = 24,
         now: datetime | None = None, deep: bool = True) -> FsckReport:
    """Check every artefact row against its object (exists; size and SHA-256 by streaming it when `deep`, else
    size and SHA-256 metadata or ETag from a HEAD, as a gate check does), list objects no row refers to, and
    with `repair` remove those older than the grace period.

    Evidence a gate passed on must carry a legal hold (the completion places it but does not fail when the
    store refuses); a missing hold is a problem, and `repair` places it. A bucket without object lock, where no
    hold protects anything, is a problem of its own (`lock_missing`); `repair` cannot fix that."""
    now = now or datetime.now(UTC)
    report = FsckReport()
    holds = store.object_lock_enabled()
    report.lock_missing = not holds
    known: dict[str, set[str | None]] = {}
    last = 0
    while True:
        rows = list(session.scalars(select(Artefact).where(Artefact.id > last).order_by(Artefact.id).limit(500)))
        if not rows:
            break
        passed = set(session.scalars(select(GatePass.artefact_id).where(
            GatePass.artefact_id.in_([r.id for r in rows])))) if holds else set()
        for row in rows:
            last = row.id
            known.setdefault(row.key, set()).add(row.version_id)
            report.checked += 1
            try:
                if deep:
                    size, sha = store.hash_object(row.key, row.version_id)
                    mismatch = (f"size {size} != recorded {row.size}" if size != row.size
                                else "SHA-256 differs from recorded" if sha != row.sha256 else None)
                else:
                    # From a HEAD: the recorded SHA-256 against the object's metadata, or (streamed uploads,
                    # whose objects carry none) the recorded ETag against the object's.
                    mismatch = object_mismatch(row, store.stat_object(row.key, row.version_id))
            except ObjectMissing:
                report.problems.append(Problem(row.id, row.key, row.version_id, "object missing"))
                continue
            if mismatch is not None:
                report.problems.append(Problem(row.id, row.key, row.version_id, mismatch))
            if row.id in passed and not store.is_held(row.key, row.version_id):
                unheld = Problem(row.id, row.key, row.version_id, "gate evidence without a legal hold")
                if repair and store.hold(row.key, row.version_id):
                    report.held.append(unheld)
                else:
                    report.problems.append(unheld)
        session.expunge_all()
    cutoff = now - timedelta(hours=grace_hours)
    for obj in store.iter_objects(EVIDENCE_PREFIX):
        if obj.is_delete_marker:
            continue
        versions = known.get(obj.key)
        if versions is not None and (obj.version_id in versions or None in versions):
            continue
        report.orphans.append(obj)
        if not repair:
            continue
        if obj.last_modified is None or obj.last_modified > cutoff:
            # An upload whose row is about to commit looks exactly like this; only age tells them apart.
            report.kept_young.append(obj)
            continue
        try:
            discard_object(session, store, obj.key, obj.version_id)  # re-checks the rows at the last moment
        except StoreUnavailable:
            # e.g. the server's object lock refuses: the object stays, and is reported again next time.
            report.refused.append(obj)
            continue
        report.removed.append(obj)
    return report

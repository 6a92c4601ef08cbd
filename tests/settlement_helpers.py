"""Fast factories for ledger/settlement tests: completed items with real S3 evidence, without the HTTP lifecycle."""
from __future__ import annotations

import io
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import select

from api.demo import demo_pdf
from api.extensions import db
from engine.money.ledger import tally_item
from engine.trust import audit
from engine.usecases.tasks import Ctx, NewItem, create_item
from storage.artefact_store import ArtefactStore
from storage.models import Artefact, GatePass, HumanTask, User, WorkItem, WorkloadEntry

CONTRACT = "SH-YWTB-2025"
GATE_OF = {"requirement_letter": "intake", "complexity_statement": "intake", "go_live_confirmation": "cosign"}
KINDS = ("requirement_letter", "complexity_statement", "go_live_confirmation")


def user(username: str) -> User:
    return db.session.execute(select(User).where(User.username == username)).scalar_one()


def completed_items(count: int, *, prefix: str = "FAST", line: str = "1", channels: tuple[str, ...] = ("pc",),
                    department: str = "DA", mode: str = "new", at: datetime | None = None, store: Any = None,
                    kinds: tuple[str, ...] = KINDS, difficulty: str = "1.00") -> list[int]:
    """Register items through the engine, attach real stored artefacts as gate passes, complete and tally."""
    at = at or datetime.now(UTC)
    context = Ctx(session=db.session, user=user("pm"), now=at)
    items: list[WorkItem] = []
    for i in range(count):
        items.append(create_item(context, NewItem(
            contract=CONTRACT, service_line=line, name=f"事项 {prefix}-{i}", code=f"{prefix}-{i:04d}",
            department=department, channels=list(channels), mode=mode, difficulty=Decimal(difficulty))))
    db.session.flush()
    if store is not None:
        _attach_evidence(items, store, kinds, at)
    for item in items:
        item.status = "completed"
        item.completed_at = at
        item.stage = "done"
        tally_item(db.session, audit.SYSTEM, item, at)
    db.session.commit()
    return [item.id for item in items]


def _attach_evidence(items: list[WorkItem], store: ArtefactStore, kinds: tuple[str, ...], at: datetime) -> None:
    uploader = user("impl")
    jobs = [(item.id, item.code, kind) for item in items for kind in kinds]

    def put(job: tuple[int, str, str]) -> tuple[tuple[int, str, str], Any]:
        item_id, code, kind = job
        body = demo_pdf(f"{kind} {code}")
        key = ArtefactStore.new_key(CONTRACT, item_id, kind)
        return job, store.put_stream(key, io.BytesIO(body), len(body), "application/pdf", 1 << 20)

    with ThreadPoolExecutor(max_workers=8) as pool:
        stored = list(pool.map(put, jobs))
    intake = dict(db.session.execute(select(HumanTask.item_id, HumanTask.id).where(
        HumanTask.item_id.in_([i.id for i in items]), HumanTask.spec_name == "intake")).all())
    for (item_id, _code, kind), obj in stored:
        artefact = Artefact(item_id=item_id, kind=kind, filename=f"{kind}.pdf", bucket=obj.bucket, key=obj.key,
                            version_id=obj.version_id, sha256=obj.sha256, size=obj.size,
                            media_type="application/pdf", uploaded_by_id=uploader.id, uploaded_at=at,
                            status="stored")
        db.session.add(artefact)
        db.session.flush()
        db.session.add(GatePass(item_id=item_id, task_id=intake[item_id], gate=GATE_OF.get(kind, "intake"),
                                kind=kind, artefact_id=artefact.id, passed_at=at))
    db.session.flush()


def entry_ids(item_ids: list[int]) -> list[int]:
    return list(db.session.scalars(select(WorkloadEntry.id).where(WorkloadEntry.item_id.in_(item_ids))
                                   .order_by(WorkloadEntry.id)))


def ledger_sum() -> Decimal:
    """Sum of every entry of live items, straight from the table."""
    rows = db.session.execute(select(WorkloadEntry.amount).join(WorkItem, WorkItem.id == WorkloadEntry.item_id)
                              .where(WorkItem.status != "cancelled")).scalars()
    return sum(rows, Decimal("0"))


def drive_to_approved(world: Any, sid: int, score: float | None = None) -> dict[str, Any]:
    r = world.post("pm", f"/api/v1/settlements/{sid}/submit", json={})
    assert r.status_code == 200, r.get_json()
    r = world.post("auditor", f"/api/v1/settlements/{sid}/accept", json={"comment": "材料齐全"})
    assert r.status_code == 200, r.get_json()
    body: dict[str, Any] = {"decision": "approve", "comment": "初审通过"}
    if score is not None:
        body["assessment_score"] = score
    r = world.post("buyer", f"/api/v1/settlements/{sid}/first-review", json=body)
    assert r.status_code == 200, r.get_json()
    r = world.post("buyer2", f"/api/v1/settlements/{sid}/final-approval", json={"decision": "approve"})
    assert r.status_code == 200, r.get_json()
    assert r.get_json()["status"] == "approved"
    return r.get_json()


def adhoc_contract(code: str = CONTRACT) -> None:
    """Drop the contract's settlement schedule: claims open for ad-hoc periods (the pre-schedule behaviour the
    older lifecycle, bundle and race tests drive with today's dates)."""
    from storage.models import Contract

    contract = db.session.execute(select(Contract).where(Contract.code == code)).scalar_one()
    settings = dict(contract.settings or {})
    settings.pop("settlement_schedule", None)
    contract.settings = settings
    db.session.commit()

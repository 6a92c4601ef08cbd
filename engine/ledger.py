"""The workload ledger: billable units tallied when an item's evidence is complete; append-only."""
from __future__ import annotations

from datetime import datetime
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from engine import audit
from engine.errors import Conflict, Forbidden, Invalid, NotFound
from storage.models import Settlement, SettlementLine, User, WorkItem, WorkloadEntry

CENT = Decimal("0.01")


def amount_of(units: Decimal, difficulty: Decimal, unit_price: Decimal) -> Decimal:
    return (units * difficulty * unit_price).quantize(CENT, rounding=ROUND_HALF_UP)


def tally_key(item_id: int, channel: str) -> str:
    return f"item:{item_id}:channel:{channel}"


def tally_item(session: Session, actor: audit.Actor, item: WorkItem, at: datetime) -> list[WorkloadEntry]:
    """One entry per channel; idempotent: a process that ends twice does not count twice."""
    if item.status == "cancelled":
        return []
    line = item.service_line
    keys = [tally_key(item.id, ch) for ch in item.channels]
    existing = set(session.scalars(select(WorkloadEntry.tally_key).where(WorkloadEntry.tally_key.in_(keys))))
    created = []
    for channel, key in zip(item.channels, keys, strict=True):
        if key in existing:
            continue
        price = Decimal(str(line.unit_prices[channel]))
        units = Decimal(line.units_per_item)
        entry = WorkloadEntry(
            item_id=item.id, contract_id=item.contract_id, service_line_id=item.service_line_id,
            department_id=item.department_id, channel=channel, mode=item.mode, units=units,
            difficulty=item.difficulty, unit_price=price, amount=amount_of(units, item.difficulty, price),
            tallied_at=at, tally_key=key,
        )
        session.add(entry)
        created.append(entry)
    session.flush()
    for entry in created:
        audit.record(session, actor, "workload.tallied", target_type="workload_entry", target_id=entry.id,
                     item_id=item.id, channel=entry.channel, amount=str(entry.amount))
    return created


# ---------------------------------------------------------------- locking and corrections

class SettlementLocked(Conflict):
    """A change to an approved settlement or to an entry it claims; always refused, and the refusal audited."""

    code = "settlement_locked"

    def __init__(self, detail: str, *, settlement_id: int, attempted: str, **extra: Any):
        super().__init__(detail, settlement_id=settlement_id)
        self.settlement_id = settlement_id
        self.attempted = attempted
        self.context = extra


def record_refusal(session: Session, actor: audit.Actor, exc: SettlementLocked) -> None:
    """Audit a refused change; the caller rolled its own work back first and commits this alone."""
    audit.record(session, actor, exc.attempted, target_type="settlement", target_id=exc.settlement_id,
                 outcome="refused", reason=exc.code, **exc.context)


def approved_settlement_of(session: Session, entry_id: int) -> Settlement | None:
    return session.execute(
        select(Settlement).join(SettlementLine, SettlementLine.settlement_id == Settlement.id)
        .where(SettlementLine.entry_id == entry_id, Settlement.status == "approved")).scalar()


def reverse_entry(session: Session, actor: audit.Actor, user: User, entry_id: int, reason: str,
                  at: datetime) -> WorkloadEntry:
    """Correct a wrong entry with a reversing entry (negative units and amount); nothing is edited or deleted.

    The reversal is a new, unsettled entry: it nets the original out in every sum and is claimed by
    whichever settlement gathers it next. An entry claimed by an approved settlement cannot be reversed.
    """
    if user.role not in ("pm", "admin"):
        raise Forbidden("only the project manager corrects the ledger", code="role_required")
    reason = (reason or "").strip()
    if len(reason) < 2:
        raise Invalid("a reversal needs a reason", code="reason_required")
    entry = session.get(WorkloadEntry, entry_id)
    if entry is None:
        raise NotFound(f"ledger entry {entry_id} not found")
    locked = approved_settlement_of(session, entry.id)
    if locked is not None:
        raise SettlementLocked(f"entry {entry.id} is part of approved settlement {locked.id} and cannot change",
                               settlement_id=locked.id, attempted="ledger.reverse", entry_id=entry.id,
                               reason_given=reason)
    if entry.reverses_id is not None:
        raise Conflict(f"entry {entry.id} is itself a reversal", code="is_reversal")
    existing = session.execute(select(WorkloadEntry.id).where(WorkloadEntry.reverses_id == entry.id)).scalar()
    if existing is not None:
        raise Conflict(f"entry {entry.id} is already reversed by entry {existing}", code="already_reversed",
                       reversal_id=existing)
    reversal = WorkloadEntry(
        item_id=entry.item_id, contract_id=entry.contract_id, service_line_id=entry.service_line_id,
        department_id=entry.department_id, channel=entry.channel, mode=entry.mode, units=-entry.units,
        difficulty=entry.difficulty, unit_price=entry.unit_price, amount=-entry.amount, tallied_at=at,
        tally_key=None, reverses_id=entry.id, reason=reason, created_by_id=user.id,
    )
    session.add(reversal)
    session.flush()
    audit.record(session, actor, "ledger.reversed", target_type="workload_entry", target_id=reversal.id,
                 reverses=entry.id, item_id=entry.item_id, amount=str(reversal.amount), reason=reason)
    return reversal

"""The workload ledger: billable units tallied when an item's evidence is complete."""
from __future__ import annotations

from datetime import datetime
from decimal import ROUND_HALF_UP, Decimal

from sqlalchemy import select
from sqlalchemy.orm import Session

from engine import audit
from storage.models import WorkItem, WorkloadEntry

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

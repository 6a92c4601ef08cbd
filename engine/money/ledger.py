"""The workload ledger: billable units tallied when an item's evidence is complete; append-only."""
from __future__ import annotations

from datetime import datetime
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from engine.errors import Conflict, Invalid, NotFound
from engine.trust import audit
from engine.trust.policy import authorize
from storage.models import Settlement, SettlementLine, User, WorkItem, WorkloadEntry

CENT = Decimal("0.01")
# An entry keeps its amount at full precision (0.004 元 × 1,440,000,000 calls = 5,760,000 exactly); sums are
# rounded to the fen only at the totals. Six places hold any product of a 4-place unit count, a 2-place
# coefficient and a price the catalogue allows (at most 6 places) that matters to a fen.
EXACT = Decimal("0.000001")
ALL_CHANNELS = "all"


def amount_of(units: Decimal, difficulty: Decimal, unit_price: Decimal) -> Decimal:
    return (Decimal(units) * Decimal(difficulty) * Decimal(unit_price)).quantize(EXACT, rounding=ROUND_HALF_UP)


def money(value: Decimal) -> Decimal:
    """An amount rounded to the fen (half up), as claims and payments show it."""
    return value.quantize(CENT, rounding=ROUND_HALF_UP)


def total_of(amounts: Any) -> Decimal:
    """A total rounded to the fen, once, from full-precision amounts."""
    return sum((Decimal(a) for a in amounts), Decimal(0)).quantize(CENT, rounding=ROUND_HALF_UP)


def tally_key(item_id: int, channel: str) -> str:
    return f"item:{item_id}:channel:{channel}"


def tally_item(session: Session, actor: audit.Actor, item: WorkItem, at: datetime) -> list[WorkloadEntry]:
    """One entry per channel; idempotent: a process that ends twice does not count twice."""
    if item.status == "cancelled":
        return []
    line = item.service_line
    # A line priced without channels (a metered record, a per-licence or per-interface line) counts once.
    channels = list(item.channels) or [ALL_CHANNELS]
    keys = [tally_key(item.id, ch) for ch in channels]
    existing = set(session.scalars(select(WorkloadEntry.tally_key).where(WorkloadEntry.tally_key.in_(keys))))
    created = []
    units = Decimal(item.units) if item.units is not None else Decimal(line.units_per_item)
    for channel, key in zip(channels, keys, strict=True):
        if key in existing:
            continue
        price = Decimal(str(line.unit_prices[channel]))
        entry = WorkloadEntry(
            item_id=item.id, contract_id=item.contract_id, service_line_id=item.service_line_id,
            department_id=item.department_id, channel=channel, mode=item.mode, units=units,
            difficulty=item.difficulty, unit_price=price, amount=amount_of(units, item.difficulty, price),
            tallied_at=at, tally_key=key, difficulty_proposed_by_id=item.difficulty_proposed_by_id,
            difficulty_confirmed_by_id=item.difficulty_confirmed_by_id,
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


# A claim the PM holds (being prepared, or returned for revision) is reviewed again as a whole when it is
# (re)submitted; a claim under review or approved has been looked at by others and must not move under them.
PM_HOLDS_CLAIM = ("draft", "revising")


class EntryUnderReview(Conflict):
    """A reversal of an entry whose settlement claim is under review: the PM takes it out of the claim first."""

    code = "entry_under_review"


def _lock_entry(session: Session, entry_id: int) -> WorkloadEntry | None:
    """The entry, row-locked until commit (PostgreSQL): two reversals of it take turns, and a settlement
    claiming it (its line's foreign key takes a share lock on this row) waits for the reversal, or the
    reversal for that claim."""
    return session.execute(select(WorkloadEntry).where(WorkloadEntry.id == entry_id).with_for_update(of=WorkloadEntry)
                           .execution_options(populate_existing=True)).scalar()


def claiming_settlement(session: Session, entry_id: int, *, lock: bool = False) -> Settlement | None:
    """The settlement whose claim holds the entry (an entry is claimed at most once), read fresh. With `lock`,
    its row stays locked until commit, so it cannot be submitted, reviewed or approved meanwhile: every
    settlement step is a compare-and-set UPDATE of that row, which waits for the lock."""
    query = (select(Settlement).join(SettlementLine, SettlementLine.settlement_id == Settlement.id)
             .where(SettlementLine.entry_id == entry_id).execution_options(populate_existing=True))
    if lock:
        query = query.with_for_update(of=Settlement)
    return session.execute(query).scalar()


def reverse_entry(session: Session, actor: audit.Actor, user: User, entry_id: int, reason: str,
                  at: datetime) -> WorkloadEntry:
    """Correct a wrong entry with a reversing entry (negative units and amount); nothing is edited or deleted.

    The reversal is a new, unsettled entry: it nets the original out in every sum and is claimed by
    whichever settlement gathers it next. Only an unclaimed entry, or one of a claim the PM holds (draft or
    returned for revision), can be reversed: a claim under review refuses with 409 `entry_under_review`
    (the PM removes the line once the claim comes back, and resubmits), an approved one with 409
    `settlement_locked`. The entry and its settlement are locked first, so the rule holds against a
    submission, review step or approval racing the reversal, and against a second reversal.
    """
    authorize(user, "ledger.correct")
    reason = (reason or "").strip()
    if len(reason) < 2:
        raise Invalid("a reversal needs a reason", code="reason_required")
    entry = _lock_entry(session, entry_id)
    if entry is None:
        raise NotFound(f"ledger entry {entry_id} not found")
    claim = claiming_settlement(session, entry.id, lock=True)
    if claim is not None and claim.status == "approved":
        raise SettlementLocked(f"entry {entry.id} is part of approved settlement {claim.id} and cannot change",
                               settlement_id=claim.id, attempted="ledger.reverse", entry_id=entry.id,
                               reason_given=reason)
    if claim is not None and claim.status not in PM_HOLDS_CLAIM:
        raise EntryUnderReview(
            f"entry {entry.id} is claimed by settlement {claim.id}, which is under review ({claim.status}); "
            "it can be reversed once the claim is returned and the line removed from it",
            settlement_id=claim.id, settlement_status=claim.status)
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
    try:
        with session.begin_nested():
            session.add(reversal)
    except IntegrityError as exc:
        # The unique index on reverses_id: a reversal committed by a path that did not take the row lock.
        raise Conflict(f"entry {entry.id} is already reversed", code="already_reversed") from exc
    audit.record(session, actor, "ledger.reversed", target_type="workload_entry", target_id=reversal.id,
                 reverses=entry.id, item_id=entry.item_id, amount=str(reversal.amount), reason=reason)
    return reversal

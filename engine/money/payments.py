"""The contract's payment plan (费用支付): what each instalment may be, what is due, what is paid, what is capped.

Declared in the contract settings (`payment_plan`), seed 001 §十(六):

    payment_plan = [
      { number = 1, name = "第一笔预付服务费", amount = 91655000 },            # advance, on signing
      { number = 2, name = "第二笔进度服务费", after = "9m", cap = 0.70 },      # advance + 2nd ≤ 70 % of award
      { number = 3, name = "第三笔进度服务费", after = "annual", cap = 0.80 },  # cumulative ≤ 80 %
      { number = 4, name = "第四笔服务费尾款", after = "final" },               # the balance
    ]

An instalment `after` a stage becomes due once that stage's claim is approved (审定): its target is the
cumulative approved amount through that stage (seed: "9个月运营服务工作量的审量金额", "当年度总体运营服务工作量
的审量金额"), less everything the plan's earlier instalments were due; a `cap` bounds the cumulative total of
the plan up to and including it at cap × award. The balance is the final approved total less what was paid;
when the buyer has paid more than that, nothing is due (the seed leaves the rest to the finance rules).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from engine.contract import schedule
from engine.errors import Conflict, Invalid
from engine.money.ledger import money
from engine.trust import audit
from storage.models import Contract, Payment, Settlement, User


@dataclass
class Instalment:
    number: int
    name: str
    after: str | None          # the stage whose approval makes it due; None = on signing (the advance)
    amount: Decimal | None     # a fixed amount (the advance)
    cap_ratio: Decimal | None  # cumulative cap as a share of the award
    cap: Decimal | None = None  # the cumulative cap in 元 (cap_ratio × award)
    target: Decimal | None = None  # the approved cumulative amount the instalment settles up to
    due: Decimal = Decimal("0.00")  # what this instalment is worth now
    capped: Decimal = Decimal("0.00")  # what the cap held back
    paid: Decimal = Decimal("0.00")
    outstanding: Decimal = Decimal("0.00")
    state: str = "waiting"     # waiting (stage not approved) | due | paid | nothing_due
    payments: list[dict[str, Any]] = field(default_factory=list)


def plan_of(settings: dict[str, Any]) -> list[dict[str, Any]]:
    raw = settings.get("payment_plan")
    if not raw:
        return []
    if not isinstance(raw, list):
        raise Invalid("payment_plan must be a list of instalments", code="bad_contract_settings")
    return sorted(raw, key=lambda p: int(p["number"]))


def compute(plan: list[dict[str, Any]], award: Decimal | None, approved_cumulative: dict[str, Decimal],
            paid: dict[int, Decimal]) -> list[Instalment]:
    """The plan's instalments with what is due, capped and paid. `approved_cumulative` maps a stage to the
    cumulative approved amount through it (only approved stages appear); `paid` maps instalment → total paid."""
    out: list[Instalment] = []
    planned_before = Decimal("0.00")   # what the earlier instalments were due (their cumulative total)
    for raw in plan:
        number = int(raw["number"])
        inst = Instalment(number=number, name=str(raw.get("name") or f"第{number}笔"), after=raw.get("after"),
                          amount=None if raw.get("amount") is None else money(Decimal(str(raw["amount"]))),
                          cap_ratio=None if raw.get("cap") is None else Decimal(str(raw["cap"])))
        if inst.cap_ratio is not None and award is not None:
            inst.cap = money(Decimal(award) * inst.cap_ratio)
        inst.paid = money(paid.get(number, Decimal("0")))
        if inst.after is None:
            target = inst.amount or Decimal("0.00")
        elif inst.after in approved_cumulative:
            target = money(approved_cumulative[inst.after])
        else:
            target = None
        inst.target = target
        if target is None:
            inst.state = "waiting"
        else:
            reach = target if inst.cap is None else min(target, inst.cap)
            inst.capped = money(max(Decimal("0"), target - reach))
            inst.due = money(max(Decimal("0"), reach - planned_before))
            planned_before = max(planned_before, reach) if inst.after is not None else planned_before + inst.due
            inst.state = "nothing_due" if inst.due == 0 else ("paid" if inst.paid >= inst.due else "due")
        inst.outstanding = money(max(Decimal("0"), inst.due - inst.paid))
        out.append(inst)
    return out


def approved_cumulative(session: Session, contract: Contract) -> dict[str, Decimal]:
    """Cumulative approved (审定) net amount through each approved stage, in schedule order."""
    stages = schedule.stages(contract.settings or {}, contract.period_start, contract.period_end)
    approved = {s.stage: s for s in session.scalars(select(Settlement).where(
        Settlement.contract_id == contract.id, Settlement.status == "approved", Settlement.stage.is_not(None)))}
    out: dict[str, Decimal] = {}
    running = Decimal("0.00")
    for st in stages:
        claim = approved.get(st.code)
        if claim is None:
            continue
        running += claim.net_amount or Decimal("0")
        out[st.code] = money(running)
    return out


def paid_by_number(session: Session, contract: Contract) -> dict[int, Decimal]:
    rows = session.execute(select(Payment.number, func.coalesce(func.sum(Payment.amount), 0))
                           .where(Payment.contract_id == contract.id).group_by(Payment.number)).all()
    return {int(n): Decimal(str(a)) for n, a in rows}


def schedule_for(session: Session, contract: Contract) -> list[Instalment]:
    plan = plan_of(contract.settings or {})
    inst = compute(plan, contract.award_amount, approved_cumulative(session, contract),
                   paid_by_number(session, contract))
    payments = session.scalars(select(Payment).where(Payment.contract_id == contract.id).order_by(Payment.id))
    by_number = {i.number: i for i in inst}
    for p in payments:
        if p.number in by_number:
            by_number[p.number].payments.append({"id": p.id, "amount": float(p.amount),
                                                 "paid_on": p.paid_on.isoformat(),
                                                 "invoice_number": p.invoice_number})
    return inst


def record_payment(session: Session, actor: audit.Actor, user: User, contract: Contract, amount: Decimal,
                   paid_on: date, invoice_number: str, now: datetime, number: int | None = None) -> Payment:
    """The buyer records a payment made: it goes to the given instalment, or the first with money outstanding;
    more than is outstanding is refused (409 payment_exceeds_due) — the plan and its caps decide."""
    amount = money(Decimal(amount))
    if amount <= 0:
        raise Invalid("a payment is a positive amount", code="invalid_amount")
    if not (invoice_number or "").strip():
        raise Invalid("a payment names the invoice (等额发票) it pays", code="invoice_required")
    # Serialise payments of one contract (PostgreSQL): two recordings cannot both pass the outstanding check.
    session.execute(select(Contract.id).where(Contract.id == contract.id).with_for_update())
    plan = schedule_for(session, contract)
    if not plan:
        raise Conflict(f"contract {contract.code} declares no payment plan", code="no_payment_plan")
    if number is None:
        target = next((i for i in plan if i.outstanding > 0), None)
    else:
        target = next((i for i in plan if i.number == number), None)
        if target is None:
            raise Invalid(f"the payment plan has no instalment {number}", code="unknown_instalment")
    if target is None or amount > target.outstanding:
        outstanding = Decimal("0") if target is None else target.outstanding
        raise Conflict(f"{amount} is more than is due ({outstanding})", code="payment_exceeds_due",
                       instalment=None if target is None else target.number, outstanding=str(outstanding),
                       state=None if target is None else target.state)
    payment = Payment(contract_id=contract.id, number=target.number, amount=amount, paid_on=paid_on,
                      invoice_number=invoice_number.strip()[:64], recorded_by_id=user.id, recorded_at=now)
    session.add(payment)
    session.flush()
    audit.record(session, actor, "payment.recorded", target_type="contract", target_id=contract.code,
                 payment_id=payment.id, instalment=target.number, amount=str(amount),
                 paid_on=paid_on.isoformat(), invoice_number=payment.invoice_number)
    return payment


def instalment_json(i: Instalment) -> dict[str, Any]:
    def f(v: Decimal | None) -> float | None:
        return None if v is None else float(v)

    return {"number": i.number, "name": i.name, "after": i.after, "amount": f(i.amount),
            "cap_ratio": f(i.cap_ratio), "cap": f(i.cap), "target": f(i.target), "due": f(i.due),
            "capped": f(i.capped), "paid": f(i.paid), "outstanding": f(i.outstanding), "state": i.state,
            "payments": i.payments}

"""What registering an item on a service line asks for: the fields the line's model and gate rules read, and a
metered line's units and period."""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from engine.contract.catalog import METERED_PROCESSES
from storage.models import Department, ServiceLine

# Item attributes each process model reads at its start (engine/usecases/tasks.py passes them as start data).
PROCESS_FIELDS: dict[str, tuple[str, ...]] = {
    "one_thing": ("departments",),
    "e_licence": ("parts",),
}
E_LICENCE_PARTS = ("showing", "using")
# Field kinds that are a metered record's own figures (WorkItem.units, WorkItem.period), not attributes.
RECORD_KINDS = ("quantity", "month")


@dataclass(frozen=True)
class LineField:
    """One field a line's registration asks for: `kind` is departments (codes), choices (a subset) or flag for an
    attribute the line's rules read; quantity (a number > 0) or month (YYYY-MM) for a metered record's units and
    period, which are the item's own fields, not attributes."""

    name: str
    kind: str
    label: str
    help: str = ""
    choices: tuple[tuple[str, str], ...] = field(default_factory=tuple)
    required: bool = False

    @property
    def is_attribute(self) -> bool:
        return self.kind not in RECORD_KINDS


KNOWN_FIELDS: dict[str, LineField] = {
    "departments": LineField(
        "departments", "departments", "参与部门",
        "一件事涉及的全部部门（含牵头部门）；每个部门各做一份关联事项需求分析。", required=True),
    "parts": LineField(
        "parts", "choices", "亮证/用证", "制证必做；亮证、用证为可选部分，各有设计、联调、测试和上线。",
        choices=(("showing", "亮证"), ("using", "用证"))),
    "data_quality": LineField(
        "data_quality", "flag", "需要业务数据质量检测",
        "此类事项需要业务数据质量检测确认单（测试环节的交付物）。"),
}
# A metered line's record (calls, SMS, person-months… in a month): what POST /api/v1/items takes as units, period.
RECORD_FIELDS: tuple[LineField, ...] = (
    LineField("units", "quantity", "计量数量", "本期的计量数量（如接口调用次数、短信条数、人月数），大于 0，可含小数。",
              required=True),
    LineField("period", "month", "计量期间", "记录所属的月份（年-月），计入该月的工作量。", required=True),
)


def _gate_attributes(line: ServiceLine) -> list[str]:
    names: list[str] = []
    for rules in (line.gates or {}).values():
        for rule in rules:
            for key in ("attribute", "not_attribute"):
                wanted = (rule.get("when") or {}).get(key)
                for name in [wanted] if isinstance(wanted, str) else (wanted or []):
                    if name not in names:
                        names.append(name)
    return names


def is_metered(line: ServiceLine) -> bool:
    """Whether the line's work items are records of units in a period (the catalogue's `metered`)."""
    return bool(line.metered) or line.process_id in METERED_PROCESSES


def line_fields(line: ServiceLine) -> list[LineField]:
    """What registering on the line asks for beyond the common fields, in a stable order: a metered record's units
    and period first, then the attributes the line's process and gate rules read."""
    names = list(PROCESS_FIELDS.get(line.process_id, ()))
    names += [n for n in _gate_attributes(line) if n not in names]
    record = list(RECORD_FIELDS) if is_metered(line) else []
    return record + [KNOWN_FIELDS.get(n) or LineField(n, "flag", n) for n in names]


def check_attributes(session: Session, line: ServiceLine, department: str,
                     attributes: Mapping[str, Any]) -> dict[str, list[str]]:
    """Problems with the attributes the line reads (keyed `attributes.NAME`); other attributes pass as given."""
    errors: dict[str, list[str]] = {}
    for spec in line_fields(line):
        if not spec.is_attribute:
            continue
        value = attributes.get(spec.name)
        key = f"attributes.{spec.name}"
        if spec.kind == "departments":
            if value is None:  # the bulk import has no column for it; the model then runs the lead alone
                continue
            if not isinstance(value, list) or not value or not all(isinstance(v, str) and v for v in value):
                errors[key] = ["give the participating departments (codes)"]
                continue
            if len(set(value)) != len(value):
                errors[key] = ["a department is listed twice"]
                continue
            known = set(session.scalars(select(Department.code).where(Department.code.in_(value))))
            unknown = [v for v in value if v not in known]
            if unknown:
                errors[key] = [f"unknown department(s) {unknown}"]
            elif department not in value:
                errors[key] = ["the lead department must be one of the participating departments"]
        elif spec.kind == "choices":
            if value is None:
                continue
            allowed = {c for c, _ in spec.choices}
            if not isinstance(value, list) or any(v not in allowed for v in value) or len(set(value)) != len(value):
                errors[key] = [f"a subset of {sorted(allowed)}"]
        elif spec.kind == "flag" and value is not None and not isinstance(value, bool):
            errors[key] = ["true or false"]
    return errors

"""Administration use cases: departments and their lead reviewers, changes to users, notification channels,
catalogues (files loaded, uploads checked line by line and compared with the loaded version before they are
applied) and the facts the status page shows."""
from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date
from decimal import Decimal
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from engine.contract.catalog import CatalogError, CatalogErrors, load_catalog, parse_catalog, read_catalog_file
from engine.errors import Conflict, FormInvalid, NotFound
from engine.trust import accounts, audit
from engine.trust.access import authorize
from engine.trust.delivery import valid_target
from engine.trust.policy import needs_department
from engine.usecases.monthly_report import ensure_reports
from storage.models import AuditEvent, Contract, Department, NotificationChannel, User, utcnow

# ---------------------------------------------------------------- departments


def department_json(department: Department, lead: User | None = None) -> dict[str, Any]:
    return {"code": department.code, "name": department.name,
            "lead_reviewer": lead.username if lead is not None else None}


def _lead(session: Session, username: str | None, department: Department | None) -> User | None:
    if not username:
        return None
    user = session.execute(select(User).where(User.username == username)).scalar()
    if user is None or not user.active:
        raise FormInvalid({"lead_reviewer": [f"no active user {username!r}"]})
    if not needs_department(user.role) or (department is not None and department.id is not None
                                           and user.department_id != department.id):
        raise FormInvalid({"lead_reviewer": ["the lead reviewer must be a reviewer of this department"]})
    return user


CODE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


def create_department(session: Session, actor: audit.Actor, user: User, code: str, name: str) -> Department:
    authorize(user, "user.manage")
    code, name = code.strip(), name.strip()
    errors: dict[str, list[str]] = {}
    if not CODE.match(code):
        errors["code"] = ["letters, digits, - and _ only (1–64)"]
    if not name or len(name) > 200:
        errors["name"] = ["required, at most 200 characters"]
    if errors:
        raise FormInvalid(errors)
    if session.execute(select(Department.id).where(Department.code == code)).scalar() is not None:
        raise Conflict(f"department {code} exists already", code="department_exists")
    department = Department(code=code, name=name)
    session.add(department)
    session.flush()
    audit.record(session, actor, "department.created", target_type="department", target_id=department.id,
                 code=code, name=name)
    return department


def change_department(session: Session, actor: audit.Actor, user: User, code: str, *, name: str | None = None,
                      lead_reviewer: str | None = None, lead_given: bool = False) -> Department:
    authorize(user, "user.manage")
    department = session.execute(select(Department).where(Department.code == code)).scalar()
    if department is None:
        raise NotFound(f"department {code} not found")
    changes: dict[str, Any] = {}
    if name is not None:
        name = name.strip()
        if not name or len(name) > 200:
            raise FormInvalid({"name": ["required, at most 200 characters"]})
        if name != department.name:
            changes["name"] = [department.name, name]
            department.name = name
    if lead_given:
        lead = _lead(session, lead_reviewer, department)
        new_id = lead.id if lead else None
        if new_id != department.lead_reviewer_id:
            changes["lead_reviewer"] = lead.username if lead else None
            department.lead_reviewer_id = new_id
    session.flush()
    audit.record(session, actor, "department.changed", target_type="department", target_id=department.id,
                 code=department.code, changes=changes)
    return department


# ---------------------------------------------------------------- users


def change_user_by_name(session: Session, actor: audit.Actor, username: str, changes: Mapping[str, Any],
                        password_hash: str | None) -> accounts.UserChanged:
    """An administrator's change to a user (REST, web and CLI): `changes` as the user patch gives them (active,
    role, department; a missing key leaves it, a department of None clears it), `password_hash` the new
    password's hash or None. The caller has authorised it and commits."""
    user = session.execute(select(User).where(User.username == username)).scalar()
    if user is None:
        raise NotFound(f"no user {username!r}", code="unknown_user")
    change = accounts.UserChange(active=changes.get("active"), role=changes.get("role"), password_hash=password_hash)
    if "department" in changes:
        change.department_given = True
        code = changes["department"]
        change.department_code = code
        change.department_id = accounts.ensure_department(session, code).id if code else None
    return accounts.change_user(session, actor, user, change)


# ---------------------------------------------------------------- notification channels

def channels_of(session: Session, owner_type: str, owner_id: int) -> dict[str, dict[str, Any]]:
    rows = session.scalars(select(NotificationChannel).where(NotificationChannel.owner_type == owner_type,
                                                             NotificationChannel.owner_id == owner_id))
    return {row.kind: {"target": row.target, "enabled": row.enabled} for row in rows}


def set_channels(session: Session, actor: audit.Actor, owner_type: str, owner_id: int,
                 wanted: dict[str, dict[str, Any] | None]) -> dict[str, dict[str, Any]]:
    """Set a user's or a department's channels: kind → {target, enabled}, or None / an empty target to remove
    it. Every target is checked first (an e-mail address, or a webhook URL Apprise can send to)."""
    errors: dict[str, list[str]] = {}
    for kind, value in wanted.items():
        if kind not in ("email", "webhook"):
            errors[kind] = ["unknown channel; use email or webhook"]
        elif value and (value.get("target") or "").strip() and not valid_target(kind, value["target"]):
            errors[kind] = ["not a usable e-mail address" if kind == "email" else
                            "not a webhook URL ItemGate can send to (e.g. wecombot://KEY, dingtalk://TOKEN, "
                            "the robot's https webhook URL)"]
    if errors:
        raise FormInvalid(errors)
    existing = {row.kind: row for row in session.scalars(select(NotificationChannel).where(
        NotificationChannel.owner_type == owner_type, NotificationChannel.owner_id == owner_id))}
    for kind, value in wanted.items():
        target = ((value or {}).get("target") or "").strip()
        row = existing.get(kind)
        if not target:
            if row is not None:
                session.delete(row)
            continue
        if row is None:
            row = NotificationChannel(owner_type=owner_type, owner_id=owner_id, kind=kind, target=target)
            session.add(row)
        row.target = target
        row.enabled = bool((value or {}).get("enabled", True))
        row.updated_at = utcnow()
    session.flush()
    # The targets hold robot keys: the audit says what changed, not the secret.
    audit.record(session, actor, "notification.channels_set", target_type=owner_type, target_id=owner_id,
                 kinds={k: bool(v and (v.get("target") or "").strip()) for k, v in wanted.items()})
    return channels_of(session, owner_type, owner_id)


# ---------------------------------------------------------------- catalogues

@dataclass
class CatalogProblem:
    line: int | None
    message: str


@dataclass
class CatalogCheck:
    """An uploaded catalogue: its problems (each with its line), or what applying it would change."""

    filename: str
    sha256: str | None = None
    code: str | None = None
    problems: list[CatalogProblem] = field(default_factory=list)
    diff: dict[str, Any] | None = None
    parsed: dict[str, Any] | None = None
    # What loads but deserves the admin's eye (an old setting name read under its new one).
    warnings: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def as_dict(self) -> dict[str, Any]:
        return {"filename": self.filename, "sha256": self.sha256, "contract": self.code, "ok": self.ok,
                "problems": [{"line": p.line, "message": p.message} for p in self.problems], "diff": self.diff}


_AT_LINE = re.compile(r"at line (\d+)")
_ENTRY = re.compile(r"service_lines\[(\d+)\]")


def _line_of(text: str, message: str) -> int | None:
    """The line of the file a problem is about: TOML syntax errors say it; a service line's problem is found at
    its [[service_lines]] header, or at the key it names within that entry."""
    found = _AT_LINE.search(message)
    if found:
        return int(found.group(1))
    lines = text.splitlines()
    start, stop = 0, len(lines)
    entry = _ENTRY.search(message)
    if entry:
        headers = [i for i, line in enumerate(lines) if line.strip() == "[[service_lines]]"]
        index = int(entry.group(1))
        if index >= len(headers):
            return None
        start = headers[index]
        stop = headers[index + 1] if index + 1 < len(headers) else len(lines)
    elif "[contract]" in message:
        start = next((i for i, line in enumerate(lines) if line.strip() == "[contract]"), 0)
    elif "gate_sets." in message:
        name = message.split("gate_sets.", 1)[1].split(".")[0].split(" ")[0]
        start = next((i for i, line in enumerate(lines) if line.strip().startswith(f"[gate_sets.{name}")), 0)
    else:
        return None
    tail = message.split(": ", 2)[-1]
    key_match = re.match(r"([a-z_]+)", tail)
    keys = [key_match.group(1)] if key_match else []
    mentioned = re.findall(r"\b(unit_prices|estimated_volumes|gates|channels|targets|units_per_item|process|"
                           r"gate_set|award_amount|period_end|period_start)\b", message)
    keys += mentioned
    for key in keys:
        for i in range(start, stop):
            stripped = lines[i].strip()
            if stripped.startswith(f"{key} ") or stripped.startswith(f"{key}=") or \
                    stripped.startswith(f"[service_lines.{key}") or stripped.startswith(f"[contract.{key}"):
                return i + 1
    return start + 1


def _plain(value: Any) -> Any:
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, date):
        return value.isoformat()
    return value


LINE_FIELDS = ("name", "unit", "process_id", "channels", "unit_prices", "estimated_volumes", "gates", "targets",
               "units_per_item")
CONTRACT_FIELDS = ("name", "buyer", "supplier", "period_start", "period_end", "award_amount", "settings")


def catalog_diff(session: Session, parsed: dict[str, Any]) -> dict[str, Any]:
    """What loading `parsed` would change against the contract as loaded now: contract fields, and per service
    line added, changed (field by field, old and new) or unchanged. Lines are never removed by a load."""
    c = parsed["contract"]
    contract = session.execute(select(Contract).where(Contract.code == c["code"])).scalar()
    if contract is None:
        return {"new_contract": True, "same_file": False, "contract": {},
                "lines": [{"code": line["code"], "name": line["name"], "change": "added", "fields": {}}
                          for line in parsed["service_lines"]], "kept": []}
    contract_changes: dict[str, Any] = {}
    for name in CONTRACT_FIELDS:
        old = _plain(getattr(contract, name))
        new = _plain(c[name])
        if name == "award_amount" and old is not None:
            old = str(Decimal(old).quantize(Decimal("0.01")))
        if old != new:
            contract_changes[name] = {"old": old, "new": new}
    existing = {sl.code: sl for sl in contract.service_lines}
    out = []
    for line in parsed["service_lines"]:
        row = existing.pop(line["code"], None)
        if row is None:
            out.append({"code": line["code"], "name": line["name"], "change": "added", "fields": {}})
            continue
        changed = {}
        for name in LINE_FIELDS:
            old = _plain(getattr(row, name))
            new = line[name]
            if name == "units_per_item":
                old = str(Decimal(old).quantize(Decimal("0.01")))
            if old != new:
                changed[name] = {"old": old, "new": new}
        out.append({"code": line["code"], "name": line["name"], "change": "changed" if changed else "unchanged",
                    "fields": changed})
    return {"new_contract": False, "same_file": contract.source_sha256 == parsed["sha256"],
            "contract": contract_changes, "lines": out,
            # Lines of the loaded version the file no longer lists stay (items and the ledger refer to them).
            "kept": sorted(existing)}


def check_catalog(session: Session, user: User, text: str, filename: str) -> CatalogCheck:
    """Validate an uploaded catalogue and compare it with the loaded version; nothing is written."""
    authorize(user, "catalog.manage")
    check = CatalogCheck(filename=filename)
    try:
        parsed = parse_catalog(text, filename)
    except CatalogErrors as exc:
        check.problems = [CatalogProblem(_line_of(text, str(p)), str(p)) for p in exc.problems]
        return check
    except CatalogError as exc:
        check.problems = [CatalogProblem(_line_of(text, str(exc)), str(exc))]
        return check
    check.parsed = parsed
    check.warnings = list(parsed.get("warnings") or [])
    check.sha256 = parsed["sha256"]
    check.code = parsed["contract"]["code"]
    check.diff = catalog_diff(session, parsed)
    return check


def load_contract(session: Session, parsed: dict[str, Any]) -> tuple[Contract, bool]:
    """Load or update a checked catalogue's contract; a changed contract gets one monthly operations report per
    month of its service period when it asks for them. Returns (contract, changed)."""
    for warning in parsed.get("warnings") or []:
        logging.getLogger(__name__).warning("catalogue: %s", warning)
    contract, changed = load_catalog(session, parsed)
    if changed:
        ensure_reports(session, contract)
    return contract, changed


def load_catalog_file(session: Session, path: str | Path) -> tuple[Contract, bool]:
    """Load or update a contract from a catalogue file (CLI, demo, tests). Returns (contract, changed)."""
    return load_contract(session, read_catalog_file(path))


def apply_catalog(session: Session, actor: audit.Actor, user: User, text: str, filename: str,
                  expected_sha256: str | None = None) -> tuple[CatalogCheck, bool]:
    """Load a checked catalogue. `expected_sha256`, when given, must be the file that was previewed."""
    check = check_catalog(session, user, text, filename)
    if not check.ok or check.parsed is None:
        raise FormInvalid({"file": [p.message for p in check.problems]}, "the catalogue has errors")
    if expected_sha256 and expected_sha256 != check.sha256:
        raise Conflict("the file differs from the one previewed; check it again", code="catalog_changed")
    contract, changed = load_contract(session, check.parsed)
    if changed:
        audit.record(session, actor, "catalog.loaded", target_type="contract", target_id=contract.id,
                     code=contract.code, file=filename, sha256=check.sha256,
                     lines=[line["code"] for line in (check.diff or {}).get("lines", [])
                            if line["change"] != "unchanged"])
    return check, changed


# ---------------------------------------------------------------- status facts

def last_event(session: Session, *event_types: str) -> AuditEvent | None:
    return session.scalars(select(AuditEvent).where(AuditEvent.event_type.in_(event_types))
                           .order_by(AuditEvent.id.desc()).limit(1)).first()

"""Contract catalogues: the file format, its validation, and which artefacts each gate requires."""
from __future__ import annotations

import hashlib
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from engine.workkinds import work_kind_ids
from storage.models import CHANNELS, MODES, Contract, ServiceLine

# Stable artefact kind codes (API.md) with the titles people see.
ARTEFACT_KINDS: dict[str, str] = {
    "requirement_letter": "需求函",
    "change_letter": "变更函",
    "complexity_statement": "复杂度说明",
    "survey_form": "调研表",
    "sorting_list": "事项梳理清单",
    "functional_design": "功能设计文档",
    "business_plan": "业务方案",
    "technical_plan": "技术实施方案",
    "test_report": "功能和性能测试报告",
    "third_party_test_report": "第三方测试报告",
    "security_test_report": "安全测试报告",
    "data_quality_confirmation": "业务数据质量检测确认单",
    "walkthrough_confirmation": "走查确认单",
    "go_live_record": "上线记录或截图",
    "go_live_confirmation": "联调与上线确认单",
    "plain_go_live_confirmation": "上线确认单",
    "template_check_confirmation": "模板校核确认",
    "licence_parameters": "证照参数表",
    "licence_records": "电子证照库记录",
    "licence_interface_spec": "证照接口说明",
    "licence_list": "电子证照接入清单",
    "issuing_test_report": "制证测试报告",
    "showing_test_report": "亮证测试报告",
    "using_test_report": "用证测试报告",
    "issuing_go_live_record": "制证上线记录",
    "showing_go_live_record": "亮证上线记录",
    "using_go_live_record": "用证上线记录",
    "item_analysis": "关联事项需求分析",
    "current_state_survey": "办理现状调研分析",
    "guide_item_list": "导办事项清单",
    "guide_design": "场景导办设计稿",
    "review_points": "审核要点及样例",
    "configuration_plan": "配置方案",
}

WHEN_KEYS = {"mode", "channel", "attribute", "not_attribute"}


class CatalogError(ValueError):
    """A catalogue file is malformed or inconsistent; the message names file, entry and problem."""


@dataclass(frozen=True)
class Requirement:
    kind: str
    when: Mapping[str, Any] = field(default_factory=dict)

    def applies(self, mode: str, channels: list[str], attributes: Mapping[str, Any]) -> bool:
        for key, expected in self.when.items():
            wanted = expected if isinstance(expected, list) else [expected]
            if key == "mode" and mode not in wanted:
                return False
            if key == "channel" and not set(channels) & set(wanted):
                return False
            if key == "attribute" and not all(attributes.get(a) for a in wanted):
                return False
            if key == "not_attribute" and any(attributes.get(a) for a in wanted):
                return False
        return True


def required_kinds(gates: Mapping[str, Any], gate: str | None, *, mode: str, channels: list[str],
                   attributes: Mapping[str, Any]) -> list[str]:
    """The artefact kinds a gate needs for one item, in catalogue order, without repeats."""
    if not gate:
        return []
    kinds: list[str] = []
    for rule in gates.get(gate, []):
        req = Requirement(rule["kind"], rule.get("when") or {})
        if req.applies(mode, channels, attributes) and req.kind not in kinds:
            kinds.append(req.kind)
    return kinds


def _money(value: Any, where: str) -> str:
    try:
        amount = Decimal(str(value))
    except InvalidOperation as exc:
        raise CatalogError(f"{where}: {value!r} is not a number") from exc
    if amount < 0:
        raise CatalogError(f"{where}: must not be negative")
    return str(amount.quantize(Decimal("0.01")))


def _rules(raw: Any, where: str) -> list[dict[str, Any]]:
    if not isinstance(raw, list):
        raise CatalogError(f"{where}: must be a list of {{kind, when}} tables")
    out = []
    for i, rule in enumerate(raw):
        spot = f"{where}[{i}]"
        if isinstance(rule, str):
            rule = {"kind": rule}
        if not isinstance(rule, dict) or "kind" not in rule:
            raise CatalogError(f"{spot}: needs a 'kind'")
        if rule["kind"] not in ARTEFACT_KINDS:
            raise CatalogError(f"{spot}: unknown artefact kind {rule['kind']!r}")
        when = rule.get("when") or {}
        if not isinstance(when, dict):
            raise CatalogError(f"{spot}: 'when' must be a table")
        unknown = set(when) - WHEN_KEYS
        if unknown:
            raise CatalogError(f"{spot}: unknown condition {sorted(unknown)} (allowed: {sorted(WHEN_KEYS)})")
        for value in _as_list(when.get("mode")):
            if value not in MODES:
                raise CatalogError(f"{spot}: mode {value!r} is not one of {list(MODES)}")
        for value in _as_list(when.get("channel")):
            if value not in CHANNELS:
                raise CatalogError(f"{spot}: channel {value!r} is not one of {list(CHANNELS)}")
        for key in ("attribute", "not_attribute"):
            for value in _as_list(when.get(key)):
                if not isinstance(value, str) or not value:
                    raise CatalogError(f"{spot}: {key} must name item attributes, not {value!r}")
        out.append({"kind": rule["kind"], "when": when})
    return out


def _as_list(value: Any) -> list[Any]:
    if value is None:
        return []
    return value if isinstance(value, list) else [value]


LINE_KEYS = {"code", "name", "unit", "process", "gate_set", "gates", "channels", "unit_prices",
             "estimated_volumes", "targets", "units_per_item"}
CONTRACT_KEYS = {"code", "name", "buyer", "supplier", "period_start", "period_end", "award_amount", "pricing",
                 "settings"}
PRICING = ("unit_price", "fixed_price")
TARGET_BOUNDS = {"min", "max"}


def _targets(raw: Any, where: str) -> dict[str, dict[str, int]]:
    """Countable targets, e.g. scenario_guides = { min = 50 }: a name and whole-number bounds."""
    if not isinstance(raw, dict):
        raise CatalogError(f"{where}: targets must be a table like {{ scenario_guides = {{ min = 50 }} }}")
    out: dict[str, dict[str, int]] = {}
    for name, bounds in raw.items():
        spot = f"{where}: targets.{name}"
        if not isinstance(bounds, dict) or not bounds or set(bounds) - TARGET_BOUNDS:
            raise CatalogError(f"{spot}: must be a table with min and/or max")
        for key, value in bounds.items():
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise CatalogError(f"{spot}.{key}: must be a whole number ≥ 0, not {value!r}")
        if "min" in bounds and "max" in bounds and bounds["min"] > bounds["max"]:
            raise CatalogError(f"{spot}: min is greater than max")
        out[str(name)] = dict(bounds)
    return out


def _settings(raw: Any, source: str) -> dict[str, Any]:
    if not isinstance(raw, dict):
        raise CatalogError(f"{source}: [contract.settings] must be a table")
    due = raw.get("due_days", {})
    if not isinstance(due, dict):
        raise CatalogError(f"{source}: [contract.settings] due_days must be a table task = working days")
    for task, days in due.items():
        if isinstance(days, bool) or not isinstance(days, int) or days <= 0:
            raise CatalogError(f"{source}: [contract.settings] due_days.{task}: must be a whole number > 0")
    from engine.schedule import validate_schedule

    try:
        validate_schedule(raw.get("settlement_schedule"))
    except Exception as exc:  # engine.errors.Invalid: a catalogue error names the file
        raise CatalogError(f"{source}: [contract.settings] {exc}") from exc
    return dict(raw)


def _model_gates(process_id: str) -> set[str]:
    """Gate codes the shipped model of a process uses (a deployed version is checked when deployed)."""
    import bpmn
    from engine.modelcheck import model_gate_codes

    try:
        return model_gate_codes(bpmn.read_model(process_id), process_id, f"{process_id}.bpmn")
    except OSError:
        return set()


def parse_catalog(text: str, source: str) -> dict[str, Any]:
    """Parse and validate a catalogue (TOML); returns a normalised dict or raises CatalogError."""
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise CatalogError(f"{source}: not valid TOML: {exc}") from exc
    contract = raw.get("contract")
    if not isinstance(contract, dict):
        raise CatalogError(f"{source}: missing [contract] table")
    for key in ("code", "name"):
        if not contract.get(key):
            raise CatalogError(f"{source}: [contract] needs '{key}'")
    for key in ("period_start", "period_end"):
        if key in contract and not isinstance(contract[key], date):
            raise CatalogError(f"{source}: [contract] {key} must be a date like 2025-01-01")
    unknown_keys = set(contract) - CONTRACT_KEYS
    if unknown_keys:
        raise CatalogError(f"{source}: [contract] unknown keys {sorted(unknown_keys)}")
    if (isinstance(contract.get("period_start"), date) and isinstance(contract.get("period_end"), date)
            and contract["period_end"] < contract["period_start"]):
        raise CatalogError(f"{source}: [contract] period_end is before period_start")
    pricing = contract.get("pricing", "unit_price")
    if pricing not in PRICING:
        raise CatalogError(f"{source}: [contract] pricing must be one of {list(PRICING)}, not {pricing!r}")
    settings = _settings(contract.get("settings") or {}, source)
    settings["pricing"] = pricing
    gate_sets_raw = raw.get("gate_sets", {})
    gate_sets: dict[str, dict[str, Any]] = {}
    if not isinstance(gate_sets_raw, dict):
        raise CatalogError(f"{source}: gate_sets must be tables [gate_sets.NAME]")
    for set_name, set_gates in gate_sets_raw.items():
        if not isinstance(set_gates, dict):
            raise CatalogError(f"{source}: gate_sets.{set_name} must be a table gate = [rules]")
        gate_sets[set_name] = {g: _rules(r, f"{source}: gate_sets.{set_name}.{g}") for g, r in set_gates.items()}
    lines_raw = raw.get("service_lines")
    if not isinstance(lines_raw, list) or not lines_raw:
        raise CatalogError(f"{source}: needs at least one [[service_lines]] entry")
    seen: set[str] = set()
    lines = []
    for index, line in enumerate(lines_raw):
        if not isinstance(line, dict):
            raise CatalogError(f"{source}: service_lines[{index}]: must be a table")
        code = str(line.get("code", "")).strip()
        where = f"{source}: service_lines[{index}]" + (f" (code {code!r})" if code else "")
        if not code:
            raise CatalogError(f"{where}: needs a 'code'")
        unknown_keys = set(line) - LINE_KEYS
        if unknown_keys:
            raise CatalogError(f"{where}: unknown keys {sorted(unknown_keys)}")
        if code in seen:
            raise CatalogError(f"{where}: duplicate service line code")
        seen.add(code)
        for key in ("name", "unit", "process"):
            if not line.get(key):
                raise CatalogError(f"{where}: needs '{key}'")
        if line["process"] not in work_kind_ids():
            raise CatalogError(f"{where}: unknown process {line['process']!r} (known: {list(work_kind_ids())})")
        channels = line.get("channels") or []
        if not channels or any(c not in CHANNELS for c in channels):
            raise CatalogError(f"{where}: channels must be a non-empty subset of {list(CHANNELS)}")
        prices = line.get("unit_prices") or {}
        if not isinstance(prices, dict):
            raise CatalogError(f"{where}: unit_prices must be a table channel = price")
        for ch in channels:
            if ch not in prices:
                raise CatalogError(f"{where}: unit_prices lacks channel {ch!r}")
        extra = set(prices) - set(channels)
        if extra:
            raise CatalogError(f"{where}: unit_prices names channels not offered: {sorted(extra)}")
        gates: dict[str, Any] = {}
        if line.get("gate_set"):
            if line["gate_set"] not in gate_sets:
                raise CatalogError(f"{where}: unknown gate_set {line['gate_set']!r}")
            gates.update(gate_sets[line["gate_set"]])
        for gate, rules in (line.get("gates") or {}).items():
            gates[gate] = _rules(rules, f"{where}: gates.{gate}")
        missing = sorted(_model_gates(line["process"]) - set(gates))
        if missing:
            raise CatalogError(f"{where}: process {line['process']!r} has gates {missing} with no rules here "
                               f"(declare each, as an empty list when nothing is required)")
        volumes_raw = line.get("estimated_volumes") or {}
        if not isinstance(volumes_raw, dict):
            raise CatalogError(f"{where}: estimated_volumes must be a table channel = count")
        volumes = {}
        for ch, v in volumes_raw.items():
            if ch not in channels:
                raise CatalogError(f"{where}: estimated_volumes names channel {ch!r} that is not offered")
            if isinstance(v, bool) or not isinstance(v, int) or v < 0:
                raise CatalogError(f"{where}: estimated_volumes.{ch} must be a whole number ≥ 0")
            volumes[ch] = v
        lines.append({
            "code": code, "name": line["name"], "unit": line["unit"], "process_id": line["process"],
            "channels": list(channels),
            "unit_prices": {ch: _money(prices[ch], f"{where}: unit_prices.{ch}") for ch in channels},
            "estimated_volumes": volumes, "gates": gates,
            "targets": _targets(line.get("targets") or {}, where),
            "units_per_item": _money(line.get("units_per_item", 1), f"{where}: units_per_item"),
        })
    award = contract.get("award_amount")
    return {
        "contract": {
            "code": str(contract["code"]), "name": contract["name"], "buyer": contract.get("buyer"),
            "supplier": contract.get("supplier"), "period_start": contract.get("period_start"),
            "period_end": contract.get("period_end"),
            "award_amount": None if award is None else _money(award, f"{source}: [contract] award_amount"),
            "settings": settings,
        },
        "service_lines": lines,
        "sha256": hashlib.sha256(text.encode()).hexdigest(),
    }


def load_catalog_file(session: Session, path: str | Path) -> tuple[Contract, bool]:
    """Load or update a contract from a file, by contract code. Returns (contract, changed)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise CatalogError(f"{path}: cannot read: {exc}") from exc
    return load_catalog(session, parse_catalog(text, str(path)))


def load_catalog(session: Session, parsed: dict[str, Any]) -> tuple[Contract, bool]:
    c = parsed["contract"]
    contract = session.execute(select(Contract).where(Contract.code == c["code"])).scalar_one_or_none()
    if contract is not None and contract.source_sha256 == parsed["sha256"]:
        return contract, False
    if contract is None:
        contract = Contract(code=c["code"])
        session.add(contract)
    contract.name = c["name"]
    contract.buyer = c["buyer"]
    contract.supplier = c["supplier"]
    contract.period_start = c["period_start"]
    contract.period_end = c["period_end"]
    contract.award_amount = None if c["award_amount"] is None else Decimal(c["award_amount"])
    contract.settings = c["settings"]
    contract.source_sha256 = parsed["sha256"]
    session.flush()
    existing = {sl.code: sl for sl in contract.service_lines}
    for position, data in enumerate(parsed["service_lines"]):
        line = existing.get(data["code"])
        if line is None:
            # Lines are never deleted: work items and ledger entries refer to them.
            line = ServiceLine(contract_id=contract.id, code=data["code"])
            contract.service_lines.append(line)
        line.position = position
        line.name = data["name"]
        line.unit = data["unit"]
        line.process_id = data["process_id"]
        line.channels = data["channels"]
        line.unit_prices = data["unit_prices"]
        line.estimated_volumes = data["estimated_volumes"]
        line.gates = data["gates"]
        line.targets = data["targets"]
        line.units_per_item = Decimal(data["units_per_item"])
    session.flush()
    # One monthly operations report per month of the service period, when the contract asks for them.
    from engine.monthly_report import ensure_reports

    ensure_reports(session, contract)
    return contract, True

"""Contract catalogues: the file format, its validation, and which artefacts each gate requires."""
from __future__ import annotations

import hashlib
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from engine.errors import NotFound
from engine.runtime.workkinds import line_kind_ids
from storage.models import CHANNELS, MODES, Contract, ServiceLine, WorkItem

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

# English titles of the built-in kinds (the web's English view); a catalogue's own kinds bring theirs.
ARTEFACT_KINDS.update({
    "record_statistics": "使用量统计（调用量明细或日志）",
    "work_statement": "工作量说明",
    "rota": "排班表",
    "attendance": "考勤表",
    "work_outputs": "实际产出结果物",
    "workload_detail": "工作量统计明细表",
    "assessment_report": "测评报告",
    "rectification_evidence": "安全问题整改及验证材料",
    "sms_bill": "短信账单",
    "sms_billing_note": "短信计费说明",
    "operations_report": "运营服务情况总结报告",
    "deliverable_document": "交付成果",
})

# Processes whose work item is a record of units in a period (calls, SMS, person-months, assessments, audits),
# and those whose item is a contract-level deliverable (a training, a named output, a monthly report).
METERED_PROCESSES = ("metered_record",)
DELIVERABLE_PROCESSES = ("deliverable",)
WHEN_KEYS = {"mode", "channel", "attribute", "not_attribute"}
ALL_CHANNELS = "all"  # the price key of a line priced without channels
KIND_CODE = re.compile(r"[a-z][a-z0-9_]{1,63}", re.ASCII)


class CatalogError(ValueError):
    """A catalogue file is malformed or inconsistent; the message names file, entry and problem."""


class CatalogErrors(CatalogError):
    """Several service lines of one file are wrong: every problem, in file order."""

    def __init__(self, problems: list[CatalogError]):
        self.problems = problems
        more = f" (and {len(problems) - 1} more problem(s))" if len(problems) > 1 else ""
        super().__init__(f"{problems[0]}{more}")


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


def item_kinds(item: WorkItem, gate: str | None, *, optional: bool = False) -> list[str]:
    """`required_kinds` of the item's own line for one of its gates; none for a contract-level item (a monthly
    report keeps its files on the report, and has no line)."""
    if item.service_line_id is None:
        return []
    return required_kinds(item.service_line.gates, gate, mode=item.mode, channels=list(item.channels),
                          attributes=item.attributes or {}, optional=optional)


def required_kinds(gates: Mapping[str, Any], gate: str | None, *, mode: str, channels: list[str],
                   attributes: Mapping[str, Any], optional: bool = False) -> list[str]:
    """The artefact kinds a gate needs for one item, in catalogue order, without repeats. `optional`: the
    working documents the step may take but does not require (rules marked optional = true) instead."""
    if not gate:
        return []
    kinds: list[str] = []
    for rule in gates.get(gate, []):
        if bool(rule.get("optional")) != optional:
            continue
        req = Requirement(rule["kind"], rule.get("when") or {})
        if req.applies(mode, channels, attributes) and req.kind not in kinds:
            kinds.append(req.kind)
    return kinds


def _decimal(value: Any, where: str) -> Decimal:
    if isinstance(value, bool):
        raise CatalogError(f"{where}: {value!r} is not a number")
    try:
        amount = Decimal(str(value))
    except InvalidOperation as exc:
        raise CatalogError(f"{where}: {value!r} is not a number") from exc
    if not amount.is_finite():
        raise CatalogError(f"{where}: {value!r} is not a number")
    if amount < 0:
        raise CatalogError(f"{where}: must not be negative")
    return amount


def _money(value: Any, where: str) -> str:
    return str(_decimal(value, where).quantize(Decimal("0.01")))


def _price(value: Any, where: str) -> str:
    """A unit price as the contract writes it: at least to the fen, and to the tenth of a fen and beyond
    where it says so (0.004 元 per call stays 0.004; amounts round only at the totals)."""
    amount = _decimal(value, where)
    exponent = amount.as_tuple().exponent
    if isinstance(exponent, int) and exponent < -6:
        raise CatalogError(f"{where}: more than 6 decimal places")
    return str(amount if isinstance(exponent, int) and exponent < -2 else amount.quantize(Decimal("0.01")))


def _rules(raw: Any, where: str, kinds: Mapping[str, Any] | None = None) -> list[dict[str, Any]]:
    known = ARTEFACT_KINDS if kinds is None else kinds
    if not isinstance(raw, list):
        raise CatalogError(f"{where}: must be a list of {{kind, when}} tables")
    out = []
    for i, rule in enumerate(raw):
        spot = f"{where}[{i}]"
        if isinstance(rule, str):
            rule = {"kind": rule}
        if not isinstance(rule, dict) or "kind" not in rule:
            raise CatalogError(f"{spot}: needs a 'kind'")
        if rule["kind"] not in known:
            raise CatalogError(f"{spot}: unknown artefact kind {rule['kind']!r} (declare it under "
                               "[artefact_kinds] or use a built-in one)")
        unknown_keys = set(rule) - {"kind", "when", "optional"}
        if unknown_keys:
            raise CatalogError(f"{spot}: unknown keys {sorted(unknown_keys)}")
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
        optional = rule.get("optional", False)
        if not isinstance(optional, bool):
            raise CatalogError(f"{spot}: optional must be true or false")
        entry: dict[str, Any] = {"kind": rule["kind"], "when": when}
        if optional:
            entry["optional"] = True
        out.append(entry)
    return out


def _as_list(value: Any) -> list[Any]:
    if value is None:
        return []
    return value if isinstance(value, list) else [value]


LINE_KEYS = {"code", "name", "unit", "process", "gate_set", "gates", "channels", "unit_prices",
             "estimated_volumes", "targets", "units_per_item", "metered", "difficulty_levels", "price_note"}
CONTRACT_KEYS = {"code", "name", "buyer", "supplier", "period_start", "period_end", "award_amount", "pricing",
                 "settings", "out_of_period", "price_basis"}
TOP_KEYS = {"contract", "gate_sets", "service_lines", "artefact_kinds", "difficulty_levels"}
PRICING = ("unit_price", "fixed_price")
OUT_OF_PERIOD = ("flag", "refuse")
# The settlement's old name for the same rule (issue 17, before #16's one setting); read as out_of_period.
LEGACY_OUT_OF_PERIOD = "outside_service_period"


def out_of_period_mode(settings: Mapping[str, Any] | None) -> str:
    """The contract's one rule for work outside its service period, read by registration and settlement:
    "flag" (default) or "refuse". A contract stored before the rename may carry only the old settings key."""
    settings = settings or {}
    mode = settings.get("out_of_period", settings.get(LEGACY_OUT_OF_PERIOD, "flag"))
    return mode if mode in OUT_OF_PERIOD else "flag"
TARGET_BOUNDS = {"min", "max", "start", "end"}


def _targets(raw: Any, where: str) -> dict[str, dict[str, Any]]:
    """Countable targets of a line: `items = 50` (at least 50) or `name = { min = 50, max = 80, start = DATE,
    end = DATE }`; the period defaults to the contract's."""
    if not isinstance(raw, dict):
        raise CatalogError(f"{where}: targets must be a table like {{ items = 50 }} or "
                           "{ scenario_guides = { min = 50 } }")
    out: dict[str, dict[str, Any]] = {}
    for name, bounds in raw.items():
        spot = f"{where}: targets.{name}"
        if isinstance(bounds, int) and not isinstance(bounds, bool):
            bounds = {"min": bounds}
        if not isinstance(bounds, dict) or not ({"min", "max"} & set(bounds)) or set(bounds) - TARGET_BOUNDS:
            raise CatalogError(f"{spot}: must be a whole number or a table with min and/or max (and start/end)")
        target: dict[str, Any] = {}
        for key, value in bounds.items():
            if key in ("start", "end"):
                if not isinstance(value, date):
                    raise CatalogError(f"{spot}.{key}: must be a date like 2026-12-31")
                target[key] = value.isoformat()
                continue
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise CatalogError(f"{spot}.{key}: must be a whole number ≥ 0, not {value!r}")
            target[key] = value
        if "min" in target and "max" in target and target["min"] > target["max"]:
            raise CatalogError(f"{spot}: min is greater than max")
        if "start" in target and "end" in target and target["end"] < target["start"]:
            raise CatalogError(f"{spot}: end is before start")
        out[str(name)] = target
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
    from engine.contract.schedule import validate_schedule

    try:
        validate_schedule(raw.get("settlement_schedule"))
    except Exception as exc:  # engine.errors.Invalid: a catalogue error names the file
        raise CatalogError(f"{source}: [contract.settings] {exc}") from exc
    return dict(raw)


def _artefact_kinds(raw: Any, source: str) -> dict[str, dict[str, str]]:
    """`[artefact_kinds]` code = { title = "中文名", title_en = "English name" }: kinds beyond the built-in ones."""
    if not isinstance(raw, dict):
        raise CatalogError(f"{source}: [artefact_kinds] must be a table code = {{ title, title_en }}")
    out: dict[str, dict[str, str]] = {}
    for code, spec in raw.items():
        spot = f"{source}: artefact_kinds.{code}"
        if not KIND_CODE.fullmatch(code):
            raise CatalogError(f"{spot}: a kind code is lower-case letters, digits and _ (2–64 characters)")
        if isinstance(spec, str):
            spec = {"title": spec}
        if not isinstance(spec, dict) or not isinstance(spec.get("title"), str) or not spec["title"].strip():
            raise CatalogError(f"{spot}: needs a title")
        extra = set(spec) - {"title", "title_en"}
        if extra:
            raise CatalogError(f"{spot}: unknown keys {sorted(extra)}")
        title_en = spec.get("title_en")
        if title_en is not None and not isinstance(title_en, str):
            raise CatalogError(f"{spot}: title_en must be text")
        if len(spec["title"]) > 100 or len(title_en or "") > 200:
            raise CatalogError(f"{spot}: title too long")
        out[code] = {"title": spec["title"].strip(), "title_en": (title_en or "").strip() or code}
    return out


def _difficulty_levels(raw: Any, where: str) -> list[dict[str, str]]:
    """Allowed difficulty coefficients with their meaning: [{ value = 1.2, meaning = "..." }, ...]."""
    if not isinstance(raw, list) or not raw:
        raise CatalogError(f"{where}: difficulty_levels must be a non-empty list of {{ value, meaning }}")
    out = []
    for i, level in enumerate(raw):
        spot = f"{where}: difficulty_levels[{i}]"
        if not isinstance(level, dict) or "value" not in level:
            raise CatalogError(f"{spot}: needs a value")
        value = _decimal(level["value"], f"{spot}.value")
        if not Decimal("0.1") <= value <= Decimal("5"):
            raise CatalogError(f"{spot}.value: must be between 0.1 and 5")
        meaning = level.get("meaning", "")
        if not isinstance(meaning, str):
            raise CatalogError(f"{spot}.meaning: must be text")
        out.append({"value": str(value.quantize(Decimal("0.01"))), "meaning": meaning})
    if len({lv["value"] for lv in out}) != len(out):
        raise CatalogError(f"{where}: difficulty_levels repeats a value")
    return out


def _unit(raw: Any, where: str) -> tuple[str, str]:
    """(code, name) of a line's unit: `unit = "项"` or `unit = { code = "call", name = "次接口调用量" }`."""
    if isinstance(raw, str) and raw.strip():
        return raw.strip()[:32], raw.strip()[:32]
    if isinstance(raw, dict) and isinstance(raw.get("code"), str) and isinstance(raw.get("name"), str) \
            and raw["code"].strip() and raw["name"].strip() and not set(raw) - {"code", "name"}:
        if len(raw["code"]) > 32 or len(raw["name"]) > 32:
            raise CatalogError(f"{where}: unit code and name are at most 32 characters")
        return raw["code"].strip(), raw["name"].strip()
    raise CatalogError(f"{where}: unit must be text or a table {{ code, name }}")


def _model_gates(process_id: str) -> set[str]:
    """Gate codes the shipped model of a process uses (a deployed version is checked when deployed)."""
    import bpmn
    from engine.runtime.modelcheck import model_gate_codes

    try:
        return model_gate_codes(bpmn.read_model(process_id), process_id, f"{process_id}.bpmn")
    except OSError:
        return set()


def _model_skips(process_id: str) -> dict[str, set[str]]:
    """Gates of the shipped model whose step is taken only for some modes: gate → the modes that reach it."""
    import bpmn
    from engine.runtime.modelcheck import mode_guarded_gates

    try:
        return mode_guarded_gates(bpmn.read_model(process_id), process_id, f"{process_id}.bpmn")
    except OSError:
        return {}


def check_reachable(gates: Mapping[str, Any], model_gates: set[str], skips: Mapping[str, set[str]],
                    where: str) -> None:
    """Refuse rules that can never be met or are silently skipped: a gate with required kinds that no step
    of the process asks for, and a step taken only for some modes while the rules require its kinds for
    another mode."""
    for gate, rules in gates.items():
        required = [r for r in rules if not r.get("optional")]
        if required and gate not in model_gates:
            raise CatalogError(f"{where}: gate {gate!r} requires {[r['kind'] for r in required]} but no step of "
                               f"the line's process asks for gate {gate!r}; it could never be met")
        reached = skips.get(gate)
        if reached is None:
            continue
        for rule in required:
            modes = set(_as_list((rule.get("when") or {}).get("mode"))) or set(MODES)
            skipped = sorted(modes - reached)
            if skipped:
                raise CatalogError(f"{where}: gate {gate!r} requires {rule['kind']!r} for mode {skipped} but the "
                                   f"line's process skips that step for {skipped}")


def _service_line(line: Any, index: int, source: str, seen: set[str], gate_sets: dict[str, dict[str, Any]],
                  kinds: dict[str, Any], default_levels: list[dict[str, str]] | None) -> dict[str, Any]:
    """One [[service_lines]] entry, validated and normalised; raises CatalogError naming it."""
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
    metered = line.get("metered", False)
    if not isinstance(metered, bool):
        raise CatalogError(f"{where}: metered must be true or false")
    if metered and not line.get("process"):
        line = {**line, "process": "metered_record"}
    for key in ("name", "unit", "process"):
        if not line.get(key):
            raise CatalogError(f"{where}: needs '{key}'")
    if line["process"] not in line_kind_ids():
        raise CatalogError(f"{where}: unknown process {line['process']!r} (known: {list(line_kind_ids())})")
    if metered != (line["process"] in METERED_PROCESSES):
        raise CatalogError(f"{where}: a metered line runs the metered_record process, and only a metered "
                           "line does")
    unit_code, unit_name = _unit(line["unit"], where)
    channels = line.get("channels")
    prices = line.get("unit_prices") or {}
    if not isinstance(prices, dict):
        raise CatalogError(f"{where}: unit_prices must be a table channel = price")
    if channels is None and set(prices) == {ALL_CHANNELS}:
        channels = []  # priced per unit whatever the channel
    if not isinstance(channels, list) or (channels == [] and set(prices) != {ALL_CHANNELS}) \
            or any(c not in CHANNELS for c in channels) or len(set(channels)) != len(channels):
        raise CatalogError(f"{where}: channels must be a non-empty subset of {list(CHANNELS)} (or leave "
                           "channels out and give unit_prices = { all = PRICE })")
    priced = channels or [ALL_CHANNELS]
    for ch in priced:
        if ch not in prices:
            raise CatalogError(f"{where}: unit_prices lacks channel {ch!r}")
    extra = set(prices) - set(priced)
    if extra:
        raise CatalogError(f"{where}: unit_prices names channels not offered: {sorted(extra)}")
    gates: dict[str, Any] = {}
    if line.get("gate_set"):
        if line["gate_set"] not in gate_sets:
            raise CatalogError(f"{where}: unknown gate_set {line['gate_set']!r}")
        gates.update(gate_sets[line["gate_set"]])
    for gate, rules in (line.get("gates") or {}).items():
        gates[gate] = _rules(rules, f"{where}: gates.{gate}", kinds)
    model_gates = _model_gates(line["process"])
    missing = sorted(model_gates - set(gates))
    if missing:
        raise CatalogError(f"{where}: process {line['process']!r} has gates {missing} with no rules here "
                           f"(declare each, as an empty list when nothing is required)")
    if model_gates:
        check_reachable(gates, model_gates, _model_skips(line["process"]), where)
    volumes_raw = line.get("estimated_volumes") or {}
    if not isinstance(volumes_raw, dict):
        raise CatalogError(f"{where}: estimated_volumes must be a table channel = count")
    volumes = {}
    for ch, v in volumes_raw.items():
        if ch not in priced:
            raise CatalogError(f"{where}: estimated_volumes names channel {ch!r} that is not offered")
        if isinstance(v, bool) or not isinstance(v, int) or v < 0:
            raise CatalogError(f"{where}: estimated_volumes.{ch} must be a whole number ≥ 0")
        volumes[ch] = v
    levels = (_difficulty_levels(line["difficulty_levels"], where) if line.get("difficulty_levels") is not None
              else default_levels)
    return {
        "code": code, "name": line["name"], "unit": unit_name, "unit_code": unit_code, "metered": metered,
        "process_id": line["process"], "channels": list(channels),
        "unit_prices": {ch: _price(prices[ch], f"{where}: unit_prices.{ch}") for ch in priced},
        "estimated_volumes": volumes, "gates": gates,
        "targets": _targets(line.get("targets") or {}, where),
        "units_per_item": _money(line.get("units_per_item", 1), f"{where}: units_per_item"),
        "difficulty_levels": (levels or []) if not metered and line["process"] not in DELIVERABLE_PROCESSES
        else [],
    }


def parse_catalog(text: str, source: str) -> dict[str, Any]:
    """Parse and validate a catalogue (TOML); returns a normalised dict or raises CatalogError."""
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise CatalogError(f"{source}: not valid TOML: {exc}") from exc
    unknown_top = set(raw) - TOP_KEYS
    if unknown_top:
        raise CatalogError(f"{source}: unknown top-level keys {sorted(unknown_top)}")
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
    out_of_period = contract.get("out_of_period", "flag")
    if out_of_period not in OUT_OF_PERIOD:
        raise CatalogError(f"{source}: [contract] out_of_period must be one of {list(OUT_OF_PERIOD)}")
    settings = _settings(contract.get("settings") or {}, source)
    warnings: list[str] = []
    legacy = settings.pop(LEGACY_OUT_OF_PERIOD, None)
    if legacy is not None:
        if legacy not in OUT_OF_PERIOD:
            raise CatalogError(f"{source}: [contract.settings] {LEGACY_OUT_OF_PERIOD} (now [contract] "
                               f"out_of_period) must be one of {list(OUT_OF_PERIOD)}")
        if "out_of_period" in contract:
            warnings.append(f"{source}: [contract.settings] {LEGACY_OUT_OF_PERIOD} = {legacy!r} is the old name of "
                            f"[contract] out_of_period, which the file also sets; out_of_period = "
                            f"{out_of_period!r} applies")
        else:
            out_of_period = legacy
            warnings.append(f"{source}: [contract.settings] {LEGACY_OUT_OF_PERIOD} is renamed; read as [contract] "
                            f"out_of_period = {legacy!r} (registration and settlement both follow it)")
    settings["pricing"] = pricing
    settings["out_of_period"] = out_of_period
    if contract.get("price_basis") is not None:
        if contract["price_basis"] not in ("ceiling", "awarded"):
            raise CatalogError(f"{source}: [contract] price_basis must be 'ceiling' or 'awarded'")
        settings["price_basis"] = contract["price_basis"]
    declared = _artefact_kinds(raw.get("artefact_kinds") or {}, source)
    clash = sorted(set(declared) & set(ARTEFACT_KINDS))
    if clash:
        raise CatalogError(f"{source}: artefact_kinds {clash} are built-in kinds; choose other codes")
    if declared:
        settings["artefact_kinds"] = declared
    kinds: dict[str, Any] = {**ARTEFACT_KINDS, **declared}
    default_levels = None
    if settings.get("difficulty_levels") is not None:
        default_levels = _difficulty_levels(settings["difficulty_levels"], f"{source}: [contract.settings]")
        settings["difficulty_levels"] = default_levels
    if raw.get("difficulty_levels") is not None:
        default_levels = _difficulty_levels(raw["difficulty_levels"], f"{source}: difficulty_levels")
    gate_sets_raw = raw.get("gate_sets", {})
    gate_sets: dict[str, dict[str, Any]] = {}
    if not isinstance(gate_sets_raw, dict):
        raise CatalogError(f"{source}: gate_sets must be tables [gate_sets.NAME]")
    for set_name, set_gates in gate_sets_raw.items():
        if not isinstance(set_gates, dict):
            raise CatalogError(f"{source}: gate_sets.{set_name} must be a table gate = [rules]")
        gate_sets[set_name] = {g: _rules(r, f"{source}: gate_sets.{set_name}.{g}", kinds)
                               for g, r in set_gates.items()}
    lines_raw = raw.get("service_lines")
    if not isinstance(lines_raw, list) or not lines_raw:
        raise CatalogError(f"{source}: needs at least one [[service_lines]] entry")
    seen: set[str] = set()
    lines = []
    problems: list[CatalogError] = []
    for index, line in enumerate(lines_raw):
        # Every line is checked, so the admin sees every problem of a file at once, not one per upload.
        try:
            lines.append(_service_line(line, index, source, seen, gate_sets, kinds, default_levels))
        except CatalogError as exc:
            problems.append(exc)
    if problems:
        raise CatalogErrors(problems)
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
        "warnings": warnings,
    }


def kind_title(kind: str, settings: Mapping[str, Any] | None = None, *, english: bool = False) -> str:
    """The title people see for an artefact kind: a built-in one's, or the one its contract declares."""
    declared = (settings or {}).get("artefact_kinds") or {}
    if kind in declared:
        return str(declared[kind]["title_en" if english else "title"])
    return ARTEFACT_KINDS.get(kind, kind)


def contract_kinds(settings: Mapping[str, Any] | None) -> dict[str, str]:
    """Every kind a contract's items may carry, code → title: the built-in ones and its declared ones."""
    declared = (settings or {}).get("artefact_kinds") or {}
    return {**ARTEFACT_KINDS, **{code: spec["title"] for code, spec in declared.items()}}


def contract_named(session: Session, code: str) -> Contract:
    """The contract with this code; NotFound (404) when there is none."""
    contract = session.execute(select(Contract).where(Contract.code == code)).scalar()
    if contract is None:
        raise NotFound(f"contract {code} not found")
    return contract


def read_catalog_file(path: str | Path) -> dict[str, Any]:
    """A catalogue file, read and checked (parse_catalog); loading it is the catalogue use case's
    (engine/usecases/admin.py, load_catalog_file)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise CatalogError(f"{path}: cannot read: {exc}") from exc
    return parse_catalog(text, str(path))


def load_catalog(session: Session, parsed: dict[str, Any]) -> tuple[Contract, bool]:
    """Write a checked catalogue's contract and service lines (by contract code). Returns (contract, changed).
    Only the catalogue use case calls it (engine/usecases/admin.py, load_contract): it adds what hangs off a
    changed contract, such as the monthly reports."""
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
        line.unit_code = data["unit_code"]
        line.metered = data["metered"]
        line.difficulty_levels = data["difficulty_levels"]
        line.process_id = data["process_id"]
        line.channels = data["channels"]
        line.unit_prices = data["unit_prices"]
        line.estimated_volumes = data["estimated_volumes"]
        line.gates = data["gates"]
        line.targets = data["targets"]
        line.units_per_item = Decimal(data["units_per_item"])
    session.flush()
    return contract, True

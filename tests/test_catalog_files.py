"""Catalogue files: the shipped contracts load, and malformed ones fail naming file, entry and problem."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from sqlalchemy import create_engine, text

from bpmn import CATALOG_DIR
from engine.contract.catalog import CatalogError, parse_catalog, required_kinds

SHANGHAI = (CATALOG_DIR / "shanghai.toml").read_text(encoding="utf-8")
KAIPING = (CATALOG_DIR / "kaiping.toml").read_text(encoding="utf-8")


def test_shanghai_has_all_29_lines_with_units_prices_and_volumes():
    parsed = parse_catalog(SHANGHAI, "shanghai.toml")
    lines = {sl["code"]: sl for sl in parsed["service_lines"]}
    assert list(lines) == [str(n) for n in range(1, 30)]
    assert lines["5"]["process_id"] == "one_thing"
    assert lines["5"]["unit_prices"] == {"pc": "500000.00", "mobile": "700000.00"}
    assert lines["5"]["estimated_volumes"] == {"pc": 19, "mobile": 8}
    assert lines["12"]["process_id"] == "e_licence"
    assert lines["12"]["unit_prices"] == {"all": "60000.00"} and lines["12"]["channels"] == []
    # API calls priced to the tenth of a fen keep their precision; person-months; SMS.
    assert [lines[c]["unit_prices"]["all"] for c in ("8", "9", "10", "11")] == ["0.07", "0.004", "0.04", "0.20"]
    assert lines["9"]["estimated_volumes"] == {"all": 1440000000}
    assert {lines[str(c)]["unit_code"] for c in range(18, 27)} == {"person_month"}
    assert {lines[str(c)]["unit_prices"]["all"] for c in range(18, 27)} == {"20000.00"}
    metered = {c for c, sl in lines.items() if sl["metered"]}
    assert metered == {"8", "9", "10", "11", *(str(c) for c in range(18, 30))}
    assert {lines[c]["process_id"] for c in ("4", "7", "13", "14", "15", "16", "17")} == {"integration"}
    assert lines["29"]["unit_code"] == "sms" and lines["29"]["unit_prices"] == {"all": "0.05"}
    # gate conditions: walkthrough only for new items on lines 1–3; line 3 needs a third-party report, plain
    # confirmation; lines 5 and 6 demand the walkthrough of every item.
    walk = lines["1"]["gates"]["walkthrough"]
    assert required_kinds({"w": walk}, "w", mode="new", channels=["pc"], attributes={}) == \
        ["walkthrough_confirmation"]
    assert required_kinds({"w": walk}, "w", mode="iteration", channels=["pc"], attributes={}) == []
    for code in ("5", "6"):
        assert required_kinds(lines[code]["gates"], "walkthrough", mode="iteration", channels=["pc"],
                              attributes={}) == ["walkthrough_confirmation"]
    assert [r["kind"] for r in lines["3"]["gates"]["tests"]] == ["third_party_test_report", "security_test_report"]
    assert [r["kind"] for r in lines["3"]["gates"]["cosign"]] == ["plain_go_live_confirmation"]
    tests = lines["1"]["gates"]["tests"]
    assert "data_quality_confirmation" in required_kinds({"t": tests}, "t", mode="new", channels=["pc"],
                                                         attributes={"data_quality": True})
    assert "data_quality_confirmation" not in required_kinds({"t": tests}, "t", mode="new", channels=["pc"],
                                                             attributes={})
    # The survey form and sorting list are working documents in Shanghai, not acceptance evidence.
    for code in ("1", "2", "3"):
        survey = lines[code]["gates"]["survey"]
        assert required_kinds({"s": survey}, "s", mode="new", channels=["pc"], attributes={}) == []
        assert required_kinds({"s": survey}, "s", mode="new", channels=["pc"], attributes={}, optional=True) == \
            ["survey_form", "sorting_list"]
    assert parsed["contract"]["settings"]["pricing"] == "unit_price"


def test_kaiping_is_fixed_price_with_the_scenario_guide_target():
    parsed = parse_catalog(KAIPING, "kaiping.toml")
    assert parsed["contract"]["settings"]["pricing"] == "fixed_price"
    assert parsed["contract"]["award_amount"] == "158000.00"
    lines = {sl["code"]: sl for sl in parsed["service_lines"]}
    assert lines["guide"]["process_id"] == "scenario_guide"
    assert lines["guide"]["targets"] == {"scenario_guides": {"min": 50}}
    assert lines["config"]["process_id"] == "service_item"


BASE = """
[contract]
code = "T-1"
name = "测试合同"

[[service_lines]]
code = "1"
name = "单部门事项接入"
unit = "项"
process = "scenario_guide"
channels = ["pc"]
unit_prices = { pc = 100 }
[service_lines.gates]
guide_list = [{ kind = "guide_item_list" }]
guide_design = [{ kind = "guide_design" }]
tests = []
go_live = []
"""


@pytest.mark.parametrize(("edit", "message"), [
    (lambda s: s.replace('unit_prices = { pc = 100 }', 'unit_prices = { pc = 100, mobile = 5 }'),
     "service_lines[0] (code '1'): unit_prices names channels not offered"),
    (lambda s: s.replace('{ kind = "guide_design" }', '{ kind = "guide_desing" }'),
     "service_lines[0] (code '1'): gates.guide_design[0]: unknown artefact kind 'guide_desing'"),
    (lambda s: s.replace('go_live = []\n', ''),
     "service_lines[0] (code '1'): process 'scenario_guide' has gates ['go_live'] with no rules here"),
    (lambda s: s.replace('tests = []', 'tests = [{ kind = "test_report", when = { channel = "tv" } }]'),
     "gates.tests[0]: channel 'tv' is not one of"),
    (lambda s: s.replace('tests = []', 'tests = [{ kind = "test_report", when = { moode = "new" } }]'),
     "gates.tests[0]: unknown condition ['moode']"),
    (lambda s: s.replace('channels = ["pc"]', 'channels = ["pc"]\ntargets = { guides = { min = -1 } }'),
     "service_lines[0] (code '1'): targets.guides.min: must be a whole number"),
    (lambda s: s.replace('process = "scenario_guide"', 'process = "nope"'),
     "service_lines[0] (code '1'): unknown process 'nope'"),
    (lambda s: s.replace('name = "测试合同"', 'name = "测试合同"\npricing = "cheap"'),
     "[contract] pricing must be one of"),
    (lambda s: s.replace('code = "1"', 'code = "1"\nprise = 4'), "service_lines[0] (code '1'): unknown keys ['prise']"),
    (lambda s: s + "\n[[service_lines]]\ncode = \"1\"\n", "service_lines[1] (code '1'): duplicate service line code"),
    (lambda s: s.replace('[contract]', '[contract'), "not valid TOML"),
])
def test_malformed_catalogues_name_file_entry_and_problem(edit, message):
    with pytest.raises(CatalogError) as err:
        parse_catalog(edit(BASE), "bad.toml")
    assert str(err.value).startswith("bad.toml: ")
    assert message in str(err.value)


def test_base_example_is_valid():
    assert parse_catalog(BASE, "ok.toml")["service_lines"][0]["gates"]["tests"] == []


def test_cli_load_reports_the_problem_and_loads_nothing(tmp_path: Path):
    """The smoke test of the real `itemgate` entry point: each call is a subprocess configured as an operator
    configures it (the environment); every other CLI test runs in the test's app (the `cli` fixture)."""
    db_file = tmp_path / "cli.db"
    runner = SubprocessCli({"ITEMGATE_DATABASE_URL": f"sqlite:///{db_file}", "ITEMGATE_LOG_JSON": "0"})
    assert runner.invoke(["db", "upgrade"]).exit_code == 0
    bad = tmp_path / "broken.toml"
    # The second line is broken: the first (valid) one must not be loaded either.
    bad.write_text(BASE + '\n[[service_lines]]\ncode = "2"\nname = "x"\nunit = "项"\nprocess = "scenario_guide"\n'
                   'channels = ["pc"]\nunit_prices = { pc = 1 }\n', encoding="utf-8")
    result = runner.invoke(["catalog", "load", str(bad)])
    assert result.exit_code == 1
    assert f"{bad}: service_lines[1] (code '2'): process 'scenario_guide' has gates" in result.output
    engine = create_engine(f"sqlite:///{db_file}")
    with engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM contracts")).scalar() == 0
        assert conn.execute(text("SELECT count(*) FROM service_lines")).scalar() == 0
    engine.dispose()
    good = runner.invoke(["catalog", "load", str(CATALOG_DIR / "kaiping.toml")])
    assert good.exit_code == 0, good.output
    assert "contract KP-YTH-2026: 4 service lines (loaded)" in good.output
    again = runner.invoke(["catalog", "load", str(CATALOG_DIR / "kaiping.toml")])
    assert "(unchanged)" in again.output
    # A catalogue still using the settlement's old setting name loads, with a warning naming the new one.
    old = tmp_path / "old.toml"
    old.write_text((CATALOG_DIR / "shanghai.toml").read_text(encoding="utf-8")
                   .replace('out_of_period = "flag"\n', "")
                   .replace("[contract.settings]\n", '[contract.settings]\noutside_service_period = "refuse"\n'),
                   encoding="utf-8")
    loaded = runner.invoke(["catalog", "load", str(old)])
    assert loaded.exit_code == 0, loaded.output
    assert "warning:" in loaded.output and "out_of_period = 'refuse'" in loaded.output
    engine = create_engine(f"sqlite:///{db_file}")
    with engine.connect() as conn:
        settings = conn.execute(text("SELECT settings FROM contracts WHERE code = 'SH-YWTB-2025'")).scalar()
    engine.dispose()
    assert '"out_of_period": "refuse"' in settings and "outside_service_period" not in settings


class SubprocessCli:
    """Runs the installed `itemgate` in a subprocess (its own app and engines, as an operator would), configured
    by the given ITEMGATE_* variables only (none of this process's own)."""

    def __init__(self, settings: dict[str, str]):
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("ITEMGATE_")} | settings

    def invoke(self, args: list[str], stdin: str | None = None) -> Any:
        exe = Path(sys.executable).with_name("itemgate")
        proc = subprocess.run([str(exe), *args], env=self.env, capture_output=True, text=True,  # noqa: S603
                              input=stdin, timeout=300, check=False)
        return SimpleNamespace(exit_code=proc.returncode, output=proc.stdout + proc.stderr)


def test_catalog_doc_prints_the_shipped_files_in_full():
    doc = (Path(__file__).resolve().parents[1] / "docs" / "CATALOG.md").read_text(encoding="utf-8")
    for name in ("shanghai.toml", "kaiping.toml"):
        text = (CATALOG_DIR / name).read_text(encoding="utf-8")
        assert f"### `bpmn/catalogs/{name}`\n\n```toml\n{text}```\n" in doc, f"docs/CATALOG.md: {name} is stale"

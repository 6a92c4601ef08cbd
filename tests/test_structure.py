"""Structural rules the code keeps: one place for each decision (roles, transactions, the SpiffWorkflow adapter)."""
from __future__ import annotations

import ast
import re
from pathlib import Path

from engine.policy import ROLES

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("engine", "api", "storage", "forms", "bpmn")
# The role definitions themselves.
ROLE_HOME = {"engine/policy.py"}
# Strings that spell a role name but are something else.
NOT_ROLES = {
    ("engine/catalog.py", "buyer"): "the contract's buyer (an organisation)",
    ("engine/holidays.py", "admin"): "where a calendar came from: entered by an administrator",
    ("storage/s3server.py", "admin"): "a SeaweedFS component",
    ("api/rest/core.py", "buyer"): "the contract's buyer in the catalogue JSON",
    ("api/demo.py", "pm"): "a demo username",
    ("api/demo.py", "auditor"): "a demo username",
    ("api/demo.py", "buyer"): "a demo username",
    ("api/demo.py", "admin"): "a demo username",
}
TEMPLATE_ROLE = re.compile("['\"](" + "|".join(ROLES) + ")['\"]")


def python_files() -> list[Path]:
    return [p for pkg in PACKAGES for p in sorted((ROOT / pkg).rglob("*.py")) if "migrations" not in p.parts]


def role_literals(path: Path, rel: str) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value in ROLES \
                and (rel, node.value) not in NOT_ROLES:
            found.append(f"{rel}:{node.lineno}: {node.value!r}")
    return found


def test_no_role_literal_outside_the_policy():
    """Who may do what is decided in engine/policy.py: code asks authorize()/scope_of()/may(), never a role."""
    found = []
    for path in python_files():
        rel = str(path.relative_to(ROOT))
        if rel not in ROLE_HOME:
            found += role_literals(path, rel)
    for path in sorted((ROOT / "api" / "templates").rglob("*.html")):
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if TEMPLATE_ROLE.search(line):
                found.append(f"{path.relative_to(ROOT)}:{n}: {line.strip()[:80]}")
    assert not found, "role literals outside engine/policy.py (ask the policy instead):\n" + "\n".join(found)


def test_role_literal_check_can_fail(tmp_path):
    bad = tmp_path / "x.py"
    bad.write_text('def f(user):\n    return user.role in ("pm", "admin")\n')
    assert len(role_literals(bad, "engine/x.py")) == 2

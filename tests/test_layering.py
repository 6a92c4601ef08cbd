"""Layering lint: api may import engine/forms/storage; engine may import storage/forms; nothing imports api."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
FORBIDDEN = {
    "engine": {"api", "flask", "flask_smorest", "flask_login", "flask_wtf", "flask_sqlalchemy", "werkzeug"},
    "storage": {"api", "engine", "flask"},
    "forms": {"api", "engine", "storage", "flask"},
    "bpmn": {"api"},
}


def imports_of(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


CASES = [(pkg, p) for pkg in FORBIDDEN for p in sorted((ROOT / pkg).rglob("*.py")) if "migrations" not in p.parts]


@pytest.mark.parametrize(("package", "path"), CASES, ids=[str(p.relative_to(ROOT)) for _, p in CASES])
def test_layering(package, path):
    bad = imports_of(path) & FORBIDDEN[package]
    assert not bad, f"{path.relative_to(ROOT)} imports {sorted(bad)}"


def test_lint_catches_a_violation(tmp_path):
    bad = tmp_path / "x.py"
    bad.write_text("from api.app import create_app\n")
    assert "api" in imports_of(bad)

"""Structural rules the code keeps: one place for each decision (roles, transactions, the SpiffWorkflow adapter)."""
from __future__ import annotations

import ast
import re
from pathlib import Path

from engine.trust.policy import ROLES

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("engine", "api", "storage", "forms", "bpmn")
# The role definitions themselves.
ROLE_HOME = {"engine/trust/policy.py"}
# Strings that spell a role name but are something else.
NOT_ROLES = {
    ("engine/contract/catalog.py", "buyer"): "the contract's buyer (an organisation)",
    ("engine/contract/holidays.py", "admin"): "where a calendar came from: entered by an administrator",
    ("engine/usecases/admin.py", "buyer"): "the contract's buyer, a field a catalogue upload may change",
    ("storage/s3server.py", "admin"): "a SeaweedFS component",
    ("api/rest/core.py", "buyer"): "the contract's buyer in the catalogue JSON",
    ("engine/money/performance.py", "implementer"): "a grouping of figures by the person who did the task",
    ("api/rest/money.py", "implementer"): "that grouping's name in the query string",
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
    """Who may do what is decided in engine/trust/policy.py: code asks authorize()/scope_of()/may(), never a role."""
    found = []
    for path in python_files():
        rel = str(path.relative_to(ROOT))
        if rel not in ROLE_HOME:
            found += role_literals(path, rel)
    for path in sorted((ROOT / "api" / "templates").rglob("*.html")):
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if TEMPLATE_ROLE.search(line):
                found.append(f"{path.relative_to(ROOT)}:{n}: {line.strip()[:80]}")
    assert not found, "role literals outside engine/trust/policy.py (ask the policy instead):\n" + "\n".join(found)


def test_role_literal_check_can_fail(tmp_path):
    bad = tmp_path / "x.py"
    bad.write_text('def f(user):\n    return user.role in ("pm", "admin")\n')
    assert len(role_literals(bad, "engine/x.py")) == 2


# What opens a unit of work or a session of its own: the entry point's business, never the engine's. (A use case
# that writes in several short transactions while it runs, a background job, is handed the entry point's
# `Transactions` opener instead.)
OPENERS = {"unit_of_work", "new_unit_of_work", "sessionmaker", "transactions"}
# Reasoned exceptions: (file, name) -> why the engine may open one there. None today.
OPENER_EXCEPTIONS: dict[tuple[str, str], str] = {}


def commit_calls(path: Path, rel: str) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "commit":
            found.append(f"{rel}:{node.lineno}")
    return found


def unit_of_work_openers(path: Path, rel: str) -> list[str]:
    """Imports or uses of what opens a unit of work (storage.unit_of_work's helpers, a sessionmaker)."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        names: list[str] = []
        if isinstance(node, ast.ImportFrom):
            names = [a.name for a in node.names]
        # (`transactions` is also what a use case calls the opener it is handed: only its import counts.)
        elif isinstance(node, ast.Name) and node.id != "transactions":
            names = [node.id]
        elif isinstance(node, ast.Attribute) and node.attr != "transactions":
            names = [node.attr]
        found += [f"{rel}:{node.lineno}: {n}" for n in names if n in OPENERS and (rel, n) not in OPENER_EXCEPTIONS]
    return found


def test_the_engine_flushes_and_never_commits():
    """Transactions begin and end at the entry points (routes, CLI commands, the tick, the outbox and job
    runners) through storage/unit_of_work.py; use cases only flush, and open no unit of work of their own."""
    found = []
    for path in sorted((ROOT / "engine").rglob("*.py")):
        found += commit_calls(path, str(path.relative_to(ROOT)))
    assert not found, "commit() in engine/ (use storage.unit_of_work at the entry point):\n" + "\n".join(found)
    opened = []
    for path in sorted((ROOT / "engine").rglob("*.py")):
        opened += unit_of_work_openers(path, str(path.relative_to(ROOT)))
    assert not opened, ("a unit of work opened in engine/ (open it at the entry point, or take its "
                        "`Transactions`):\n" + "\n".join(opened))


def test_commit_check_can_fail(tmp_path):
    bad = tmp_path / "x.py"
    bad.write_text("def f(session):\n    session.flush()\n    session.commit()\n")
    assert commit_calls(bad, "engine/x.py") == ["engine/x.py:3"]
    opens = tmp_path / "y.py"
    opens.write_text("from storage.unit_of_work import unit_of_work\n\ndef f(session):\n"
                     "    with unit_of_work(session):\n        pass\n")
    assert unit_of_work_openers(opens, "engine/y.py") == ["engine/y.py:1: unit_of_work", "engine/y.py:4: unit_of_work"]


def status_overrides(path: Path, rel: str) -> list[str]:
    import engine.errors as errors

    typed = {name for name, obj in vars(errors).items()
             if isinstance(obj, type) and issubclass(obj, errors.DomainError)}
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in typed \
                and any(k.arg == "status" for k in node.keywords):
            found.append(f"{rel}:{node.lineno}: {node.func.id}(..., status=...)")
    return found


def test_refusals_are_typed_not_status_overrides():
    """A 409 is a Conflict, a 403 a Forbidden: no domain error is raised with a `status=` override."""
    found = []
    for path in python_files():
        found += status_overrides(path, str(path.relative_to(ROOT)))
    assert not found, "\n".join(found)


def test_status_override_check_can_fail(tmp_path):
    bad = tmp_path / "x.py"
    bad.write_text('raise Invalid("exists", code="user_exists", status=409)\n')
    assert status_overrides(bad, "api/x.py")


def spiff_private_names() -> set[str]:
    """Private attributes and methods SpiffWorkflow defines (`self._x = …`, `def _x`)."""
    import SpiffWorkflow

    names: set[str] = set()
    for path in Path(SpiffWorkflow.__file__).parent.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.name.startswith("_") \
                    and not node.name.startswith("__"):
                names.add(node.name)
            elif isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store) and node.attr.startswith("_") \
                    and not node.attr.startswith("__"):
                names.add(node.attr)
    return names


def spiff_private_uses(path: Path, rel: str, private: set[str]) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Attribute) and node.attr in private and ast.unparse(node.value) not in ("self", "cls"):
            found.append(f"{rel}:{node.lineno}: .{node.attr}")
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("SpiffWorkflow") \
                and any(a.name.startswith("_") for a in node.names):
            found.append(f"{rel}:{node.lineno}: imports a private name from {node.module}")
    return found


def test_spiffworkflow_internals_stay_behind_the_adapter():
    """Only engine/runtime/spiff.py touches SpiffWorkflow's private attributes (load_workflow, update_task …)."""
    private = spiff_private_names()
    found = []
    for path in python_files():
        rel = str(path.relative_to(ROOT))
        if rel != "engine/runtime/spiff.py":
            found += spiff_private_uses(path, rel, private)
    assert not found, "SpiffWorkflow internals outside engine/runtime/spiff.py:\n" + "\n".join(found)


def test_spiff_private_check_can_fail(tmp_path):
    bad = tmp_path / "x.py"
    bad.write_text("def f(task):\n    task.task_spec._update(task)\n    return task._children\n")
    assert len(spiff_private_uses(bad, "engine/x.py", spiff_private_names())) == 2


def test_entry_points_commit_through_the_unit_of_work():
    """Routes and CLI commands end their transaction with storage.unit_of_work, not a raw commit()."""
    found = []
    for path in sorted((ROOT / "api").rglob("*.py")):
        found += commit_calls(path, str(path.relative_to(ROOT)))
    assert not found, "commit() in api/ (use `with unit_of_work(db.session):`):\n" + "\n".join(found)

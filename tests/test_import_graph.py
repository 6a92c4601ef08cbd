"""The import graph: no cycle anywhere (imports inside functions count: a late import only hides one), and no
engine group importing a group above it."""
from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("engine", "api", "storage", "forms", "bpmn")
# engine/'s groups from the bottom up: a group may import the groups before it (and the modules left at
# engine/ itself), never one after it. Empty until engine/ is regrouped (/work/notes/regroup.sh fills it in).
ENGINE_GROUPS: tuple[str, ...] = ("trust", "runtime", "contract", "evidence", "money", "usecases")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for pkg in PACKAGES for p in sorted((ROOT / pkg).rglob("*.py"))
            if "migrations" not in p.parts}


def imports(path: Path, known: set[str]) -> set[str]:
    """The project modules `path` imports (anywhere in it, except under `if TYPE_CHECKING:`)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    skip: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skip.update(id(n) for child in node.body for n in ast.walk(child))
    found: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{a.name}" for a in node.names)
    return {name for name in found if name in known}


def graph() -> dict[str, set[str]]:
    mods = modules()
    known = set(mods)
    # A package's __init__ is not an edge of its own submodules' imports.
    return {name: {d for d in imports(path, known) if d != name and not name.startswith(d + ".")}
            for name, path in mods.items()}


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(edges.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return found


# Known edges that close a cycle, each with the way out; remove the entry when the edge is gone.
KNOWN_CYCLE_EDGES: dict[tuple[str, str], str] = {}


def test_no_import_cycle_anywhere():
    edges = graph()
    for (a, b) in KNOWN_CYCLE_EDGES:
        edges.get(a, set()).discard(b)
    found = cycles(edges)
    assert not found, "import cycles:\n" + "\n".join(" ↔ ".join(c) for c in found)


def test_the_cycle_check_can_fail():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def group_of(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 2 and parts[0] == "engine" and parts[1] in ENGINE_GROUPS else None


def upward_imports(edges: dict[str, set[str]]) -> list[str]:
    rank = {g: i for i, g in enumerate(ENGINE_GROUPS)}
    bad = []
    for module, deps in sorted(edges.items()):
        mine = group_of(module)
        for dep in sorted(deps):
            theirs = group_of(dep)
            if mine is not None and theirs is not None and rank[theirs] > rank[mine]:
                bad.append(f"{module} ({mine}) imports {dep} ({theirs}, a group above it)")
            elif mine is None and module.startswith("engine.") and theirs is not None:
                bad.append(f"{module} (engine's kernel) imports {dep} ({theirs})")
    return bad


def test_no_engine_group_imports_a_group_above_it():
    edges = graph()
    for (a, b) in KNOWN_CYCLE_EDGES:
        edges.get(a, set()).discard(b)
    bad = upward_imports(edges)
    assert not bad, "\n".join(bad)
    for group in ENGINE_GROUPS:
        init = ROOT / "engine" / group / "__init__.py"
        assert ast.get_docstring(ast.parse(init.read_text(encoding="utf-8"))), f"{init} says what the group is for"

"""Restricted evaluator for BPMN gateway conditions and script tasks (replaces SpiffWorkflow's eval/exec)."""
from __future__ import annotations

import ast
import functools
import operator
import textwrap
import time
from collections import ChainMap
from collections.abc import Callable, Iterator, Mapping, MutableMapping, MutableSequence, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any, Literal

from SpiffWorkflow.bpmn.exceptions import WorkflowTaskException
from SpiffWorkflow.bpmn.script_engine import PythonScriptEngine
from SpiffWorkflow.bpmn.script_engine.python_environment import BasePythonScriptEngineEnvironment

from engine.runtime.timerspec import TimerValueError, check_timer_value, timer_kind

__all__ = [
    "SAFE_FUNCTIONS",
    "Budget",
    "configure_budget",
    "current_budget",
    "deadline",
    "ExpressionError",
    "ExpressionProblem",
    "RestrictedEnvironment",
    "RestrictedScriptEngine",
    "UnsafeExpression",
    "check_expression",
    "check_script",
    "evaluate",
    "execute",
    "restricted_script_engine",
]

# Models are edited by people, so the text is bounded before it reaches the parser, and values built by the
# interpreter are bounded so that a short expression cannot allocate gigabytes ("x" * 10**9, x = x + x ...).
MAX_SOURCE_CHARS = 10_000
MAX_SEQUENCE_LEN = 100_000
MAX_INT_BITS = 4_096

_Mode = Literal["eval", "exec"]


@dataclass(frozen=True)
class Budget:
    """What one evaluation (a condition, a script, a timer expression) may cost, enforced while it runs.

    Size checks on results alone are not enough: Python's own comparison, hashing and str() of a structure
    built from shared references ([a, a] doubled 60 times) cost 2**60 before any result exists. So every value
    the interpreter builds, and every value handed to a comparison or a function, is weighed as the tree it
    expands to (elements plus characters; shared parts counted each time they appear, cycles refused), each
    interpreter step and each weighed element is counted, and the clock is read every few hundred steps."""

    steps: int = 1_000_000        # interpreter steps plus elements weighed
    size: int = 1_000_000         # expanded size of any one value: elements + characters
    seconds: float = 1.0          # wall time


_budget = Budget()
# An outer deadline (e.g. `tick` bounds all the work on one instance), honoured by every evaluation inside it.
_outer_deadline: ContextVar[float | None] = ContextVar("itemgate_expression_deadline", default=None)


def configure_budget(budget: Budget) -> None:
    """Set the per-evaluation budget for this process (the app factory does, from the settings)."""
    global _budget
    if budget.steps < 1 or budget.size < 1 or budget.seconds <= 0:
        raise ValueError("expression budgets must be positive")
    _budget = budget


def current_budget() -> Budget:
    return _budget


@contextmanager
def deadline(seconds: float) -> Iterator[None]:
    """Every evaluation inside the block stops when `seconds` have passed (or its own budget runs out)."""
    at = time.monotonic() + seconds
    outer = _outer_deadline.get()
    token = _outer_deadline.set(at if outer is None else min(at, outer))
    try:
        yield
    finally:
        _outer_deadline.reset(token)


class ExpressionProblem(ValueError):
    """Common base so callers can catch both refusals and runtime failures of model expressions."""

    verb = "failed"

    def __init__(self, expression: str, reason: str, element_id: str | None = None):
        # args mirror __init__ so the exception pickles and copies faithfully.
        super().__init__(expression, reason, element_id)
        self.expression = expression
        self.reason = reason
        self.element_id = element_id

    def __str__(self) -> str:
        shown = self.expression.strip()
        if len(shown) > 200:
            shown = shown[:197] + "..."
        where = f"element '{self.element_id}': " if self.element_id else ""
        return f"{where}expression '{shown}' {self.verb}: {self.reason}"

    def with_element(self, element_id: str | None) -> ExpressionProblem:
        """The same problem, located at a BPMN element (the checker itself does not know where it runs)."""
        if element_id is None or element_id == self.element_id:
            return self
        located = type(self)(self.expression, self.reason, element_id)
        located.__cause__ = self.__cause__
        return located


class UnsafeExpression(ExpressionProblem):
    """The text uses something outside the allow-list (or does not parse); it is never run."""

    verb = "not allowed"


class ExpressionError(ExpressionProblem):
    """An allowed expression failed while running: unknown variable, wrong type, division by zero ..."""


# --- safe functions -----------------------------------------------------------------------------------------


def _get(mapping: Any, key: Any, default: Any = None) -> Any:
    # None is treated as an empty mapping so nested look-ups (get(get(a, "b"), "c")) do not need guards.
    if mapping is None:
        return default
    if not isinstance(mapping, Mapping):
        raise TypeError(f"get() needs a mapping, not {type(mapping).__name__}")
    return mapping.get(key, default)


def _sum(values: Any, start: Any = 0) -> Any:
    # sum() of lists or strings concatenates, quadratically in C; it adds numbers only.
    values = list(values)
    if not all(isinstance(v, int | float) for v in [*values, start]):
        raise TypeError("sum() adds numbers only")
    return sum(values, start)


SAFE_FUNCTIONS: Mapping[str, Callable[..., Any]] = {
    "len": len,
    "min": min,
    "max": max,
    "sum": _sum,
    "abs": abs,
    "round": round,
    "int": int,
    "float": float,
    "str": str,
    "bool": bool,
    "sorted": sorted,
    "any": any,
    "all": all,
    "get": _get,
}

# `key=` is the one way these builtins would call back into a value the model chose; values come from task
# data, which could hold a callable, so the keyword is refused rather than trusted.
_REFUSED_KEYWORDS = frozenset({"key"})

_COMPARE_OPS: Mapping[type[ast.cmpop], Callable[[Any, Any], Any]] = {
    ast.Eq: operator.eq,
    ast.NotEq: operator.ne,
    ast.Lt: operator.lt,
    ast.LtE: operator.le,
    ast.Gt: operator.gt,
    ast.GtE: operator.ge,
    ast.In: lambda a, b: a in b,
    ast.NotIn: lambda a, b: a not in b,
    ast.Is: operator.is_,
    ast.IsNot: operator.is_not,
}

_BIN_OPS: Mapping[type[ast.operator], str] = {
    ast.Add: "+",
    ast.Sub: "-",
    ast.Mult: "*",
    ast.Div: "/",
    ast.FloorDiv: "//",
    ast.Mod: "%",
}

_UNARY_OPS: Mapping[type[ast.unaryop], Callable[[Any], Any]] = {
    ast.Not: operator.not_,
    ast.USub: operator.neg,
    ast.UAdd: operator.pos,
}

_CONSTANT_TYPES = (str, int, float, bool, type(None))

# Human names for the refusals people are most likely to write, so the message says what to change.
_REFUSED_NODES: Mapping[type[ast.AST], str] = {
    ast.Attribute: "attribute access",
    ast.Lambda: "lambda",
    ast.ListComp: "comprehension",
    ast.SetComp: "comprehension",
    ast.DictComp: "comprehension",
    ast.GeneratorExp: "comprehension",
    ast.NamedExpr: "assignment expression (:=)",
    ast.Starred: "unpacking (*)",
    ast.Await: "await",
    ast.Yield: "yield",
    ast.YieldFrom: "yield",
    ast.Import: "import",
    ast.ImportFrom: "import",
    ast.FunctionDef: "function definition",
    ast.AsyncFunctionDef: "function definition",
    ast.ClassDef: "class definition",
    ast.For: "loop",
    ast.AsyncFor: "loop",
    ast.While: "loop",
    ast.With: "with statement",
    ast.AsyncWith: "with statement",
    ast.Try: "try statement",
    ast.Raise: "raise statement",
    ast.Global: "global statement",
    ast.Nonlocal: "nonlocal statement",
    ast.Delete: "del statement",
    ast.Return: "return statement",
    ast.Assert: "assert statement",
    ast.AnnAssign: "annotated assignment",
    ast.Match: "match statement",
}


# --- checking -----------------------------------------------------------------------------------------------


class _Refusal(Exception):  # internal control flow, converted to UnsafeExpression at the boundary
    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


def _refuse_node(node: ast.AST) -> _Refusal:
    reason = _REFUSED_NODES.get(type(node))
    return _Refusal(reason or f"{type(node).__name__} is not supported")


def _check_name(name: str) -> None:
    # Every escape route in Python goes through dunder names; private names are refused outright.
    if name.startswith("_"):
        raise _Refusal(f"name '{name}' starts with '_'")


def _check_expr(node: ast.AST) -> None:
    """Walk an expression node; anything not explicitly handled is refused."""
    if isinstance(node, ast.Constant):
        if not isinstance(node.value, _CONSTANT_TYPES):
            raise _Refusal(f"constant of type {type(node.value).__name__}")
    elif isinstance(node, ast.Name):
        if not isinstance(node.ctx, ast.Load):
            raise _Refusal("assignment inside an expression")
        _check_name(node.id)
    elif isinstance(node, ast.List | ast.Tuple | ast.Set):
        if not isinstance(node, ast.Set) and not isinstance(node.ctx, ast.Load):
            raise _Refusal("assignment inside an expression")
        for element in node.elts:
            _check_expr(element)
    elif isinstance(node, ast.Dict):
        for key in node.keys:
            if key is None:
                raise _Refusal("unpacking (**)")
            _check_expr(key)
        for value in node.values:
            _check_expr(value)
    elif isinstance(node, ast.Compare):
        for op in node.ops:
            if type(op) not in _COMPARE_OPS:
                raise _Refusal(f"comparison {type(op).__name__}")
        _check_expr(node.left)
        for comparator in node.comparators:
            _check_expr(comparator)
    elif isinstance(node, ast.BoolOp):
        for value in node.values:
            _check_expr(value)
    elif isinstance(node, ast.UnaryOp):
        if type(node.op) not in _UNARY_OPS:
            raise _Refusal(f"operator {type(node.op).__name__}")
        _check_expr(node.operand)
    elif isinstance(node, ast.BinOp):
        if type(node.op) not in _BIN_OPS:
            raise _Refusal(f"operator {type(node.op).__name__}")
        _check_expr(node.left)
        _check_expr(node.right)
    elif isinstance(node, ast.IfExp):
        _check_expr(node.test)
        _check_expr(node.body)
        _check_expr(node.orelse)
    elif isinstance(node, ast.Subscript):
        if not isinstance(node.ctx, ast.Load):
            raise _Refusal("assignment inside an expression")
        _check_expr(node.value)
        _check_index(node.slice)
    elif isinstance(node, ast.Call):
        _check_call(node)
    elif isinstance(node, ast.JoinedStr):
        for part in node.values:
            if isinstance(part, ast.FormattedValue):
                # Format specs can ask for arbitrarily wide padding ({x:>999999999}); plain {x} is enough.
                if part.format_spec is not None:
                    raise _Refusal("format spec in f-string")
                _check_expr(part.value)
            else:
                _check_expr(part)
    else:
        raise _refuse_node(node)


def _check_index(node: ast.AST) -> None:
    if isinstance(node, ast.Slice):
        for bound in (node.lower, node.upper, node.step):
            if bound is not None:
                _check_expr(bound)
    else:
        _check_expr(node)


def _check_call(node: ast.Call) -> None:
    func = node.func
    if isinstance(func, ast.Attribute):
        raise _Refusal("attribute access")
    if not isinstance(func, ast.Name):
        raise _Refusal("only calls to named functions are allowed")
    if func.id not in SAFE_FUNCTIONS:
        _check_name(func.id)
        raise _Refusal(f"call to '{func.id}' (allowed: {', '.join(sorted(SAFE_FUNCTIONS))})")
    for arg in node.args:
        _check_expr(arg)
    for keyword in node.keywords:
        if keyword.arg is None:
            raise _Refusal("unpacking (**)")
        _check_name(keyword.arg)
        if keyword.arg in _REFUSED_KEYWORDS:
            raise _Refusal(f"keyword argument '{keyword.arg}'")
        _check_expr(keyword.value)


def _check_target(node: ast.AST) -> None:
    """Assignment targets: a variable, or an item of a variable (data["x"] = ..., items[0] = ...)."""
    if isinstance(node, ast.Name):
        _check_name(node.id)
    elif isinstance(node, ast.Subscript):
        root: ast.AST = node.value
        while isinstance(root, ast.Subscript):
            _check_index(root.slice)
            root = root.value
        if not isinstance(root, ast.Name):
            raise _Refusal("can only assign to a variable or an item of one")
        _check_name(root.id)
        _check_index(node.slice)
    elif isinstance(node, ast.Tuple | ast.List):
        raise _Refusal("unpacking assignment")
    else:
        raise _Refusal("can only assign to a variable or an item of one")


def _check_statement(node: ast.stmt) -> None:
    if isinstance(node, ast.Assign):
        for target in node.targets:
            _check_target(target)
        _check_expr(node.value)
    elif isinstance(node, ast.AugAssign):
        if type(node.op) not in _BIN_OPS:
            raise _Refusal(f"operator {type(node.op).__name__}")
        _check_target(node.target)
        _check_expr(node.value)
    elif isinstance(node, ast.Expr):
        # A bare expression has no effect here (no function has side effects); allow calls (harmless) and
        # string constants (people write them as comments), refuse the rest as almost certainly a mistake.
        if isinstance(node.value, ast.Call):
            _check_call(node.value)
        elif not (isinstance(node.value, ast.Constant) and isinstance(node.value.value, str)):
            raise _Refusal("expression statement has no effect")
    elif isinstance(node, ast.If):
        _check_expr(node.test)
        for statement in (*node.body, *node.orelse):
            _check_statement(statement)
    elif isinstance(node, ast.Pass):
        pass
    else:
        raise _refuse_node(node)


def _normalise(source: str, mode: _Mode) -> str:
    # BPMN XML often indents the text of <conditionExpression>/<script>; Python's parser would reject that.
    return source.strip() if mode == "eval" else textwrap.dedent(source).strip()


@functools.lru_cache(maxsize=2048)
def _compile(source: str, mode: _Mode) -> ast.Expression | ast.Module:
    """Parse and check once per distinct text: the same conditions run on every engine step."""
    if not isinstance(source, str):
        raise UnsafeExpression(repr(source), "expression must be text")
    if len(source) > MAX_SOURCE_CHARS:
        raise UnsafeExpression(source, f"longer than {MAX_SOURCE_CHARS} characters")
    text = _normalise(source, mode)
    if not text:
        raise UnsafeExpression(source, "empty")
    try:
        tree: ast.mod = ast.parse(text, mode=mode)
    except (SyntaxError, ValueError, RecursionError, MemoryError) as err:
        raise UnsafeExpression(source, f"syntax error: {err}") from None
    try:
        if isinstance(tree, ast.Expression):
            _check_expr(tree.body)
        elif isinstance(tree, ast.Module):
            for statement in tree.body:
                _check_statement(statement)
        else:
            raise _Refusal(f"{type(tree).__name__} is not supported")
    except _Refusal as refusal:
        raise UnsafeExpression(source, refusal.reason) from None
    except RecursionError:
        raise UnsafeExpression(source, "nested too deeply") from None
    return tree


def _checked(source: str, mode: _Mode, element_id: str | None) -> ast.Expression | ast.Module:
    try:
        return _compile(source, mode)
    except TypeError:
        # lru_cache hashes its arguments; a non-text value lands here rather than in _compile.
        raise UnsafeExpression(repr(source), "expression must be text", element_id) from None
    except UnsafeExpression as err:
        located = err.with_element(element_id)
        raise located from None


def check_expression(source: str, element_id: str | None = None) -> None:
    """Refuse (UnsafeExpression) an expression text that is outside the allow-list or does not parse."""
    _checked(source, "eval", element_id)


def check_script(source: str, element_id: str | None = None) -> None:
    """Refuse (UnsafeExpression) a script text that is outside the allow-list or does not parse."""
    _checked(source, "exec", element_id)


# --- interpreting -------------------------------------------------------------------------------------------


class _Failure(Exception):  # internal control flow, converted to ExpressionError at the boundary
    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


_MISSING = object()
_CONTAINERS = (list, tuple, dict, set, frozenset)
# Identity of a live object without id() (which raises an audit event the sandbox tests treat as reaching out):
# object.__hash__ is derived from the address, so it is unique among objects alive at the same time.
_ident = object.__hash__
_CLOCK_EVERY = 512


class _Meter:
    """The running account of one evaluation against its Budget."""

    def __init__(self, budget: Budget):
        self.budget = budget
        self.steps = 0
        self.next_clock = _CLOCK_EVERY
        own = time.monotonic() + budget.seconds
        outer = _outer_deadline.get()
        self.deadline = own if outer is None else min(own, outer)

    def tick(self, n: int = 1) -> None:
        self.steps += n
        if self.steps > self.budget.steps:
            raise _Failure(f"evaluation budget exceeded: more than {self.budget.steps} steps")
        if self.steps >= self.next_clock:
            self.next_clock = self.steps + _CLOCK_EVERY
            if time.monotonic() > self.deadline:
                raise _Failure(f"evaluation budget exceeded: took longer than {self.budget.seconds:g} s")

    def weigh(self, value: Any) -> int:
        """Expanded size of `value` (shared parts counted each time), computed in time proportional to its
        distinct parts; refused as soon as it passes the budget, or when it contains itself."""
        if not isinstance(value, _CONTAINERS):
            return _scalar_weight(value)
        limit = self.budget.size
        memo: dict[int, int] = {}
        active: set[int] = set()
        stack: list[tuple[Any, bool]] = [(value, False)]
        while stack:
            obj, done = stack.pop()
            key = _ident(obj)
            if done:
                active.discard(key)
                total = 1
                for child in _children(obj):
                    total += memo[_ident(child)] if isinstance(child, _CONTAINERS) else _scalar_weight(child)
                if total > limit:
                    raise _Failure(f"evaluation budget exceeded: a value larger than {limit} elements and "
                                   "characters")
                memo[key] = total
                continue
            if key in memo:
                continue
            if key in active:
                raise _Failure("circular structure (a value that contains itself)")
            active.add(key)
            stack.append((obj, True))
            for child in _children(obj):
                self.tick()
                if isinstance(child, _CONTAINERS):
                    if _ident(child) in active:
                        raise _Failure("circular structure (a value that contains itself)")
                    if _ident(child) not in memo:
                        stack.append((child, False))
        return memo[_ident(value)]


def _children(obj: Any) -> Iterator[Any]:
    if isinstance(obj, dict):
        for key, val in obj.items():
            yield key
            yield val
    else:
        yield from obj


def _scalar_weight(value: Any) -> int:
    if isinstance(value, str):
        return len(value) + 1
    if isinstance(value, int) and not isinstance(value, bool):
        return value.bit_length() // 64 + 1
    return 1


_meter: ContextVar[_Meter | None] = ContextVar("itemgate_expression_meter", default=None)


def _weigh(value: Any) -> Any:
    meter = _meter.get()
    if meter is not None:
        meter.weigh(value)
    return value


def _bounded(value: Any) -> Any:
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > MAX_INT_BITS:
        raise _Failure(f"integer larger than {MAX_INT_BITS} bits")
    if isinstance(value, str | list | tuple) and len(value) > MAX_SEQUENCE_LEN:
        raise _Failure(f"value longer than {MAX_SEQUENCE_LEN} items")
    if isinstance(value, _CONTAINERS):
        _weigh(value)
    return value


def _size(value: Any) -> int:
    return len(value) if isinstance(value, str | list | tuple) else 0


def _binary(op: type[ast.operator], left: Any, right: Any) -> Any:
    # Sizes are checked before the operation runs, otherwise the allocation itself is the attack.
    if op is ast.Add:
        if _size(left) + _size(right) > MAX_SEQUENCE_LEN:
            raise _Failure(f"value longer than {MAX_SEQUENCE_LEN} items")
        return _bounded(left + right)
    if op is ast.Sub:
        return _bounded(left - right)
    if op is ast.Mult:
        for sequence, count in ((left, right), (right, left)):
            if isinstance(sequence, str | list | tuple) and isinstance(count, int):
                if len(sequence) * max(count, 0) > MAX_SEQUENCE_LEN:
                    raise _Failure(f"value longer than {MAX_SEQUENCE_LEN} items")
        if isinstance(left, int) and isinstance(right, int):
            if left.bit_length() + right.bit_length() > MAX_INT_BITS + 1:
                raise _Failure(f"integer larger than {MAX_INT_BITS} bits")
        return _bounded(left * right)
    if op is ast.Div:
        return left / right
    if op is ast.FloorDiv:
        return _bounded(left // right)
    if op is ast.Mod:
        # str % args is printf formatting, whose width fields ("%*d") allocate at will; numbers only.
        if isinstance(left, str | bytes):
            raise _Failure("'%' formatting of text is not supported; use an f-string")
        return _bounded(left % right)
    raise _Failure(f"operator {op.__name__}")


class _Interpreter:
    """Walks a checked tree. It only knows allowed node types, so it refuses anything else on its own."""

    def __init__(self, names: Mapping[str, Any], store: MutableMapping[str, Any] | None = None):
        self.names = names
        self.store = store
        meter = _meter.get()
        self.meter = meter if meter is not None else _Meter(_budget)

    # expressions

    def eval(self, node: ast.AST) -> Any:
        self.meter.tick()
        if isinstance(node, ast.Constant):
            if not isinstance(node.value, _CONSTANT_TYPES):
                raise _Refusal(f"constant of type {type(node.value).__name__}")
            return node.value
        if isinstance(node, ast.Name):
            return self.lookup(node.id)
        if isinstance(node, ast.List):
            return _bounded([self.eval(element) for element in node.elts])
        if isinstance(node, ast.Tuple):
            return _bounded(tuple(self.eval(element) for element in node.elts))
        if isinstance(node, ast.Set):
            return _bounded({self.eval(element) for element in node.elts})
        if isinstance(node, ast.Dict):
            result = {}
            for key, value in zip(node.keys, node.values, strict=True):
                if key is None:
                    raise _Refusal("unpacking (**)")
                result[self.eval(key)] = self.eval(value)
            return _bounded(result)
        if isinstance(node, ast.Compare):
            return self.compare(node)
        if isinstance(node, ast.BoolOp):
            return self.boolean(node)
        if isinstance(node, ast.UnaryOp):
            unary = _UNARY_OPS.get(type(node.op))
            if unary is None:
                raise _Refusal(f"operator {type(node.op).__name__}")
            return unary(self.eval(node.operand))
        if isinstance(node, ast.BinOp):
            return _binary(type(node.op), self.eval(node.left), self.eval(node.right))
        if isinstance(node, ast.IfExp):
            return self.eval(node.body) if self.eval(node.test) else self.eval(node.orelse)
        if isinstance(node, ast.Subscript):
            return self.item(self.eval(node.value), self.index(node.slice))
        if isinstance(node, ast.Call):
            return self.call(node)
        if isinstance(node, ast.JoinedStr):
            return self.joined(node)
        raise _refuse_node(node)

    def lookup(self, name: str) -> Any:
        _check_name(name)
        value = self.names.get(name, _MISSING)
        if value is _MISSING:
            raise _Failure(f"unknown variable '{name}'")
        return value

    def compare(self, node: ast.Compare) -> Any:
        left = self.eval(node.left)
        for op, comparator in zip(node.ops, node.comparators, strict=True):
            compare = _COMPARE_OPS.get(type(op))
            if compare is None:
                raise _Refusal(f"comparison {type(op).__name__}")
            right = self.eval(comparator)
            # Python compares containers element by element in C: weighed first, so the cost is bounded.
            _weigh(left)
            _weigh(right)
            # Chained comparisons short-circuit like Python: 1 < x < 3 stops at the first false link.
            if not compare(left, right):
                return False
            left = right
        return True

    def boolean(self, node: ast.BoolOp) -> Any:
        value: Any = None
        for operand in node.values:
            value = self.eval(operand)
            if isinstance(node.op, ast.And) and not value:
                return value
            if isinstance(node.op, ast.Or) and value:
                return value
        return value

    def index(self, node: ast.AST) -> Any:
        if isinstance(node, ast.Slice):
            return slice(*(None if bound is None else self.eval(bound)
                           for bound in (node.lower, node.upper, node.step)))
        return self.eval(node)

    @staticmethod
    def item(container: Any, key: Any) -> Any:
        # Only plain containers are indexed, so no other object's __getitem__ is reachable from a model.
        if isinstance(container, Mapping):
            if key not in container:
                raise _Failure(f"no key {key!r}")
            return container[key]
        if isinstance(container, Sequence):
            return container[key]
        raise _Failure(f"cannot index a value of type {type(container).__name__}")

    def call(self, node: ast.Call) -> Any:
        if not isinstance(node.func, ast.Name):
            raise _Refusal("only calls to named functions are allowed")
        # Functions live in their own namespace: task data can neither shadow nor smuggle one in.
        function = SAFE_FUNCTIONS.get(node.func.id)
        if function is None:
            raise _Refusal(f"call to '{node.func.id}'")
        args = [_weigh(self.eval(arg)) for arg in node.args]
        kwargs = {}
        for keyword in node.keywords:
            if keyword.arg is None or keyword.arg in _REFUSED_KEYWORDS:
                raise _Refusal("keyword argument")
            _check_name(keyword.arg)
            kwargs[keyword.arg] = _weigh(self.eval(keyword.value))
        return _bounded(function(*args, **kwargs))

    def joined(self, node: ast.JoinedStr) -> str:
        parts: list[str] = []
        for part in node.values:
            if isinstance(part, ast.FormattedValue):
                if part.format_spec is not None:
                    raise _Refusal("format spec in f-string")
                value = _weigh(self.eval(part.value))
                if part.conversion == ord("r"):
                    parts.append(repr(value))
                elif part.conversion == ord("a"):
                    parts.append(ascii(value))
                elif part.conversion == ord("s"):
                    parts.append(str(value))
                else:
                    parts.append(format(value, ""))
            else:
                parts.append(str(self.eval(part)))
            if sum(map(len, parts)) > MAX_SEQUENCE_LEN:
                raise _Failure(f"value longer than {MAX_SEQUENCE_LEN} items")
        return "".join(parts)

    # statements

    def run(self, statements: list[ast.stmt]) -> None:
        for statement in statements:
            self.statement(statement)

    def run_script(self, statements: list[ast.stmt]) -> None:
        self.run(statements)
        # What a script leaves in task data is saved with the instance: no value may have grown past the
        # budget through an alias, nor contain itself (it could not be saved at all).
        if self.store is not None:
            for value in list(self.store.values()):
                _weigh(value)

    def statement(self, node: ast.stmt) -> None:
        self.meter.tick()
        if isinstance(node, ast.Assign):
            value = self.eval(node.value)
            for target in node.targets:
                self.assign(target, value)
        elif isinstance(node, ast.AugAssign):
            self.augmented(node)
        elif isinstance(node, ast.Expr):
            if isinstance(node.value, ast.Call):
                self.call(node.value)
        elif isinstance(node, ast.If):
            self.run(node.body if self.eval(node.test) else node.orelse)
        elif isinstance(node, ast.Pass):
            pass
        else:
            raise _refuse_node(node)

    def container_for(self, target: ast.Subscript) -> tuple[Any, Any]:
        container = self.eval(target.value)
        if not isinstance(container, MutableMapping | MutableSequence):
            raise _Failure(f"cannot assign into a value of type {type(container).__name__}")
        return container, self.index(target.slice)

    def assign(self, target: ast.AST, value: Any) -> None:
        if self.store is None:
            raise _Refusal("assignment inside an expression")
        if isinstance(target, ast.Name):
            _check_name(target.id)
            self.store[target.id] = value
        elif isinstance(target, ast.Subscript):
            container, key = self.container_for(target)
            container[key] = value
        else:
            raise _Refusal("can only assign to a variable or an item of one")

    def augmented(self, node: ast.AugAssign) -> None:
        target = node.target
        if self.store is None:
            raise _Refusal("assignment inside an expression")
        if isinstance(target, ast.Name):
            current = self.lookup(target.id)
            self.store[target.id] = _binary(type(node.op), current, self.eval(node.value))
        elif isinstance(target, ast.Subscript):
            container, key = self.container_for(target)
            current = self.item(container, key)
            container[key] = _binary(type(node.op), current, self.eval(node.value))
        else:
            raise _Refusal("can only assign to a variable or an item of one")


def _run(source: str, action: Callable[[], Any]) -> Any:
    """Turn every failure inside the interpreter into one of our two error types: fail closed."""
    token = _meter.set(_Meter(_budget))
    try:
        return action()
    except ExpressionProblem:
        raise
    except _Refusal as refusal:
        raise UnsafeExpression(source, refusal.reason) from None
    except _Failure as failure:
        raise ExpressionError(source, failure.reason) from None
    except RecursionError:
        raise ExpressionError(source, "nested too deeply") from None
    except MemoryError:
        raise ExpressionError(source, "evaluation budget exceeded: out of memory") from None
    except Exception as err:  # any runtime fault of a model expression is reported the same way
        raise ExpressionError(source, f"{type(err).__name__}: {err}") from err
    finally:
        _meter.reset(token)


def evaluate(source: str, data: Mapping[str, Any]) -> Any:
    """Value of an expression over task data; UnsafeExpression if refused, ExpressionError if it fails."""
    tree = _checked(source, "eval", None)
    assert isinstance(tree, ast.Expression)
    return _run(source, lambda: _Interpreter(data).eval(tree.body))


def execute(source: str, data: dict[str, Any], external: Mapping[str, Any] | None = None) -> None:
    """Run a script over task data, assigning into `data`; `external` names (data objects) are read-only."""
    tree = _checked(source, "exec", None)
    assert isinstance(tree, ast.Module)
    names: Mapping[str, Any] = ChainMap(data, dict(external)) if external else data
    _run(source, lambda: _Interpreter(names, store=data).run_script(tree.body))


# --- SpiffWorkflow integration ------------------------------------------------------------------------------


class RestrictedEnvironment(BasePythonScriptEngineEnvironment):
    """SpiffWorkflow environment that runs model text through this module instead of eval/exec."""

    def __init__(self) -> None:
        # Spiff's environment globals would be callables reachable from models; there are none here.
        super().__init__({})

    def evaluate(self, expression: str, context: Mapping[str, Any],
                 external_context: Mapping[str, Any] | None = None) -> Any:
        # Task data wins over data objects, as in Spiff's own TaskDataEnvironment.
        names: Mapping[str, Any] = context
        if external_context:
            names = ChainMap(dict(context), dict(external_context))
        return evaluate(expression, names)

    def execute(self, script: str, context: dict[str, Any],
                external_context: Mapping[str, Any] | None = None) -> bool:
        execute(script, context, external_context)
        return True

    def call_service(self, context: Mapping[str, Any], **kwargs: Any) -> Any:
        raise NotImplementedError("service tasks are not supported by ItemGate's restricted script engine")


def _check_timer(task: Any, expression: str, value: Any) -> None:
    """A timer's expression must yield a sane ISO 8601 value: checked here, before SpiffWorkflow parses it (an
    absurd duration would loop in the library; garbage would fail on every later engine step)."""
    spec: Any = getattr(task, "task_spec", None)
    kind = timer_kind(spec)
    if kind is None or getattr(spec.event_definition, "expression", None) != expression:
        return
    try:
        check_timer_value(kind, value)
    except TimerValueError as err:
        raise ExpressionError(expression, f"timer {kind}: {err}") from None


def _element_id(task: Any) -> str | None:
    spec = getattr(task, "task_spec", None)
    element = getattr(spec, "bpmn_id", None) or getattr(spec, "name", None)
    return str(element) if element is not None else None


class RestrictedScriptEngine(PythonScriptEngine):
    """Spiff's script engine with the restricted environment, element-located errors and no services."""

    def __init__(self) -> None:
        super().__init__(environment=RestrictedEnvironment())

    def validate(self, expression: str) -> None:
        # Spiff's DMN engine calls validate() and catches SyntaxError to decide whether to prefix "v ", so a
        # parse failure must stay a SyntaxError here; only parseable text gets the policy check.
        ast.parse(_normalise(expression, "eval"), mode="eval")
        check_expression(expression)

    def evaluate(self, task: Any, expression: str, external_context: Mapping[str, Any] | None = None) -> Any:
        try:
            value = self.environment.evaluate(expression, task.data, external_context)
            _check_timer(task, expression, value)
            return value
        except ExpressionProblem as err:
            located = err.with_element(_element_id(task))
            raise WorkflowTaskException(str(located), task=task, exception=located) from located

    def execute(self, task: Any, script: str, external_context: Mapping[str, Any] | None = None) -> bool:
        try:
            return bool(self.environment.execute(script, task.data, external_context))
        except ExpressionProblem as err:
            located = err.with_element(_element_id(task))
            raise WorkflowTaskException(str(located), task=task, exception=located) from located

    def call_service(self, task: Any, **kwargs: Any) -> Any:
        # Spiff 3.2.0's own call_service refers to an undefined `script` when the call fails, turning every
        # service error into a NameError; say plainly that services are not available instead.
        raise WorkflowTaskException(
            f"element '{_element_id(task)}': service tasks are not supported", task=task,
            exception=NotImplementedError("service tasks are not supported"))


def restricted_script_engine() -> PythonScriptEngine:
    """The script engine every BpmnWorkflow in ItemGate must be created (and re-attached) with."""
    return RestrictedScriptEngine()

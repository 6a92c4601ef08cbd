"""Tests for the restricted evaluator that replaces SpiffWorkflow's eval/exec for model expressions."""
from __future__ import annotations

import sys
from typing import Any

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from SpiffWorkflow.bpmn.exceptions import WorkflowTaskException
from SpiffWorkflow.bpmn.workflow import BpmnWorkflow
from SpiffWorkflow.spiff.parser import SpiffBpmnParser

from engine.runtime.expressions import (
    MAX_SEQUENCE_LEN,
    ExpressionError,
    RestrictedEnvironment,
    UnsafeExpression,
    check_expression,
    check_script,
    evaluate,
    execute,
    restricted_script_engine,
)

DATA: dict[str, Any] = {
    "decision": "approve",
    "mode": "new",
    "channels": ["pc", "mobile"],
    "departments": ["税务", "社保", "公安"],
    "attrs": {"data_quality": True, "level": 2},
    "count": 3,
}


# --- allowed ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ('decision == "approve"', True),
        ('mode == "new" and "pc" in channels', True),
        ("len(departments) >= 3", True),
        ('get(attrs, "data_quality", False)', True),
        ('get(attrs, "missing", False)', False),
        ('get(get(attrs, "nested"), "x", 0)', 0),
        ('attrs["level"] * 2 + 1', 5),
        ("departments[0]", "税务"),
        ("departments[-1]", "公安"),
        ("departments[1:]", ["社保", "公安"]),
        ("1 < count <= 3", True),
        ('"x" not in channels and decision is not None', True),
        ('"a" if count > 2 else "b"', "a"),
        ("not (count % 2 == 0)", True),
        ("count // 2 - 7 / 2", -2.5),
        ("max(1, count) + min([4, 5]) + abs(-1) + sum([1, 2]) + round(2.4)", 3 + 4 + 1 + 3 + 2),
        ('int("7") + float("0.5") + len(str(10))', 9.5),
        ("sorted(departments, reverse=True)[0]", "税务"),
        ("any([False, count]) and all([1, True]) and bool(channels)", True),
        ('f"{mode}-{count}!"', "new-3!"),
        ('{"k": [1, (2, 3)], "s": {4}}', {"k": [1, (2, 3)], "s": {4}}),
        ("decision", "approve"),
        ("   count   \n", 3),  # BPMN XML indents element text; it must still evaluate
    ],
)
def test_allowed_expressions(source: str, expected: Any) -> None:
    check_expression(source, "Gateway_1")
    assert evaluate(source, DATA) == expected


def test_and_or_return_operands_like_python() -> None:
    assert evaluate('count and "yes"', DATA) == "yes"
    assert evaluate('"" or count', DATA) == 3


def test_function_names_are_not_values_and_data_cannot_shadow_them() -> None:
    # Functions live in their own namespace: `len` as a value is just an unknown variable...
    with pytest.raises(ExpressionError, match="unknown variable 'len'"):
        evaluate("len", DATA)
    # ...and a task-data entry named like a function does not replace the function.
    assert evaluate("len(len)", {"len": [1, 2]}) == 2


# --- refused ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize(
    ("source", "reason"),
    [
        ("().__class__.__base__.__subclasses__()", "attribute access"),
        ('__import__("os").system("id")', "attribute access"),
        ('__import__("os")', "name '__import__' starts with '_'"),
        ('open("/etc/passwd")', "call to 'open'"),
        ('getattr(x, "__class__")', "call to 'getattr'"),
        ('eval("1")', "call to 'eval'"),
        ("[c for c in ()]", "comprehension"),
        ("(c for c in ())", "comprehension"),
        ("lambda: 1", "lambda"),
        ("x._secret", "attribute access"),
        ("(1).real", "attribute access"),
        ("_secret", "name '_secret' starts with '_'"),
        ("(y := 1)", "assignment expression"),
        ("[*channels]", "unpacking"),
        ("{**attrs}", "unpacking"),
        ("len(*channels)", "unpacking"),
        ("2 ** 10", "operator Pow"),
        ("~count", "operator Invert"),
        ("count << 1", "operator LShift"),
        ('b"bytes"', "constant of type bytes"),
        ("...", "constant of type ellipsis"),
        ('f"{count:>999999999}"', "format spec"),
        ("sorted(channels, key=len)", "keyword argument 'key'"),
        ("len(**attrs)", "unpacking"),
        ("channels[0]()", "only calls to named functions"),
        ("x = 1", "syntax error"),
        ("decision ==", "syntax error"),
        ("", "empty"),
    ],
)
def test_refused_expressions(source: str, reason: str) -> None:
    with pytest.raises(UnsafeExpression) as refused:
        check_expression(source, "Gateway_1")
    assert reason in refused.value.reason
    assert refused.value.element_id == "Gateway_1"
    assert refused.value.expression == source
    assert str(refused.value).startswith("element 'Gateway_1': expression ")
    # evaluate() checks first, so the same text never runs.
    with pytest.raises(UnsafeExpression):
        evaluate(source, DATA)


def test_message_reads_like_the_contract() -> None:
    with pytest.raises(UnsafeExpression) as refused:
        check_expression("x.__class__", "Gateway_1")
    assert str(refused.value) == "element 'Gateway_1': expression 'x.__class__' not allowed: attribute access"


@pytest.mark.parametrize(
    ("script", "reason"),
    [
        ("import os", "import"),
        ("from os import system", "import"),
        ("for i in channels:\n    pass", "loop"),
        ("while True:\n    pass", "loop"),
        ("def f():\n    return 1", "function definition"),
        ("class A:\n    pass", "class definition"),
        ("a, b = 1, 2", "unpacking assignment"),
        ("x.y = 1", "can only assign"),
        ("_hidden = 1", "starts with '_'"),
        ("x = ().__class__", "attribute access"),
        ("try:\n    x = 1\nexcept Exception:\n    pass", "try statement"),
        ("del count", "del statement"),
        ("with open('f') as f:\n    pass", "with statement"),
        ("count", "expression statement has no effect"),
        ("x: int = 1", "annotated assignment"),
        ("raise ValueError()", "raise statement"),
        ("global x", "global statement"),
    ],
)
def test_refused_scripts(script: str, reason: str) -> None:
    with pytest.raises(UnsafeExpression) as refused:
        check_script(script, "Activity_1")
    assert reason in refused.value.reason
    assert refused.value.element_id == "Activity_1"
    data = dict(DATA)
    with pytest.raises(UnsafeExpression):
        execute(script, data)
    assert data == DATA


def test_non_text_is_refused() -> None:
    with pytest.raises(UnsafeExpression, match="must be text"):
        check_expression(["x"], "Gateway_1")  # type: ignore[arg-type]
    with pytest.raises(UnsafeExpression, match="must be text"):
        check_expression(1, "Gateway_1")  # type: ignore[arg-type]


# --- running ------------------------------------------------------------------------------------------------

def test_script_assigns_into_task_data() -> None:
    data: dict[str, Any] = {"a": 1, "row": {"n": 1}, "items": [1, 2]}
    execute(
        """
        x = a + 1
        y = z = "both"
        row["n"] += 10
        items[0] = x
        if x > 1:
            result = "big"
        else:
            result = "small"
        len(items)
        "a string statement is a comment"
        pass
        """,
        data,
    )
    assert data == {"a": 1, "row": {"n": 11}, "items": [2, 2], "x": 2, "y": "both", "z": "both",
                    "result": "big"}


def test_script_reads_external_names_but_writes_task_data() -> None:
    data: dict[str, Any] = {}
    external = {"obj": 5}
    execute("copy = obj * 2", data, external)
    assert data == {"copy": 10}
    assert external == {"obj": 5}


@pytest.mark.parametrize(
    ("source", "reason"),
    [
        ("nope", "unknown variable 'nope'"),
        ('count + "a"', "TypeError"),
        ("count / 0", "ZeroDivisionError"),
        ('attrs["missing"]', "no key 'missing'"),
        ("channels[10]", "IndexError"),
        ("count[0]", "cannot index a value of type int"),
        ('get(channels, "x")', "needs a mapping"),
        ('"%s" % count', "formatting of text"),
        (f'"a" * {MAX_SEQUENCE_LEN + 1}', "longer than"),
        (f"[0] * {MAX_SEQUENCE_LEN + 1}", "longer than"),
        (f"{2 ** 4000} * {2 ** 4000}", "integer larger"),
        ('int("x")', "ValueError"),
    ],
)
def test_runtime_failures_are_expression_errors(source: str, reason: str) -> None:
    with pytest.raises(ExpressionError) as failed:
        evaluate(source, DATA)
    assert reason in failed.value.reason


def test_doubling_in_a_script_is_bounded() -> None:
    script = 'x = "a" * 1000\n' + "x = x + x\n" * 40
    with pytest.raises(ExpressionError, match="longer than"):
        execute(script, {})


def test_callables_in_task_data_are_never_called() -> None:
    called: list[str] = []
    data = {"f": lambda *a, **k: called.append("f"), "xs": [3, 1]}
    for source in ("f()", "f(1)", "sorted(xs, key=f)", "max(xs, key=f)"):
        with pytest.raises(UnsafeExpression):
            evaluate(source, data)
    assert called == []


def test_parsed_trees_are_cached() -> None:
    from engine.runtime import expressions

    source = 'decision == "approve" and count > 2'
    evaluate(source, DATA)
    before = expressions._compile.cache_info().hits
    evaluate(source, DATA)
    assert expressions._compile.cache_info().hits == before + 1


def test_environment_prefers_task_data_over_data_objects() -> None:
    env = RestrictedEnvironment()
    assert env.evaluate("x + y", {"x": 1}, {"x": 100, "y": 10}) == 11
    context: dict[str, Any] = {"x": 1}
    assert env.execute("z = x + y", context, {"y": 2}) is True
    assert context == {"x": 1, "z": 3}
    with pytest.raises(NotImplementedError, match="service tasks"):
        env.call_service(context, operation_name="anything")


def test_engine_validate_keeps_syntax_errors_for_dmn() -> None:
    # Spiff's DMN engine calls validate() and relies on SyntaxError to retry "v <text>" for "< 5" entries.
    engine = restricted_script_engine()
    with pytest.raises(SyntaxError):
        engine.validate("< 5")
    engine.validate("v < 5")
    with pytest.raises(UnsafeExpression, match="attribute access"):
        engine.validate("v.__class__")


# --- property: nothing outside the allow-list is ever reached -----------------------------------------------

class Trap:
    """A task-data value that records any attribute look-up or call made on it."""

    touched: list[str] = []

    def __getattr__(self, name: str) -> Any:
        Trap.touched.append(f"getattr {name}")
        raise AttributeError(name)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        Trap.touched.append("call")
        return self


def _spy(*args: Any, **kwargs: Any) -> None:
    Trap.touched.append("spy called")


# Audit hooks cannot be removed, so this one is installed once and only listens while `_AUDITING` is set.
_AUDITING: list[bool] = []
_AUDITED: list[str] = []


def _expected(event: str, args: tuple[Any, ...]) -> bool:
    # `compile` is ast.parse itself (the checker parses). On a SyntaxError CPython 3.11 tries to open the
    # pseudo file name ("<unknown>") to quote the offending line; that is not the evaluator reaching out.
    # Hypothesis's failure explainer traces frames (object.__getattr__ on f_code) while a failure is shrunk.
    if event == "compile":
        return True
    if event == "open" and isinstance(args[0], str) and args[0].startswith("<"):
        return True
    return event == "object.__getattr__" and type(args[0]).__name__ == "frame"


def _audit(event: str, args: tuple[Any, ...]) -> None:
    if _AUDITING and not _expected(event, args):
        _AUDITED.append(f"{event} {args!r:.200}")


sys.addaudithook(_audit)

# Dangerous objects sit in the data so the generated text has something to reach for. (Not the whole
# builtins dict: printing it runs `license.__repr__`, which reads a file; that is the value's doing, not the
# evaluator's.)
HOSTILE_DATA: dict[str, Any] = {
    "a": 1, "s": "text", "xs": [1, 2], "m": {"k": 1}, "trap": Trap(), "spy": _spy, "os": sys.modules["os"],
    "builtins": {"eval": eval, "exec": exec, "open": open, "import": __import__, "getattr": getattr},
}

leaves = st.sampled_from(
    ["a", "s", "xs", "m", "trap", "spy", "os", "builtins", "__import__", "_x", "open", "eval", "len",
     "getattr", "type", "1", "0", "-1", "'k'", "'__class__'", "None", "True", "()", "[]", "{}", "1.5"]
)
attributes = st.sampled_from(
    ["__class__", "__base__", "__subclasses__", "__globals__", "system", "real", "k"]
)
functions = st.sampled_from(["len", "str", "get", "sorted", "max", "sum", "int", "open", "eval", "getattr",
                             "__import__", "spy", "trap", "type", "vars", "exec"])


def _combine(children: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    binary = st.tuples(children, st.sampled_from(["+", "-", "*", "/", "//", "%", "**", "==", "<", "in",
                                                  "and", "or", "is", "not in", "|", "@"]), children)
    return st.one_of(
        binary.map(lambda t: f"({t[0]}) {t[1]} ({t[2]})"),
        st.tuples(children, attributes).map(lambda t: f"({t[0]}).{t[1]}"),
        st.tuples(functions, st.lists(children, max_size=3)).map(lambda t: f"{t[0]}({', '.join(t[1])})"),
        st.tuples(children, children).map(lambda t: f"({t[0]})[{t[1]}]"),
        st.tuples(children, children).map(lambda t: f"[c for c in ({t[0]}) if {t[1]}]"),
        children.map(lambda c: f"(lambda: {c})()"),
        children.map(lambda c: f"not ({c})"),
        children.map(lambda c: f'f"{{{c}}}"'),
        st.tuples(children, children, children).map(lambda t: f"({t[0]}) if ({t[1]}) else ({t[2]})"),
        st.lists(children, max_size=3).map(lambda xs: f"[{', '.join(xs)}]"),
        st.tuples(children, children).map(lambda t: f"{{{t[0]}: {t[1]}}}"),
    )


expressions_strategy = st.recursive(leaves, _combine, max_leaves=12)


def _assert_contained(run: Any) -> None:
    Trap.touched.clear()
    _AUDITED.clear()
    _AUDITING.append(True)
    try:
        run()
        event("ran")
    except UnsafeExpression:
        event("refused")
    except ExpressionError:
        event("failed at run time")
    finally:
        _AUDITING.clear()
    assert Trap.touched == []
    assert _AUDITED == []


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(expressions_strategy)
def test_generated_expressions_never_escape(source: str) -> None:
    _assert_contained(lambda: evaluate(source, HOSTILE_DATA))


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["x", "m['k']", "xs[0]", "_y", "trap.z", "x, y"]),
                          expressions_strategy),
                min_size=1, max_size=4))
def test_generated_scripts_never_escape(assignments: list[tuple[str, str]]) -> None:
    script = "\n".join(f"{target} = {value}" for target, value in assignments)
    _assert_contained(lambda: execute(script, dict(HOSTILE_DATA, m={"k": 1}, xs=[1, 2])))


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=60))
def test_arbitrary_text_never_escapes(source: str) -> None:
    _assert_contained(lambda: evaluate(source, HOSTILE_DATA))
    _assert_contained(lambda: execute(source, dict(HOSTILE_DATA)))


def test_the_audit_hook_would_notice_an_escape() -> None:
    # Guards the property tests above against silently checking nothing.
    _AUDITED.clear()
    _AUDITING.append(True)
    try:
        __import__("os").listdir(".")
    finally:
        _AUDITING.clear()
    assert _AUDITED


# --- end to end with SpiffWorkflow --------------------------------------------------------------------------

BPMN = """<?xml version="1.0" encoding="UTF-8"?>
<bpmn:definitions xmlns:bpmn="http://www.omg.org/spec/BPMN/20100524/MODEL"
                  xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"
                  id="Definitions_1" targetNamespace="http://bpmn.io/schema/bpmn">
  <bpmn:process id="Process_1" isExecutable="true">
    <bpmn:startEvent id="Start_1"><bpmn:outgoing>Flow_1</bpmn:outgoing></bpmn:startEvent>
    <bpmn:scriptTask id="Script_1" name="Increment">
      <bpmn:incoming>Flow_1</bpmn:incoming>
      <bpmn:outgoing>Flow_2</bpmn:outgoing>
      <bpmn:script>x = a + 1</bpmn:script>
    </bpmn:scriptTask>
    <bpmn:exclusiveGateway id="Gateway_1"><bpmn:incoming>Flow_2</bpmn:incoming>
      <bpmn:outgoing>Flow_big</bpmn:outgoing><bpmn:outgoing>Flow_small</bpmn:outgoing>
    </bpmn:exclusiveGateway>
    <bpmn:sequenceFlow id="Flow_1" sourceRef="Start_1" targetRef="Script_1" />
    <bpmn:sequenceFlow id="Flow_2" sourceRef="Script_1" targetRef="Gateway_1" />
    <bpmn:sequenceFlow id="Flow_big" sourceRef="Gateway_1" targetRef="End_big">
      <bpmn:conditionExpression xsi:type="bpmn:tFormalExpression">{big}</bpmn:conditionExpression>
    </bpmn:sequenceFlow>
    <bpmn:sequenceFlow id="Flow_small" sourceRef="Gateway_1" targetRef="End_small">
      <bpmn:conditionExpression xsi:type="bpmn:tFormalExpression">x &lt;= 1</bpmn:conditionExpression>
    </bpmn:sequenceFlow>
    <bpmn:endEvent id="End_big"><bpmn:incoming>Flow_big</bpmn:incoming></bpmn:endEvent>
    <bpmn:endEvent id="End_small"><bpmn:incoming>Flow_small</bpmn:incoming></bpmn:endEvent>
  </bpmn:process>
</bpmn:definitions>
"""


def _workflow(big_condition: str, a: int) -> BpmnWorkflow:
    parser = SpiffBpmnParser()
    parser.add_bpmn_str(BPMN.format(big=big_condition).encode(), filename="inline.bpmn")
    workflow = BpmnWorkflow(parser.get_spec("Process_1"), script_engine=restricted_script_engine())
    # Data set on the root task flows down to the tasks created after it.
    workflow.get_tasks()[0].data["a"] = a
    return workflow


def _finished_end(workflow: BpmnWorkflow) -> set[str]:
    from SpiffWorkflow.util.task import TaskState

    return {t.task_spec.bpmn_id for t in workflow.get_tasks(state=TaskState.COMPLETED)
            if t.task_spec.bpmn_id and t.task_spec.bpmn_id.startswith("End_")}


@pytest.mark.parametrize(("a", "end"), [(5, "End_big"), (0, "End_small")])
def test_workflow_runs_scripts_and_gateways_through_the_restricted_engine(a: int, end: str) -> None:
    workflow = _workflow("x &gt; 1", a)
    workflow.do_engine_steps()
    assert workflow.is_completed()
    assert _finished_end(workflow) == {end}
    assert workflow.last_task.data["x"] == a + 1


def test_workflow_with_escape_condition_fails_closed() -> None:
    workflow = _workflow("().__class__.__base__.__subclasses__()", 5)
    with pytest.raises(WorkflowTaskException) as failed:
        workflow.do_engine_steps()
    refusal = failed.value.__cause__
    assert isinstance(refusal, UnsafeExpression)
    assert refusal.element_id == "Gateway_1"
    assert "element 'Gateway_1'" in str(failed.value)
    assert "attribute access" in str(failed.value)
    assert not workflow.is_completed()


MULTI_INSTANCE = """<?xml version="1.0" encoding="UTF-8"?>
<bpmn:definitions xmlns:bpmn="http://www.omg.org/spec/BPMN/20100524/MODEL" id="Definitions_2"
                  targetNamespace="http://bpmn.io/schema/bpmn">
  <bpmn:process id="Process_2" isExecutable="true">
    <bpmn:startEvent id="Start_1"><bpmn:outgoing>Flow_1</bpmn:outgoing></bpmn:startEvent>
    <bpmn:scriptTask id="Each_1"><bpmn:incoming>Flow_1</bpmn:incoming><bpmn:outgoing>Flow_2</bpmn:outgoing>
      <bpmn:multiInstanceLoopCharacteristics isSequential="true">
        {loop}
        <bpmn:loopDataOutputRef>labels</bpmn:loopDataOutputRef>
        <bpmn:inputDataItem id="department" name="department" />
        <bpmn:outputDataItem id="label" name="label" />
        <bpmn:completionCondition>{condition}</bpmn:completionCondition>
      </bpmn:multiInstanceLoopCharacteristics>
      <bpmn:script>label = f"{{department}}!"</bpmn:script>
    </bpmn:scriptTask>
    <bpmn:endEvent id="End_1"><bpmn:incoming>Flow_2</bpmn:incoming></bpmn:endEvent>
    <bpmn:sequenceFlow id="Flow_1" sourceRef="Start_1" targetRef="Each_1" />
    <bpmn:sequenceFlow id="Flow_2" sourceRef="Each_1" targetRef="End_1" />
  </bpmn:process>
</bpmn:definitions>
"""


@pytest.mark.parametrize(
    ("loop", "condition", "labels"),
    [
        # loopDataInputRef is resolved by name from task data by Spiff (no expression involved)...
        ("<bpmn:loopDataInputRef>departments</bpmn:loopDataInputRef>", "False", ["税务!", "社保!", "公安!"]),
        # ...loopCardinality and completionCondition are expressions and go through the restricted engine.
        ("<bpmn:loopCardinality>len(departments)</bpmn:loopCardinality>", "False", ["0!", "1!", "2!"]),
        ("<bpmn:loopDataInputRef>departments</bpmn:loopDataInputRef>", 'label == "社保!"',
         ["税务!", "社保!"]),
    ],
)
def test_multi_instance_expressions_use_the_restricted_engine(loop: str, condition: str,
                                                              labels: list[str]) -> None:
    parser = SpiffBpmnParser()
    xml = MULTI_INSTANCE.format(loop=loop, condition=condition.replace('"', "&quot;"))
    parser.add_bpmn_str(xml.encode(), filename="multi.bpmn")
    workflow = BpmnWorkflow(parser.get_spec("Process_2"), script_engine=restricted_script_engine())
    workflow.get_tasks()[0].data["departments"] = ["税务", "社保", "公安"]
    workflow.do_engine_steps()
    assert workflow.is_completed()
    assert workflow.last_task.data["labels"] == labels


def test_multi_instance_cardinality_escape_fails_closed() -> None:
    parser = SpiffBpmnParser()
    loop = "<bpmn:loopCardinality>len(departments.__class__.__mro__)</bpmn:loopCardinality>"
    parser.add_bpmn_str(MULTI_INSTANCE.format(loop=loop, condition="False").encode(), filename="multi.bpmn")
    workflow = BpmnWorkflow(parser.get_spec("Process_2"), script_engine=restricted_script_engine())
    workflow.get_tasks()[0].data["departments"] = ["税务"]
    with pytest.raises(WorkflowTaskException, match="element 'Each_1'.*attribute access"):
        workflow.do_engine_steps()

"""SpiffWorkflow 3.2 adapter: parse models once per content hash, (de)serialize instance state."""
from __future__ import annotations

import hashlib
import json
import threading
import uuid
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Protocol

from lxml import etree
from SpiffWorkflow.bpmn.parser.ValidationException import ValidationException
from SpiffWorkflow.bpmn.serializer.default.workflow import BpmnWorkflowConverter
from SpiffWorkflow.bpmn.serializer.workflow import BpmnWorkflowSerializer
from SpiffWorkflow.bpmn.specs.mixins.multiinstance_task import LoopTask
from SpiffWorkflow.bpmn.util.task import BpmnTaskIterator
from SpiffWorkflow.bpmn.workflow import BpmnWorkflow
from SpiffWorkflow.spiff.parser.process import SpiffBpmnParser
from SpiffWorkflow.spiff.serializer.config import SPIFF_CONFIG
from SpiffWorkflow.task import Task
from SpiffWorkflow.util.task import TaskIterator, TaskState

from engine import caching
from engine.runtime.expressions import restricted_script_engine

# The serialized format we write and accept. SpiffWorkflow's 1.4→1.5 migration crashes with
# subprocesses, so we never migrate: a state written by another format version is refused.
STATE_FORMAT = "itemgate-spiff-3.2.0/1"

_current_specs = threading.local()


class ModelError(ValueError):
    """A BPMN file that cannot be parsed or does not contain the expected process; `element` (id, else name)
    and `problem` say where and what, when the parser said so."""

    def __init__(self, message: str, element: str | None = None, problem: str | None = None):
        super().__init__(message)
        self.element = element
        self.problem = problem or message


# What to change, for the parser refusals people meet most (the library says what, not how to fix it).
_PARSER_HINTS = {
    "Non-default exclusive outgoing sequence flow without condition":
        "give this sequence flow a condition, or make it the gateway's default flow",
    "Cannot resolve dataInputAssociation":
        "its dataInputAssociation names a data object or data store this process does not declare; declare it "
        "or remove the association",
    "Cannot resolve dataOutputAssociation":
        "its dataOutputAssociation names a data object or data store this process does not declare; declare it "
        "or remove the association",
}


def _parser_problem(exc: Exception) -> tuple[str | None, str]:
    """(element id or name, message) of a library parse error; object reprs (<Element … at 0x…>) dropped."""
    import re

    element = (getattr(exc, "id", "") or getattr(exc, "name", "") or None) if isinstance(exc, ValidationException) \
        else None
    text = re.sub(r"\s*<Element [^>]*>", "", str(exc.args[0] if exc.args else exc)).strip()
    for prefix, hint in _PARSER_HINTS.items():
        if text.startswith(prefix):
            text = f"{prefix}: {hint}"
            break
    name = getattr(exc, "name", "") if isinstance(exc, ValidationException) else ""
    if name and element and name != element:
        text = f"{text} (element name {name!r})"
    return (str(element) if element else None), text


@dataclass(frozen=True)
class ParsedModel:
    process_id: str
    sha256: str
    spec: Any
    subprocess_specs: dict[str, Any]
    xml: str


class _SpecFreeWorkflowConverter(BpmnWorkflowConverter):
    """Stores the instance without its spec: specs live once per definition, keyed by hash."""

    def to_dict(self, workflow: BpmnWorkflow) -> dict[str, Any]:
        dct = super(BpmnWorkflowConverter, self).to_dict(workflow)
        dct["subprocesses"] = self.mapping_to_dict(workflow.subprocesses)
        dct["bpmn_events"] = self.registry.convert(workflow.bpmn_events)
        return dct

    def from_dict(self, dct: dict[str, Any]) -> BpmnWorkflow:
        model: ParsedModel = _current_specs.model
        dct["spec"] = None
        dct.pop("subprocess_specs", None)
        workflow = self.target_class(model.spec, model.subprocess_specs, deserializing=True)
        dct.pop("spec")
        from uuid import UUID

        workflow.tasks = self.mapping_from_dict(dct["tasks"], UUID, workflow=workflow)
        workflow.task_tree = workflow.tasks.get(UUID(dct["root"]))
        self.set_default_attributes(workflow, dct)
        self.subprocesses_from_dict(dct["subprocesses"], workflow)
        workflow.bpmn_events = self.registry.restore(dct.pop("bpmn_events", []))
        return workflow


def _make_serializer() -> BpmnWorkflowSerializer:
    config = dict(SPIFF_CONFIG)
    config[BpmnWorkflow] = _SpecFreeWorkflowConverter
    return BpmnWorkflowSerializer(BpmnWorkflowSerializer.configure(config))


def _is_descendant_of(self: Task, task: Task) -> bool:
    """Iterative replacement for SpiffWorkflow 3.2.0's recursive Task.is_descendant_of.

    Every return loop makes the task tree one level deeper, and the library walks the ancestors by
    recursion: after about 195 returns an item hit Python's recursion limit and could never advance
    again (422 on every completion). Same answer, no recursion.
    """
    node = self.parent
    while node is not None:
        if node == task:
            return True
        node = node.parent
    return False


# TaskIterator stops descending at depth 1000 by default and says nothing: after ~200 return loops the
# READY tasks sit deeper than that, get_tasks() no longer sees them, and the item silently freezes.
_task_iterator_init = TaskIterator.__init__


def _unbounded_iterator_init(self: TaskIterator, task: Task, end_at_spec: Any = None,
                             max_depth: int | None = None, *args: Any, **kwargs: Any) -> None:
    _task_iterator_init(self, task, end_at_spec, UNBOUNDED_DEPTH if max_depth is None or max_depth == 1000
                        else max_depth, *args, **kwargs)
    self._pending = deque([(task, 0)])  # type: ignore[attr-defined]


UNBOUNDED_DEPTH = 10**9


# The library's iterators keep the tasks still to visit in a list: depth-first they prepend each node's children
# (`children + task_list`, a copy of the whole list) and pop(0), and after every leaf they walk up the ancestors
# to recompute the depth. A returned item's tree is a chain that gets one level deeper per return, with a
# pending sibling at every level, so each walk costs time proportional to the history: quadratic per completion.
# Same visiting order, same filters; each entry carries its depth, and a deque makes both ends O(1) (the bare
# step at 1,000 tasks went from ~480 to ~365 ms; the rest of its growth is the library's own).
def _visit(self: Any, task: Task, depth: int, children: list[Task]) -> None:
    if self.depth_first:
        self._pending.extendleft((child, depth + 1) for child in reversed(children))
    else:
        self._pending.extend((child, depth + 1) for child in children)


def _task_iterator_next(self: Any) -> Task:
    if not self._pending:
        raise StopIteration()
    task, depth = self._pending.popleft()
    self.depth = depth
    if task._children and task.state >= self.min_state and depth < self.max_depth and \
            task.task_spec.name != self.end_at_spec:
        _visit(self, task, depth, task.children)
    return task


def _bpmn_task_iterator_next(self: Any) -> Task:
    if not self._pending:
        raise StopIteration()
    task, depth = self._pending.popleft()
    self.depth = depth
    subprocess = task.workflow.top_workflow.subprocesses.get(task.id)
    if (task._children or subprocess is not None) and (task.state >= self.min_state or subprocess is not None) \
            and depth < self.max_depth and task.task_spec.name != self.end_at_spec:
        # As the library: do not descend into a completed subprocess to look for unfinished tasks.
        if subprocess is None or self.skip_subprocesses or (
                task.state >= TaskState.FINISHED_MASK and self.task_filter.state <= TaskState.FINISHED_MASK):
            inner = []
        else:
            inner = [subprocess.task_tree]
        _visit(self, task, depth, inner + task.children if self.depth_first else task.children + inner)
    return task


LIBRARY_NEXT = (TaskIterator._next, BpmnTaskIterator._next)  # the originals, for the equivalence test
_INSTALL_LOCK = threading.Lock()
_installed = False


def install() -> None:
    """Apply the library patches above (iterative ancestry, unbounded and linear task iteration). Called once by
    the app factory (and by anything running workflows without an app); idempotent and thread-safe."""
    global _installed
    with _INSTALL_LOCK:
        if _installed:
            return
        Task.is_descendant_of = _is_descendant_of  # type: ignore[method-assign]
        TaskIterator.__init__ = _unbounded_iterator_init  # type: ignore[method-assign]
        TaskIterator._next = _task_iterator_next  # type: ignore[method-assign]
        BpmnTaskIterator._next = _bpmn_task_iterator_next  # type: ignore[method-assign]
        _installed = True


def installed() -> bool:
    return _installed

_SERIALIZER = _make_serializer()
_SCRIPT_ENGINE = restricted_script_engine()
_MODELS: dict[str, ParsedModel] = {}
_MODELS_LOCK = threading.Lock()


def content_hash(xml: str) -> str:
    return hashlib.sha256(xml.encode("utf-8")).hexdigest()


def cached_model(sha256: str, process_id: str) -> ParsedModel | None:
    """The model parsed earlier in this process from the XML with this content hash, if any (never in cold
    mode)."""
    if not caching.enabled():
        return None
    cached = _MODELS.get(sha256)
    return cached if cached is not None and cached.process_id == process_id else None


def parse_model(xml: str, process_id: str, filename: str = "model.bpmn") -> ParsedModel:
    """Parse (and, unless in cold mode, cache by content hash) one BPMN file's executable process."""
    digest = content_hash(xml)
    cached = cached_model(digest, process_id)
    if cached is not None:
        return cached
    if "<!DOCTYPE" in xml or "<!ENTITY" in xml:
        raise ModelError(f"{filename}: DOCTYPE/ENTITY declarations are not allowed")
    parser = SpiffBpmnParser()
    try:
        tree = etree.fromstring(xml.encode("utf-8"), parser=etree.XMLParser(resolve_entities=False,
                                                                              no_network=True))
        parser.add_bpmn_xml(tree, filename=filename)
        spec = parser.get_spec(process_id)
        subprocess_specs = parser.get_subprocess_specs(process_id)
    except ModelError:
        raise
    except RecursionError as exc:
        raise ModelError(f"{filename}: nested too deeply for the parser (maximum recursion depth)", "(document)",
                         "the model is nested too deeply for the parser (maximum recursion depth exceeded); "
                         "flatten nested subprocesses or elements") from exc
    except Exception as exc:  # the library raises many types (ValidationException, KeyError, XML errors)
        element, problem = _parser_problem(exc)
        where = f"element '{element}': " if element else ""
        raise ModelError(f"{filename}: {where}{problem}", element, problem) from exc
    for one in (spec, *subprocess_specs.values()):
        wire_loop_tasks(one)
    model = ParsedModel(process_id, digest, spec, subprocess_specs, xml)
    if caching.enabled():
        with _MODELS_LOCK:
            _MODELS[digest] = model
    return model


def wire_loop_tasks(spec: Any) -> int:
    """Connect every loop (multi-instance, standard loop) task to its instance spec's completion, as
    SpiffWorkflow's own spec deserializer does.

    The parser leaves that connection out: the library makes it only when a loop task creates its first
    instance. A workflow resumed against a freshly parsed spec, after its instances were created in an
    earlier request, would complete every instance without the loop task ever hearing of it, so a
    multi-instance step never finished (all tasks done, nothing open, the item stuck). Wired here, at parse
    time, the spec is complete on its own and the serialized state alone decides what happens next."""
    wired = 0
    for task_spec in spec.task_specs.values():
        if isinstance(task_spec, LoopTask):
            instance_spec = spec.task_specs[task_spec.task_spec]
            if not instance_spec.completed_event.is_connected(task_spec.merge_child):
                instance_spec.completed_event.connect(task_spec.merge_child)
                wired += 1
    return wired


def new_workflow(model: ParsedModel, data: dict[str, Any]) -> BpmnWorkflow:
    workflow = BpmnWorkflow(model.spec, model.subprocess_specs, script_engine=_SCRIPT_ENGINE)
    # Start data goes on the start task so every later task inherits it.
    workflow.get_tasks(state=TaskState.READY)[0].data.update(data)
    workflow.do_engine_steps()
    return workflow


@contextmanager
def _using(model: ParsedModel) -> Iterator[None]:
    _current_specs.model = model
    try:
        yield
    finally:
        _current_specs.model = None


def dumps(workflow: BpmnWorkflow, model: ParsedModel) -> str:
    with _using(model):
        dct = _SERIALIZER.to_dict(workflow)
    dct["format"] = STATE_FORMAT
    return json.dumps(dct, cls=_SERIALIZER._encoder_cls, separators=(",", ":"))


def encode_data(data: Any) -> str:
    """Task data as the serializer writes it (for measuring it)."""
    return json.dumps(_SERIALIZER.registry.convert(data), cls=_SERIALIZER._encoder_cls, separators=(",", ":"))


def loads(state: str, model: ParsedModel) -> BpmnWorkflow:
    dct = json.loads(state, cls=_SERIALIZER.json_decoder_cls)
    fmt = dct.pop("format", None)
    if fmt != STATE_FORMAT:
        raise ModelError(f"instance state format {fmt!r} is not {STATE_FORMAT!r}; refusing to migrate")
    with _using(model):
        workflow = _SERIALIZER.from_dict(dct)
    workflow.script_engine = _SCRIPT_ENGINE
    return workflow


def ready_human_tasks(workflow: BpmnWorkflow) -> list[Task]:
    return workflow.get_tasks(state=TaskState.READY, manual=True)


def task_properties(task: Task) -> dict[str, str]:
    return dict((getattr(task.task_spec, "extensions", None) or {}).get("properties", {}))


def decision_vars(workflow: Any) -> set[str]:
    """The variables the model's parallel deciders record their decisions under (their `decision_var`)."""
    names = set()
    for spec in workflow.spec.task_specs.values():
        name = ((getattr(spec, "extensions", None) or {}).get("properties", {}) or {}).get("decision_var")
        if name:
            names.add(str(name))
    return names


def task_lane(task: Task) -> str | None:
    return getattr(task.task_spec, "lane", None)


def task_title(task: Task) -> str:
    return task.task_spec.bpmn_name or task.task_spec.name


# ---------------------------------------------------------------- loading and library internals

class Definition(Protocol):
    """A deployed process definition row (storage.models.ProcessDefinition)."""

    id: int
    process_id: str
    filename: str
    bpmn_xml: str
    sha256: str


class Running(Protocol):
    """A row that runs a workflow: its definition and serialized state (a process instance, a settlement)."""

    definition: Any
    state: str


def model_of(definition: Definition) -> ParsedModel:
    """The parsed model of a deployed definition: from the process's cache by the recorded content hash, so the
    XML is neither loaded nor hashed per request; parsed (and checked against that hash) on a miss."""
    cached = cached_model(definition.sha256, definition.process_id)
    if cached is not None:
        return cached
    model = parse_model(definition.bpmn_xml, definition.process_id, definition.filename)
    if model.sha256 != definition.sha256:
        raise ModelError(f"process definition {definition.id}: the stored BPMN does not match its recorded "
                               "SHA-256; it was changed outside `process deploy`")
    return model


def load_workflow(row: Running) -> tuple[BpmnWorkflow, ParsedModel]:
    """The workflow a row runs, deserialized against its own definition's model (which it returns too)."""
    model = model_of(row.definition)
    return loads(row.state, model), model


def internal_value(task: Task, key: str) -> Any:
    """A value SpiffWorkflow keeps in a task's internal data (e.g. a timer's `event_value`)."""
    return task._get_internal_data(key)


def update_task(task: Task) -> None:
    """Let the task's spec re-evaluate the task (a timer recomputes its due time from the data it inherits)."""
    task.task_spec._update(task)


def rename_task(task: Task, new_id: uuid.UUID) -> None:
    """Give a task a new id in place. SpiffWorkflow links tasks by id (parent._children, child._parent,
    workflow.tasks): all three are rewritten, keeping the task's place in the mapping (the serializer stores data
    as deltas against the parent and restores tasks in this order, so a parent must come before its children)."""
    wf = task.workflow
    old = task.id
    parent = task.parent
    for child in task.children:
        child._parent = new_id
    if parent is not None:
        parent._children = [new_id if c == old else c for c in parent._children]
    task.id = new_id
    entries = [(new_id if key == old else key, value) for key, value in wf.tasks.items()]
    wf.tasks.clear()
    wf.tasks.update(entries)

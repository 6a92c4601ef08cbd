"""Server-side SVG rendering of a BPMN process diagram from its DI, with task states highlighted."""

from __future__ import annotations

import math
import re
import xml.etree.ElementTree as ET  # noqa: S405 - input is screened for DOCTYPE/ENTITY before parsing
from collections.abc import Mapping
from dataclasses import dataclass, field

from engine.trust.policy import ROLE_LABELS

__all__ = ["DiagramError", "LANE_LABELS", "render_svg"]

BPMN = "{http://www.omg.org/spec/BPMN/20100524/MODEL}"
BPMNDI = "{http://www.omg.org/spec/BPMN/20100524/DI}"
DC = "{http://www.omg.org/spec/DD/20100524/DC}"
DI = "{http://www.omg.org/spec/DD/20100524/DI}"
SVG_NS = "http://www.w3.org/2000/svg"

MAX_INPUT_BYTES = 5 * 1024 * 1024

LANE_LABELS = ROLE_LABELS
STATE_LABELS = {"current": "当前环节", "done": "已完成", "returned": "已退回"}

TASK_TAGS = {
    "task", "userTask", "manualTask", "serviceTask", "scriptTask", "businessRuleTask",
    "sendTask", "receiveTask", "callActivity",
}
SUBPROCESS_TAGS = {"subProcess", "transaction", "adHocSubProcess"}
EVENT_TAGS = {"startEvent", "endEvent", "intermediateCatchEvent", "intermediateThrowEvent", "boundaryEvent"}
GATEWAY_TAGS = {
    "exclusiveGateway", "parallelGateway", "inclusiveGateway", "eventBasedGateway", "complexGateway",
}

FONT = "'Noto Sans CJK SC','Source Han Sans SC','PingFang SC','Microsoft YaHei',sans-serif"
INK = "#343a40"
EDGE_INK = "#5c636a"
STYLES = {
    # state: (stroke, stroke width, fill)
    None: (INK, 1.5, "#ffffff"),
    "current": ("#e8590c", 4.0, "#fff4e6"),
    "done": ("#2b8a3e", 2.0, "#ebfbee"),
    "returned": ("#c92a2a", 2.5, "#fff5f5"),
}


class DiagramError(ValueError):
    """The BPMN document cannot be rendered (unsafe, malformed, or without the process/DI)."""


@dataclass
class _Shape:
    id: str
    kind: str  # local tag name of the BPMN element (or "participant"/"lane")
    name: str
    x: float
    y: float
    w: float
    h: float
    depth: int = 0
    label: tuple[float, float, float, float] | None = None
    expanded: bool = False
    element: ET.Element | None = None


@dataclass
class _Edge:
    id: str
    name: str
    points: list[tuple[float, float]]
    label: tuple[float, float, float, float] | None = None


@dataclass
class _Diagram:
    process_name: str
    pools: list[_Shape] = field(default_factory=list)
    lanes: list[_Shape] = field(default_factory=list)
    nodes: list[_Shape] = field(default_factory=list)
    edges: list[_Edge] = field(default_factory=list)


# --------------------------------------------------------------------------- parsing


def _parse(bpmn_xml: str | bytes) -> ET.Element:
    if isinstance(bpmn_xml, bytes):
        if len(bpmn_xml) > MAX_INPUT_BYTES:
            raise DiagramError("BPMN document too large")
        try:
            text = bpmn_xml.decode("utf-8-sig")
        except UnicodeDecodeError as exc:
            raise DiagramError("BPMN document must be UTF-8") from exc
    else:
        text = bpmn_xml
        if len(text) > MAX_INPUT_BYTES:
            raise DiagramError("BPMN document too large")
    # Entity expansion and external entities are only reachable through a DTD; refuse any.
    if re.search(r"<!\s*(DOCTYPE|ENTITY)", text, re.IGNORECASE):
        raise DiagramError("BPMN document must not contain a DOCTYPE or entity declarations")
    text = re.sub(r"^\s*<\?xml[^>]*\?>", "", text, count=1)  # the encoding is already decided
    try:
        return ET.fromstring(text, parser=ET.XMLParser())  # noqa: S314 - DTDs refused above
    except ET.ParseError as exc:
        raise DiagramError(f"malformed BPMN document: {exc}") from exc


def _num(el: ET.Element, attr: str) -> float:
    try:
        value = float(el.get(attr, 0))
    except ValueError as exc:
        raise DiagramError(f"invalid DI coordinate {attr}={el.get(attr)!r}") from exc
    if not math.isfinite(value):
        raise DiagramError(f"invalid DI coordinate {attr}={el.get(attr)!r}")
    return value


def _bounds(el: ET.Element | None) -> tuple[float, float, float, float] | None:
    if el is None:
        return None
    return _num(el, "x"), _num(el, "y"), _num(el, "width"), _num(el, "height")


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def _collect(root: ET.Element, process_id: str) -> _Diagram:
    process = next((p for p in root.iter(f"{BPMN}process") if p.get("id") == process_id), None)
    if process is None:
        raise DiagramError(f"process {process_id!r} not found")

    elements: dict[str, tuple[ET.Element, int]] = {}

    def walk(parent: ET.Element, depth: int) -> None:
        for child in parent:
            cid = child.get("id")
            if cid:
                elements[cid] = (child, depth)
            if _local(child.tag) in SUBPROCESS_TAGS:
                walk(child, depth + 1)
            elif _local(child.tag) in {"laneSet", "lane", "childLaneSet"}:
                walk(child, depth)

    walk(process, 0)
    participants: dict[str, ET.Element] = {
        pid: p for p in root.iter(f"{BPMN}participant")
        if p.get("processRef") == process_id and (pid := p.get("id"))
    }
    wanted = set(elements) | set(participants)

    planes = list(root.iter(f"{BPMNDI}BPMNPlane"))
    if not planes:
        raise DiagramError("the document has no diagram interchange (DI)")
    plane = max(planes, key=lambda pl: sum(1 for s in pl if s.get("bpmnElement") in wanted))

    diagram = _Diagram(process_name=process.get("name") or process_id)
    for item in plane:
        ref = item.get("bpmnElement")
        if ref is None or ref not in wanted:
            continue
        if item.tag == f"{BPMNDI}BPMNShape":
            b = _bounds(item.find(f"{DC}Bounds"))
            if b is None:
                continue
            label = _bounds(item.find(f"{BPMNDI}BPMNLabel/{DC}Bounds"))
            if ref in participants:
                name = participants[ref].get("name") or diagram.process_name
                diagram.pools.append(_Shape(ref, "participant", name, *b))
                continue
            el, depth = elements[ref]
            kind = _local(el.tag)
            name = el.get("name") or ""
            if kind == "lane":
                diagram.lanes.append(_Shape(ref, kind, LANE_LABELS.get(name, name), *b))
            elif kind in TASK_TAGS | SUBPROCESS_TAGS | EVENT_TAGS | GATEWAY_TAGS:
                expanded = kind in SUBPROCESS_TAGS and item.get("isExpanded", "true") != "false"
                diagram.nodes.append(
                    _Shape(ref, kind, name, *b, depth=depth, label=label, expanded=expanded, element=el)
                )
        elif item.tag == f"{BPMNDI}BPMNEdge":
            el, _depth = elements[ref]
            if _local(el.tag) != "sequenceFlow":
                continue
            points = [(_num(w, "x"), _num(w, "y")) for w in item.iter(f"{DI}waypoint")]
            if len(points) >= 2:
                label = _bounds(item.find(f"{BPMNDI}BPMNLabel/{DC}Bounds"))
                diagram.edges.append(_Edge(ref, el.get("name") or "", points, label))
    if not diagram.nodes:
        raise DiagramError(f"process {process_id!r} has no diagram shapes")
    return diagram


# --------------------------------------------------------------------------- text


def _char_width(ch: str, size: float) -> float:
    if ord(ch) >= 0x2E80 or ch in "，。：；、（）？！":
        return size
    if ch.isupper() or ch in "mwMW":
        return size * 0.68
    return size * 0.55


def _text_width(text: str, size: float) -> float:
    return sum(_char_width(c, size) for c in text)


def _wrap(text: str, max_width: float, size: float, max_lines: int) -> list[str]:
    """Wrap to at most ``max_lines`` lines, balancing line lengths (no lone last character)."""
    lines = _wrap_greedy(text, max_width, size, max_lines)
    if 1 < len(lines) <= max_lines and not lines[-1].endswith("…"):
        width = max_width
        while width > size:
            narrower = _wrap_greedy(text, width - size / 2, size, max_lines + 1)
            if len(narrower) != len(lines):
                break
            lines, width = narrower, width - size / 2
    return lines


def _wrap_greedy(text: str, max_width: float, size: float, max_lines: int) -> list[str]:
    tokens = re.findall(r"[A-Za-z0-9_.\-/]+|\s+|.", text.strip())
    lines: list[str] = []
    line = ""
    for tok in tokens:
        candidate = line + tok
        if _text_width(candidate, size) <= max_width or not line:
            if _text_width(candidate, size) > max_width:  # a single over-long token: cut it by characters
                for ch in tok:
                    if line and _text_width(line + ch, size) > max_width:
                        lines.append(line)
                        line = ""
                    line += ch
            else:
                line = candidate
        else:
            lines.append(line.rstrip())
            line = tok.lstrip()
    if line.strip():
        lines.append(line.rstrip())
    if len(lines) > max_lines:
        lines = lines[:max_lines]
        last = lines[-1]
        while last and _text_width(last + "…", size) > max_width:
            last = last[:-1]
        lines[-1] = last + "…"
    return lines


# --------------------------------------------------------------------------- drawing helpers


def _n(v: float) -> str:
    return f"{v:.1f}".rstrip("0").rstrip(".")


def _sub(parent: ET.Element, tag: str, text: str | None = None, **attrs: str | float) -> ET.Element:
    el = ET.SubElement(parent, tag, {k.rstrip("_").replace("_", "-"): _n(v) if isinstance(v, float | int)
                                     else v for k, v in attrs.items()})
    if text is not None:
        el.text = text
    return el


def _text_lines(parent: ET.Element, lines: list[str], cx: float, cy: float, size: float,
                line_h: float, **attrs: str | float) -> None:
    if not lines:
        return
    top = cy - line_h * (len(lines) - 1) / 2
    t = _sub(parent, "text", None, x=cx, y=top, font_size=size, text_anchor="middle",
             dominant_baseline="central", **attrs)
    for i, line in enumerate(lines):
        _sub(t, "tspan", line, x=cx, y=top + i * line_h)


def _vertical_label(parent: ET.Element, text: str, x: float, y: float, w: float, h: float,
                    size: float = 14) -> None:
    """A label in a pool/lane header band: stacked characters when it fits, else rotated."""
    cx = x + w / 2
    cjk = all(ord(c) >= 0x2E80 for c in text)
    if cjk and len(text) * (size + 2) <= h - 8:
        _text_lines(parent, list(text), cx, y + h / 2, size, size + 2, fill=INK, font_weight="600")
        return
    cy = y + h / 2
    max_len = h - 8
    label = _wrap(text, max_len, size, 1)
    _text_lines(parent, label, 0, 0, size, size, fill=INK, font_weight="600",
                transform=f"translate({_n(cx)} {_n(cy)}) rotate(-90)")


def _title(parent: ET.Element, name: str, state: str | None) -> None:
    label = name or parent.get("data-element-id", "")
    if state in STATE_LABELS:
        label = f"{label}（{STATE_LABELS[state]}）"
    _sub(parent, "title", label)


def _state_mark(g: ET.Element, state: str | None, x: float, y: float) -> None:
    """A small badge centred on (x, y): a check for done, a back arrow for returned."""
    if state == "done":
        _sub(g, "circle", cx=x, cy=y, r=8.0, fill="#2b8a3e")
        _sub(g, "path", d=f"M{_n(x - 4)},{_n(y)} l3,3 l5,-6", fill="none", stroke="#ffffff",
             stroke_width=2.0, stroke_linecap="round", stroke_linejoin="round")
    elif state == "returned":
        _sub(g, "circle", cx=x, cy=y, r=8.0, fill="#c92a2a")
        _sub(g, "path", d=f"M{_n(x + 4)},{_n(y + 3)} v-3 h-7 m3,-3 l-3,3 l3,3", fill="none",
             stroke="#ffffff", stroke_width=1.6, stroke_linecap="round", stroke_linejoin="round")


def _style(state: str | None) -> tuple[str, float, str]:
    return STYLES.get(state if state in STYLES else None, STYLES[None])


# --------------------------------------------------------------------------- shapes


def _draw_task(g: ET.Element, s: _Shape, state: str | None) -> None:
    stroke, width, fill = _style(state)
    rect = _sub(g, "rect", x=s.x, y=s.y, width=s.w, height=s.h, rx=10.0, ry=10.0, fill=fill, stroke=stroke,
                stroke_width=width)
    if state == "returned":
        rect.set("stroke-dasharray", "6 3")
    if s.kind == "userTask":  # a small person glyph, as BPMN tools draw it
        px, py = s.x + 11, s.y + 10
        _sub(g, "circle", cx=px, cy=py, r=3.5, fill="none", stroke=INK, stroke_width=1.1)
        _sub(g, "path", d=f"M{_n(px - 6)},{_n(py + 11)} q0,-6 6,-6 q6,0 6,6 z", fill="none", stroke=INK,
             stroke_width=1.1)
    size, line_h = 12.0, 15.0
    max_lines = max(1, int((s.h - 10) // line_h))
    lines = _wrap(s.name, s.w - 28, size, max_lines)
    _text_lines(g, lines, s.x + s.w / 2, s.y + s.h / 2, size, line_h, fill=INK)
    if s.kind in {"callActivity"} or (s.kind in SUBPROCESS_TAGS and not s.expanded):
        bx, by = s.x + s.w / 2 - 7, s.y + s.h - 16
        _sub(g, "rect", x=bx, y=by, width=14.0, height=14.0, fill="none", stroke=INK, stroke_width=1.0)
        _sub(g, "path", d=f"M{_n(bx + 3)},{_n(by + 7)} h8 M{_n(bx + 7)},{_n(by + 3)} v8", stroke=INK,
             stroke_width=1.0)
    _state_mark(g, state, s.x + s.w - 10, s.y + 10)


def _mi_marker(g: ET.Element, s: _Shape) -> None:
    loop = s.element.find(f"{BPMN}multiInstanceLoopCharacteristics") if s.element is not None else None
    if loop is None:
        if s.element is not None and s.element.find(f"{BPMN}standardLoopCharacteristics") is not None:
            cx, cy = s.x + s.w / 2, s.y + s.h - 12
            _sub(g, "path", d=f"M{_n(cx - 4)},{_n(cy + 5)} a6,6 0 1 1 8,0", fill="none", stroke=INK,
                 stroke_width=1.4)
        return
    sequential = loop.get("isSequential") == "true"
    cx, cy = s.x + s.w / 2, s.y + s.h - 14
    for i in (-5, 0, 5):
        if sequential:
            _sub(g, "path", d=f"M{_n(cx - 6)},{_n(cy + i)} h12", stroke=INK, stroke_width=2.0)
        else:
            _sub(g, "path", d=f"M{_n(cx + i)},{_n(cy - 6)} v12", stroke=INK, stroke_width=2.0)


def _draw_subprocess(g: ET.Element, s: _Shape, state: str | None) -> None:
    stroke, width, fill = _style(state)
    if state is None:
        fill = "#f8f9fa"
    _sub(g, "rect", x=s.x, y=s.y, width=s.w, height=s.h, rx=12.0, ry=12.0, fill=fill, stroke=stroke,
         stroke_width=max(width, 1.5), **({"stroke_dasharray": "6 3"} if s.kind == "transaction" else {}))
    lines = _wrap(s.name, s.w - 40, 13.0, 1)
    if lines:
        _sub(g, "text", lines[0], x=s.x + 12, y=s.y + 18, font_size=13.0, fill=INK, font_weight="600")
    _mi_marker(g, s)
    _state_mark(g, state, s.x + s.w - 12, s.y + 12)


def _draw_event(g: ET.Element, s: _Shape, state: str | None) -> None:
    stroke, width, fill = _style(state)
    r = min(s.w, s.h) / 2
    cx, cy = s.x + s.w / 2, s.y + s.h / 2
    if s.kind == "endEvent":
        width = max(width, 3.5)
    _sub(g, "circle", cx=cx, cy=cy, r=r, fill=fill, stroke=stroke, stroke_width=width)
    if s.kind.startswith("intermediate") or s.kind == "boundaryEvent":
        _sub(g, "circle", cx=cx, cy=cy, r=r - 3, fill="none", stroke=stroke, stroke_width=1.2)
    _state_mark(g, state if state == "returned" else None, s.x + s.w, s.y)


def _draw_gateway(g: ET.Element, s: _Shape, state: str | None) -> None:
    stroke, width, fill = _style(state)
    cx, cy = s.x + s.w / 2, s.y + s.h / 2
    hw, hh = s.w / 2, s.h / 2
    pts = f"{_n(cx)},{_n(s.y)} {_n(s.x + s.w)},{_n(cy)} {_n(cx)},{_n(s.y + s.h)} {_n(s.x)},{_n(cy)}"
    _sub(g, "polygon", points=pts, fill=fill, stroke=stroke, stroke_width=width)
    m = min(hw, hh) * 0.42
    if s.kind == "exclusiveGateway":
        _sub(g, "path", d=f"M{_n(cx - m)},{_n(cy - m)} L{_n(cx + m)},{_n(cy + m)} "
             f"M{_n(cx + m)},{_n(cy - m)} L{_n(cx - m)},{_n(cy + m)}", stroke=INK, stroke_width=3.0)
    elif s.kind == "parallelGateway":
        m *= 1.25
        _sub(g, "path", d=f"M{_n(cx - m)},{_n(cy)} H{_n(cx + m)} M{_n(cx)},{_n(cy - m)} V{_n(cy + m)}",
             stroke=INK, stroke_width=3.0)
    elif s.kind == "inclusiveGateway":
        _sub(g, "circle", cx=cx, cy=cy, r=m * 1.15, fill="none", stroke=INK, stroke_width=2.5)
    elif s.kind == "eventBasedGateway":
        _sub(g, "circle", cx=cx, cy=cy, r=m * 1.2, fill="none", stroke=INK, stroke_width=1.2)
        _sub(g, "circle", cx=cx, cy=cy, r=m * 0.9, fill="none", stroke=INK, stroke_width=1.2)
    elif s.kind == "complexGateway":
        _sub(g, "path", d=f"M{_n(cx - m)},{_n(cy)} H{_n(cx + m)} M{_n(cx)},{_n(cy - m)} V{_n(cy + m)} "
             f"M{_n(cx - m * 0.7)},{_n(cy - m * 0.7)} L{_n(cx + m * 0.7)},{_n(cy + m * 0.7)} "
             f"M{_n(cx + m * 0.7)},{_n(cy - m * 0.7)} L{_n(cx - m * 0.7)},{_n(cy + m * 0.7)}",
             stroke=INK, stroke_width=2.5)


def _outer_label(g: ET.Element, s: _Shape) -> None:
    """Names of events and gateways sit outside the shape, where the DI label says (else below)."""
    if not s.name:
        return
    if s.label is not None and s.label[2] > 0:
        lx, ly, lw, lh = s.label
        width = max(lw, 60.0)
        cx, cy = lx + lw / 2, ly + lh / 2
    else:
        width = max(s.w * 2.4, 90.0)
        cx, cy = s.x + s.w / 2, s.y + s.h + 12
    lines = _wrap(s.name, width, 12.0, 2)
    _text_lines(g, lines, cx, cy, 12.0, 14.0, fill=INK, stroke="#ffffff", stroke_width=3.0,
                paint_order="stroke")


# --------------------------------------------------------------------------- main entry point


def render_svg(bpmn_xml: str | bytes, process_id: str, states: Mapping[str, str]) -> str:
    """Render the diagram of ``process_id`` as standalone SVG markup.

    ``states`` maps element ids to ``"current"``, ``"done"`` or ``"returned"``; other ids are drawn plainly.
    Raises :class:`DiagramError` for unsafe or unusable input.
    """
    diagram = _collect(_parse(bpmn_xml), process_id)
    states = dict(states or {})
    key = re.sub(r"[^A-Za-z0-9_-]", "_", process_id)

    xs: list[float] = []
    ys: list[float] = []
    for s in [*diagram.pools, *diagram.lanes, *diagram.nodes]:
        xs += [s.x, s.x + s.w]
        ys += [s.y, s.y + s.h]
        if s.label is not None:
            xs += [s.label[0], s.label[0] + s.label[2]]
            ys += [s.label[1], s.label[1] + s.label[3]]
    for e in diagram.edges:
        xs += [p[0] for p in e.points]
        ys += [p[1] for p in e.points]
    pad = 12.0
    min_x, min_y = min(xs) - pad, min(ys) - pad
    width, height = max(xs) - min_x + pad, max(ys) - min_y + pad

    svg = ET.Element("svg", {
        "xmlns": SVG_NS,
        "viewBox": f"{_n(min_x)} {_n(min_y)} {_n(width)} {_n(height)}",
        "width": _n(width),
        "height": _n(height),
        "role": "img",
        "aria-labelledby": f"ig-{key}-title",
        "font-family": FONT,
        "class": "itemgate-diagram",
        "data-process-id": process_id,
    })
    _sub(svg, "title", diagram.process_name, id=f"ig-{key}-title")
    defs = _sub(svg, "defs")
    marker = _sub(defs, "marker", id=f"ig-{key}-arrow", viewBox="0 0 10 10", refX=9.0, refY=5.0,
                  markerWidth=10.0, markerHeight=10.0, orient="auto", markerUnits="userSpaceOnUse")
    _sub(marker, "path", d="M0,0 L10,5 L0,10 z", fill=EDGE_INK)
    _sub(svg, "rect", x=min_x, y=min_y, width=width, height=height, fill="#ffffff")

    for pool in diagram.pools:
        g = _sub(svg, "g", class_="ig-pool", data_element_id=pool.id)
        _sub(g, "title", pool.name)
        _sub(g, "rect", x=pool.x, y=pool.y, width=pool.w, height=pool.h, fill="#ffffff", stroke=INK,
             stroke_width=1.5)
        _sub(g, "rect", x=pool.x, y=pool.y, width=30.0, height=pool.h, fill="#e9ecef", stroke=INK,
             stroke_width=1.5)
        _vertical_label(g, pool.name, pool.x, pool.y, 30.0, pool.h)
    lane_fills = ("#f1f3f5", "#f8f9fa")
    for i, lane in enumerate(sorted(diagram.lanes, key=lambda s: (s.y, s.x))):
        g = _sub(svg, "g", class_="ig-lane", data_element_id=lane.id)
        _sub(g, "title", lane.name)
        _sub(g, "rect", x=lane.x, y=lane.y, width=lane.w, height=lane.h, fill="#ffffff", stroke=INK,
             stroke_width=1.0)
        _sub(g, "rect", x=lane.x, y=lane.y, width=30.0, height=lane.h, fill=lane_fills[i % 2], stroke=INK,
             stroke_width=1.0)
        _vertical_label(g, lane.name, lane.x, lane.y, 30.0, lane.h)

    def shape_group(s: _Shape) -> ET.Element:
        state = states.get(s.id)
        classes = f"ig-shape ig-{s.kind}" + (f" ig-{state}" if state in STATE_LABELS else "")
        g = _sub(svg, "g", class_=classes, data_element_id=s.id)
        if state in STATE_LABELS:
            g.set("data-state", state)
        _title(g, s.name, state)
        return g

    subprocesses = sorted((s for s in diagram.nodes if s.kind in SUBPROCESS_TAGS and s.expanded),
                          key=lambda s: s.depth)
    for s in subprocesses:
        _draw_subprocess(shape_group(s), s, states.get(s.id))

    edges = _sub(svg, "g", class_="ig-edges", fill="none", stroke=EDGE_INK, stroke_width="1.4")
    for e in diagram.edges:
        g = _sub(edges, "g", class_="ig-edge", data_element_id=e.id)
        if e.name:
            _sub(g, "title", e.name)
        _sub(g, "polyline", points=" ".join(f"{_n(x)},{_n(y)}" for x, y in e.points),
             stroke_linejoin="round", marker_end=f"url(#ig-{key}-arrow)")

    for s in diagram.nodes:
        if s.kind in SUBPROCESS_TAGS and s.expanded:
            continue
        g = shape_group(s)
        state = states.get(s.id)
        if s.kind in EVENT_TAGS:
            _draw_event(g, s, state)
            _outer_label(g, s)
        elif s.kind in GATEWAY_TAGS:
            _draw_gateway(g, s, state)
            _outer_label(g, s)
        else:
            _draw_task(g, s, state)

    labels = _sub(svg, "g", class_="ig-edge-labels", font_size="11", fill=EDGE_INK, stroke="#ffffff",
                  stroke_width="3", paint_order="stroke")
    for e in diagram.edges:
        if not e.name:
            continue
        if e.label is not None and e.label[2] > 0:
            cx, cy = e.label[0] + e.label[2] / 2, e.label[1] + e.label[3] / 2
        else:
            (x1, y1), (x2, y2) = e.points[0], e.points[1]
            cx, cy = (x1 + x2) / 2, (y1 + y2) / 2 - 8
        _text_lines(labels, _wrap(e.name, 120.0, 11.0, 2), cx, cy, 11.0, 13.0)

    return ET.tostring(svg, encoding="unicode")


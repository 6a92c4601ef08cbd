# ruff: noqa: E501
"""Write the simple shipped process models (integration, metered_record, deliverable, monthly_report) with their
diagrams.

Run `python scripts/make_bpmn.py <process id>…` after changing a spec below (all of them without arguments); the
.bpmn files are committed as written."""
from __future__ import annotations

from pathlib import Path
from xml.sax.saxutils import escape, quoteattr

OUT = Path(__file__).resolve().parent.parent / "bpmn"
LANE_H = 180
COL_W = 160
SIZES = {"start": (36, 36), "end": (36, 36), "task": (120, 80), "xor": (50, 50), "and": (50, 50)}


def review_loop(submit: str, review: str, decision: str, merge: str) -> list[tuple[str, str, str, str]]:
    return [(merge, submit, "", ""), (submit, review, "", ""), (review, decision, "", ""),
            (decision, merge, "退回修改", 'decision == "return"')]


STAGES = {"intake": "需求受理", "design": "功能设计", "build": "开发联调", "test": "测试", "walkthrough": "体验走查",
          "go_live": "发布上线", "confirmation": "确认会签", "deliver": "成果交付", "review": "成果审核",
          "record": "计量记录", "confirm": "第三方确认", "report": "编写月报", "report_review": "第三方审核"}
HELP = {
    "review": "审阅交付物，确认通过或退回修改；退回时必须填写意见。",
    "deliverable": "上传合同要求的交付成果及佐证材料（如培训签到表、讲义、照片），填写交付日期。",
    "metered_record": "上传本期计量的佐证材料（调用量统计、考勤与排班、测评报告、短信账单等），说明数据来源。",
    "difficulty_confirmation": "根据复杂度说明提出本事项的难度系数（合同允许的档位），并写明理由。",
    "difficulty_review": "第三方核对复杂度说明：确认项目经理提出的难度系数，或改定并说明理由。",
    "intake": "上传需求函（优化迭代为变更函）等受理材料。",
    "design": "上传需求分析、方案或接口设计材料。",
    "build_integration": "完成开发与联调，确认已完成。",
    "tests": "上传测试报告，确认测试已通过。",
    "walkthrough": "组织体验走查，上传走查确认单。",
    "go_live": "完成发布上线，上传上线记录并填写上线日期。",
    "cosign": "确认联调与上线。",
    "monthly_report": "核对系统按本月数据生成的报告（XLSX/PDF），填写运营情况说明、上传附件后提交第三方；截止为月末后第10个工作日，"
                      "修改稿为提交之日起10个工作日内，逾期扣本月结算费用3%。",
    "report_review": "审阅提交的月度运营报告（提交时保存的XLSX/PDF），通过或退回修改；退回时必须填写意见。",
}


def write(pid: str, title: str, lanes: list[str], nodes: list[tuple], flows: list[tuple[str, str, str, str]],
          process_props: dict[str, str] | None = None, documentation: str | None = None) -> None:
    """nodes: (id, type, name, lane, column, properties dict, timer due?)"""
    pos: dict[str, tuple[int, int, int, int]] = {}
    body: list[str] = []
    lane_nodes: dict[str, list[str]] = {lane: [] for lane in lanes}
    incoming: dict[str, list[str]] = {}
    outgoing: dict[str, list[str]] = {}
    flow_ids = []
    for src, tgt, _name, _cond in flows:
        fid = f"flow_{src}_to_{tgt}"
        flow_ids.append(fid)
        outgoing.setdefault(src, []).append(fid)
        incoming.setdefault(tgt, []).append(fid)
    extra_shapes = []
    for nid, kind, name, lane, col, props, timer in nodes:
        lane_nodes[lane].append(nid)
        w, h = SIZES[kind]
        cx = 148 + col * COL_W
        cy = 20 + lanes.index(lane) * LANE_H + LANE_H // 2
        pos[nid] = (cx - w // 2, cy - h // 2, w, h)
        tag = {"start": "startEvent", "end": "endEvent", "task": "userTask", "xor": "exclusiveGateway",
               "and": "parallelGateway"}[kind]
        attrs = f' id="{nid}"' + (f" name={quoteattr(name)}" if name else "")
        inner = []
        if kind == "task" and props and props.get("form") in HELP:
            inner.append(f"      <bpmn:documentation>{escape(HELP[props['form']])}</bpmn:documentation>")
        if props:
            inner.append("      <bpmn:extensionElements>\n        <spiffworkflow:properties>")
            for k, v in props.items():
                inner.append(f'          <spiffworkflow:property name="{k}" value="{escape(str(v))}"/>')
            inner.append("        </spiffworkflow:properties>\n      </bpmn:extensionElements>")
        for fid in incoming.get(nid, []):
            inner.append(f"      <bpmn:incoming>{fid}</bpmn:incoming>")
        for fid in outgoing.get(nid, []):
            inner.append(f"      <bpmn:outgoing>{fid}</bpmn:outgoing>")
        body.append(f"    <bpmn:{tag}{attrs}>\n" + "\n".join(inner) + f"\n    </bpmn:{tag}>")
        if timer:
            bid = f"{nid}_overdue"
            lane_nodes[lane].append(bid)
            body.append(f'    <bpmn:boundaryEvent id="{bid}" name="超期提醒" attachedToRef="{nid}" cancelActivity="false">\n'
                        f'      <bpmn:timerEventDefinition id="{bid}_timer">\n'
                        '        <bpmn:timeDate xsi:type="bpmn:tFormalExpression">due_at_iso</bpmn:timeDate>\n'
                        '      </bpmn:timerEventDefinition>\n    </bpmn:boundaryEvent>')
            x, y, w, h = pos[nid]
            extra_shapes.append((bid, (x + w - 46, y + h, 36, 36)))
    for (src, tgt, name, cond), fid in zip(flows, flow_ids, strict=True):
        attrs = f'id="{fid}" sourceRef="{src}" targetRef="{tgt}"' + (f" name={quoteattr(name)}" if name else "")
        if cond:
            body.append(f"    <bpmn:sequenceFlow {attrs}>\n      <bpmn:conditionExpression xsi:type=\"bpmn:tFormalExpression\">"
                        f"{escape(cond)}</bpmn:conditionExpression>\n    </bpmn:sequenceFlow>")
        else:
            body.append(f"    <bpmn:sequenceFlow {attrs}/>")
    width = 148 + (max(n[4] for n in nodes) + 1) * COL_W
    lanes_xml = []
    for lane in lanes:
        refs = "\n".join(f"        <bpmn:flowNodeRef>{n}</bpmn:flowNodeRef>" for n in lane_nodes[lane])
        lanes_xml.append(f'      <bpmn:lane id="lane_{lane}" name="{lane}">\n{refs}\n      </bpmn:lane>')
    di = [f'      <bpmndi:BPMNShape id="pool_{pid}_di" bpmnElement="pool_{pid}" isHorizontal="true">\n'
          f'        <dc:Bounds x="20" y="20" width="{width}" height="{LANE_H * len(lanes)}"/>\n      </bpmndi:BPMNShape>']
    for i, lane in enumerate(lanes):
        di.append(f'      <bpmndi:BPMNShape id="lane_{lane}_di" bpmnElement="lane_{lane}" isHorizontal="true">\n'
                  f'        <dc:Bounds x="50" y="{20 + i * LANE_H}" width="{width - 30}" height="{LANE_H}"/>\n'
                  '      </bpmndi:BPMNShape>')
    for nid, (x, y, w, h) in list(pos.items()) + extra_shapes:
        marker = ' isMarkerVisible="true"' if w == 50 else ""
        di.append(f'      <bpmndi:BPMNShape id="{nid}_di" bpmnElement="{nid}"{marker}>\n'
                  f'        <dc:Bounds x="{x}" y="{y}" width="{w}" height="{h}"/>\n      </bpmndi:BPMNShape>')
    for (src, tgt, _n, _c), fid in zip(flows, flow_ids, strict=True):
        sx, sy, sw, sh = pos[src]
        tx, ty, tw, th = pos[tgt]
        a = (sx + sw, sy + sh // 2) if tx > sx else (sx + sw // 2, sy + (sh if ty > sy else 0))
        b = (tx, ty + th // 2) if tx > sx else (tx + tw // 2, ty + (0 if ty > sy else th))
        if tx <= sx and ty == sy:  # a loop back along the same lane: over the top
            a, b = (sx + sw // 2, sy), (tx + tw // 2, ty)
            points = [a, (a[0], sy - 30), (b[0], sy - 30), b]
        elif a[1] != b[1] and tx > sx:
            points = [a, ((a[0] + b[0]) // 2, a[1]), ((a[0] + b[0]) // 2, b[1]), b]
        else:
            points = [a, b]
        wp = "\n".join(f'        <di:waypoint x="{x}" y="{y}"/>' for x, y in points)
        di.append(f'      <bpmndi:BPMNEdge id="{fid}_di" bpmnElement="{fid}">\n{wp}\n      </bpmndi:BPMNEdge>')
    used = [n[5]["stage"] for n in nodes if n[5] and n[5].get("stage")]
    stage_props = "\n".join([f'        <spiffworkflow:property name="{k}" value="{escape(v)}"/>'
                             for k, v in (process_props or {}).items()]
                            + [f'        <spiffworkflow:property name="stage.{k}" value="{STAGES[k]}"/>'
                               for k in dict.fromkeys(used)])
    doc = f"\n    <bpmn:documentation>{escape(documentation)}</bpmn:documentation>" if documentation else ""
    xml = f"""<?xml version='1.0' encoding='UTF-8'?>
<bpmn:definitions xmlns:bpmn="http://www.omg.org/spec/BPMN/20100524/MODEL" xmlns:bpmndi="http://www.omg.org/spec/BPMN/20100524/DI" xmlns:dc="http://www.omg.org/spec/DD/20100524/DC" xmlns:di="http://www.omg.org/spec/DD/20100524/DI" xmlns:spiffworkflow="http://spiffworkflow.org/bpmn/schema/1.0/core" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" id="defs_{pid}" targetNamespace="https://itemgate.example/bpmn" exporter="itemgate">
  <bpmn:collaboration id="collab_{pid}">
    <bpmn:participant id="pool_{pid}" name={quoteattr(title)} processRef="{pid}"/>
  </bpmn:collaboration>
  <bpmn:process id="{pid}" name={quoteattr(title)} isExecutable="true">{doc}
    <bpmn:extensionElements>
      <spiffworkflow:properties>
        <spiffworkflow:property name="work_kind" value="true"/>
{stage_props}
      </spiffworkflow:properties>
    </bpmn:extensionElements>
    <bpmn:laneSet id="laneset_{pid}">
{chr(10).join(lanes_xml)}
    </bpmn:laneSet>
{chr(10).join(body)}
  </bpmn:process>
  <bpmndi:BPMNDiagram id="diagram_{pid}">
    <bpmndi:BPMNPlane id="plane_{pid}" bpmnElement="collab_{pid}">
{chr(10).join(di)}
    </bpmndi:BPMNPlane>
  </bpmndi:BPMNDiagram>
</bpmn:definitions>
"""
    (OUT / f"{pid}.bpmn").write_text(xml, encoding="utf-8")


def t(form: str, gate: str | None = None, stage: str | None = None, **more: str) -> dict[str, str]:
    props = {"form": form}
    if gate:
        props["gate"] = gate
    if stage:
        props["stage"] = stage
    props.update(more)
    return props


def deliverable() -> None:
    """A contract-level deliverable (a training, a named output, a monthly report): prepared with its evidence,
    reviewed by the requesting department until approved."""
    nodes = [
        ("start", "start", "开始", "implementer", 0, None, False),
        ("gw_merge", "xor", "", "implementer", 1, None, False),
        ("prepare", "task", "提交交付成果及佐证材料", "implementer", 2, t("deliverable", "deliverable", "deliver"), False),
        ("review_deliverable", "task", "需求单位审核交付成果", "dept_reviewer", 3,
         t("review", None, "review", review_of="deliverable", due_days="5"), True),
        ("gw_decision", "xor", "审核结果？", "dept_reviewer", 4, None, False),
        ("done", "end", "交付完成", "implementer", 5, None, False),
    ]
    flows = [("start", "gw_merge", "", "")] + review_loop("prepare", "review_deliverable", "gw_decision", "gw_merge")
    flows.append(("gw_decision", "done", "确认通过", 'decision == "approve"'))
    write("deliverable", "合同交付成果", ["implementer", "dept_reviewer"], nodes, flows)


def metered_record() -> None:
    """A metered line's record of units in a period, with the line's evidence, confirmed by the third party."""
    nodes = [
        ("start", "start", "开始", "implementer", 0, None, False),
        ("gw_merge", "xor", "", "implementer", 1, None, False),
        ("record", "task", "提交计量记录及佐证材料", "implementer", 2, t("metered_record", "record", "record"), False),
        ("confirm_record", "task", "第三方确认计量记录", "auditor", 3,
         t("review", None, "confirm", review_of="record", due_days="5"), True),
        ("gw_decision", "xor", "确认结果？", "auditor", 4, None, False),
        ("done", "end", "计量确认", "implementer", 5, None, False),
    ]
    flows = [("start", "gw_merge", "", "")] + review_loop("record", "confirm_record", "gw_decision", "gw_merge")
    flows.append(("gw_decision", "done", "确认通过", 'decision == "approve"'))
    write("metered_record", "计量记录（调用量、短信、人月、测评）", ["implementer", "auditor"], nodes, flows)


def integration() -> None:
    """A countable integration (档案, 模型, 接口, 办理点, 词条, 支付/物流场景): the general lifecycle whose evidence
    each line's gates set; difficulty proposed by the PM and confirmed by the third party."""
    nodes = [
        ("start", "start", "开始", "implementer", 0, None, False),
        ("intake", "task", "提交接入需求函", "implementer", 1, t("intake", "intake", "intake"), False),
        ("confirm_difficulty", "task", "提出难度系数（附复杂度说明）", "pm", 2,
         t("difficulty_confirmation", "difficulty", "intake"), False),
        ("review_difficulty", "task", "第三方确认难度系数", "auditor", 3,
         t("difficulty_review", None, "intake", due_days="5"), True),
        ("gw_design_merge", "xor", "", "implementer", 4, None, False),
        ("design", "task", "需求分析与方案设计", "implementer", 5, t("design", "design", "design"), False),
        ("confirm_design", "task", "需求单位确认方案", "dept_reviewer", 6,
         t("review", None, "design", review_of="design", due_days="5"), True),
        ("gw_design_decision", "xor", "确认结果？", "dept_reviewer", 7, None, False),
        ("build_integration", "task", "开发与联调", "implementer", 8, t("build_integration", "build", "build"), False),
        ("tests", "task", "功能、性能与安全测试", "implementer", 9, t("tests", "tests", "test"), False),
        ("gw_walkthrough", "xor", "是否需要走查？", "implementer", 10, None, False),
        ("walkthrough", "task", "体验走查", "implementer", 11, t("walkthrough", "walkthrough", "walkthrough"), False),
        ("gw_walkthrough_merge", "xor", "", "implementer", 12, None, False),
        ("go_live", "task", "发布上线", "implementer", 13, t("go_live", "go_live", "go_live"), False),
        ("gw_cosign_split", "and", "会签开始", "implementer", 14, None, False),
        ("cosign_department", "task", "需求单位确认上线", "dept_reviewer", 15,
         t("cosign", "cosign", "confirmation", due_days="5"), False),
        ("cosign_implementer", "task", "实施方确认上线", "implementer", 15, t("cosign", "cosign", "confirmation"), False),
        ("gw_cosign_join", "and", "会签完成", "implementer", 16, None, False),
        ("done", "end", "接入完成", "implementer", 17, None, False),
    ]
    flows = [("start", "intake", "", ""), ("intake", "confirm_difficulty", "", ""),
             ("confirm_difficulty", "review_difficulty", "", ""), ("review_difficulty", "gw_design_merge", "", "")]
    flows += review_loop("design", "confirm_design", "gw_design_decision", "gw_design_merge")
    flows += [("gw_design_decision", "build_integration", "确认通过", 'decision == "approve"'),
              ("build_integration", "tests", "", ""), ("tests", "gw_walkthrough", "", ""),
              ("gw_walkthrough", "walkthrough", "需要走查", "needs_walkthrough"),
              ("gw_walkthrough", "gw_walkthrough_merge", "无需走查", "not needs_walkthrough"),
              ("walkthrough", "gw_walkthrough_merge", "", ""), ("gw_walkthrough_merge", "go_live", "", ""),
              ("go_live", "gw_cosign_split", "", ""), ("gw_cosign_split", "cosign_department", "", ""),
              ("gw_cosign_split", "cosign_implementer", "", ""), ("cosign_department", "gw_cosign_join", "", ""),
              ("cosign_implementer", "gw_cosign_join", "", ""), ("gw_cosign_join", "done", "", "")]
    write("integration", "能力对接接入", ["pm", "implementer", "dept_reviewer", "auditor"], nodes, flows)


def monthly_report() -> None:
    """The monthly operations report (seed 001 §七(三) 2)): a work item of the contract for each month, prepared by
    the PM and reviewed by the third party until accepted (engine/usecases/monthly_report.py keeps its clocks)."""
    nodes = [
        ("start", "start", "月份结束", "pm", 0, None, False),
        ("gw_merge", "xor", "", "pm", 1, None, False),
        ("prepare_report", "task", "编写并提交月度运营报告", "pm", 2, t(
            "monthly_report", None, "report", due_at_var="report_due",
            help_en="Check the report ItemGate drafted from the month's data (XLSX/PDF), write the narrative, attach "
                    "files and submit it to the third party: due the 10th working day after the month, a revision "
                    "within 10 working days of the submission; late costs 3 % of the month's fee."), True),
        ("review_report", "task", "第三方审核月度运营报告", "auditor", 3, t(
            "report_review", None, "report_review",
            help_en="Review the monthly report as submitted (the XLSX/PDF kept at submission): accept it, or return "
                    "it for changes with a comment (required when returning)."), False),
        ("gw_decision", "xor", "审核结果？", "auditor", 4, None, False),
        ("done", "end", "报告通过", "pm", 5, None, False),
    ]
    flows = [("start", "gw_merge", "", "")] + review_loop("prepare_report", "review_report", "gw_decision", "gw_merge")
    flows.append(("gw_decision", "done", "通过", 'decision == "approve"'))
    write("monthly_report", "月度运营报告", ["pm", "auditor"], nodes, flows, {"contract_level": "true"},
          "Seed 001 §七(三) 2): after each month of the service period the supplier's PM submits the monthly "
          "operations report to the third party within 10 working days and revises it on the third party's "
          "comments within 10 working days of the submission. One work item per month, of the contract (no "
          "service line, no department); it creates no workload entry. Its clocks, lateness and the 3 % deduction "
          "are kept on the report (engine/usecases/monthly_report.py).")


MODELS = {"deliverable": deliverable, "metered_record": metered_record, "integration": integration,
          "monthly_report": monthly_report}

if __name__ == "__main__":
    import sys

    for name in sys.argv[1:] or list(MODELS):
        MODELS[name]()

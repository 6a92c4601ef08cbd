"""Process versions: validate a BPMN file against forms, roles, catalogues and the expression language."""
from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from engine.contract.catalog import ARTEFACT_KINDS, contract_kinds
from engine.errors import Invalid
from engine.runtime import spiff
from engine.runtime.modelcheck import ModelProblem, ModelRejected, check_model, process_ids
from engine.trust import audit
from engine.trust.access import authorize
from engine.usecases.simulation import simulate
from engine.usecases.tasks import deploy_definition
from storage.models import Contract, ProcessDefinition, ProcessInstance, ServiceLine, User

MAX_MODEL_BYTES = 2 * 1024 * 1024

# Shipped models that run outside `process deploy` (their lanes, forms and tasks follow other rules).
BUILT_IN_ONLY = {
    "settlement": ("this is ItemGate's built-in settlement process (bpmn/settlement.bpmn); it is not deployed with "
                   "`process deploy` and runs as shipped. Change it with a release of ItemGate, not here",
                   "这是 ItemGate 内置的审量结算流程（bpmn/settlement.bpmn），不能通过流程部署上传，随系统发布运行；"
                   "如需修改请随版本发布"),
}


@dataclass
class Deployed:
    definition: ProcessDefinition
    created: bool
    running_on_previous: int


def validate_model(session: Session, xml: str, filename: str) -> str:
    """The process id of a valid model; ModelRejected lists every problem (element id and what is wrong)."""
    ids = process_ids(xml, filename)
    if len(ids) != 1:
        raise ModelRejected(filename, [ModelProblem("(document)",
                                                    f"expected exactly one executable process, found {ids}")])
    process_id = ids[0]
    if process_id in BUILT_IN_ONLY:
        raise ModelRejected(filename, [ModelProblem(process_id, BUILT_IN_ONLY[process_id][0],
                                                    BUILT_IN_ONLY[process_id][1])])
    lines = session.execute(select(Contract.code, Contract.settings, ServiceLine).join(ServiceLine.contract)
                            .where(ServiceLine.process_id == process_id)).all()
    rules = [(f"contract {code} line {line.code}", line.gates) for code, _, line in lines]
    # Each line's gates may name its own contract's declared kinds (16a), not another contract's.
    kinds = {f"contract {code} line {line.code}": contract_kinds(settings) for code, settings, line in lines}
    problems = check_model(xml, process_id, filename, rules, ARTEFACT_KINDS, kinds)
    if problems:
        raise ModelRejected(filename, problems)
    try:
        model = spiff.parse_model(xml, process_id, filename)
    except spiff.ModelError as exc:
        raise ModelRejected(filename, [ModelProblem(exc.element or process_id,
                                                    f"SpiffWorkflow cannot parse it: {exc.problem}",
                                                    f"SpiffWorkflow 无法解析：{exc.problem}")]) from exc
    problems = simulate(model, xml)
    if problems:
        raise ModelRejected(filename, problems)
    return process_id


def deploy(session: Session, actor: audit.Actor, user: User | None, xml: str, filename: str) -> Deployed:
    """Validate and make the model current for new items; running items stay on their definition."""
    if user is not None:
        authorize(user, "process.manage")
    if len(xml.encode("utf-8")) > MAX_MODEL_BYTES:
        raise Invalid(f"{filename}: larger than {MAX_MODEL_BYTES // 1024} KiB", code="model_invalid")
    try:
        process_id = validate_model(session, xml, filename)
    except ModelRejected as exc:
        audit.record(session, actor, "process.rejected", target_type="process", target_id=filename[:64],
                     outcome="refused", problems=[str(p) for p in exc.problems][:50])
        raise Invalid(str(exc), code="model_invalid", problems=[p.as_dict() for p in exc.problems]) from exc
    before = session.execute(select(ProcessDefinition.id).where(ProcessDefinition.sha256 == spiff.content_hash(xml))
                             ).scalar()
    definition = deploy_definition(session, process_id, xml, filename, user)
    running = session.execute(select(ProcessInstance.id).where(
        ProcessInstance.definition_id != definition.id, ProcessInstance.status == "running",
        ProcessInstance.definition_id.in_(select(ProcessDefinition.id).where(
            ProcessDefinition.process_id == process_id)))).all()
    audit.record(session, actor, "process.deployed", target_type="process", target_id=definition.id,
                 process_id=process_id, sha256=definition.sha256, filename=filename, new=before is None)
    return Deployed(definition, before is None, len(running))

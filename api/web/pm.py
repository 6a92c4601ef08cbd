"""The PM's web pages: register an item (登记事项), import a spreadsheet, and act on an item (cancel, rework,
adjust the proposed difficulty). Each calls the same engine use case as the REST API."""
from __future__ import annotations

import io
import logging
import re
from decimal import Decimal
from typing import Any

from flask import current_app, flash, redirect, render_template, request, send_file, url_for
from sqlalchemy import select
from werkzeug.datastructures import MultiDict

from api.extensions import db
from api.uploads import record_upload, stream_length
from api.web.auth import me, web_ctx
from api.web.formfields import finite_decimal
from api.web.i18n import _
from api.web.views import act_and_flash, bp, refusal
from engine.contract.registration import is_metered, line_fields
from engine.errors import DomainError, FormInvalid, NotFound
from engine.evidence.artefacts import upload_artefact
from engine.trust.access import authorize, load_item_for
from engine.usecases.tasks import NewItem, create_item
from storage.models import CHANNELS, RECORD_MODE, Contract, Department, ServiceLine, WorkItem
from storage.unit_of_work import unit_of_work

log = logging.getLogger("itemgate.web")
MODES = ("new", "iteration")

# The engine's field messages (English, for API clients) said in the page's language.
_FIELD_TEXT: list[tuple[str, str]] = [
    (r"^unknown contract", "请选择合同。"),
    (r"has no service line", "该合同没有此服务类别。"),
    (r"^unknown department\(s\)", "有未知的部门。"),
    (r"^unknown department", "请选择需求部门。"),
    (r"^must be one of \['new'", "请选择接入方式。"),
    (r"^give one or more distinct channels", "请至少选择一个渠道。"),
    (r"^channels must be among", "渠道无效。"),
    (r"is offered on .* only", "该服务类别不提供所选渠道。"),
    (r"^must be between 0.1 and 5", "难度系数须在 0.1 到 5 之间。"),
    (r"^must not be empty", "此项必填。"),
    (r"^give the participating departments", "请选择参与部门。"),
    (r"^a department is listed twice", "部门重复。"),
    (r"^the lead department must be one of", "牵头部门（需求部门）必须是参与部门之一。"),
    (r"^a subset of", "选项无效。"),
    (r"^true or false", "选项无效。"),
    (r"^one of \[", "请选择已完成的环节。"),
    (r"^required \(at least 2", "请填写原因（至少 2 个字）。"),
    (r"^at most 2000 characters", "内容长度不符合要求。"),
    (r"^NUL|unpaired surrogate|control character", "不能包含空字符或无效字符。"),
    (r"^a metered record needs its units", "请填写计量数量（大于 0 的数字）。"),
    (r"^a metered record needs its period", "请选择计量期间（年-月）。"),
    (r"^a period is a month like", "计量期间应为年月，如 2026-11。"),
    (r"^only a metered line's record carries units", "该服务类别不按计量记录登记，无需计量数量。"),
    (r"is outside contract .*'s service period", "计量期间不在合同的服务期内。"),
]


def field_text(message: str) -> str:
    for pattern, text in _FIELD_TEXT:
        if re.search(pattern, message):
            return _(text)
    return _(message)


# ---------------------------------------------------------------- 登记事项

def _lines() -> list[tuple[Contract, list[ServiceLine]]]:
    """Each contract with the lines the form covers: lines that run an item process."""
    contracts = db.session.scalars(select(Contract).order_by(Contract.code))
    return [(c, [sl for sl in sorted(c.service_lines, key=lambda s: (s.position, s.code)) if sl.process_id])
            for c in contracts]


def _registration_page(values: dict[str, Any], errors: dict[str, list[str]], status: int = 200) -> Any:
    lines = _lines()
    fields_by_line = {sl.id: line_fields(sl) for _c, sls in lines for sl in sls}
    # The chosen line (after a submit) decides what shows without script: a metered record has no channels, mode
    # or difficulty; a line priced without channels has no channels.
    chosen = next((sl for _c, sls in lines for sl in sls if str(sl.id) == values.get("line")), None)
    all_fields: dict[str, Any] = {}
    for specs in fields_by_line.values():
        for spec in specs:
            all_fields.setdefault(spec.name, spec)
    departments = list(db.session.scalars(select(Department).order_by(Department.code)))
    return render_template(
        "web/item_new.html", contracts=lines, fields_by_line=fields_by_line, all_fields=all_fields, chosen=chosen,
        metered={sl.id for _c, sls in lines for sl in sls if is_metered(sl)},
        departments=departments, values=values, errors=errors, channels=CHANNELS, modes=MODES,
        max_upload_mb=current_app.config["ITEMGATE"].max_upload_mb), status


def _form_values(form: MultiDict[str, str]) -> dict[str, Any]:
    values: dict[str, Any] = {k: (form.get(k) or "").strip() for k in
                              ("contract", "line", "name", "code", "department", "mode", "difficulty",
                               "complexity_note", "units", "period")}
    values["channels"] = form.getlist("channels")
    values["attr_departments"] = form.getlist("attr_departments")
    values["attr_parts"] = form.getlist("attr_parts")
    values["attr_flags"] = form.getlist("attr_flags")
    return values


@bp.route("/items/new", methods=["GET", "POST"])
def item_new() -> Any:
    user = me()
    authorize(user, "item.create")
    if request.method == "GET":
        return _registration_page({"mode": "new", "difficulty": "1.0", "channels": []}, {})
    values = _form_values(request.form)
    errors: dict[str, list[str]] = {}
    line = None
    contract_code = ""
    if values["line"].isdigit():
        line = db.session.get(ServiceLine, int(values["line"]))
    if line is None or (values["contract"] and str(line.contract_id) != values["contract"]):
        errors["line"] = [_("请选择服务类别。")]
    else:
        contract_code = line.contract.code
    # A metered record (units in a period) has no channels, mode or difficulty; a line priced without channels
    # takes none. Fields the chosen line hides are not read, whatever a script-less browser sent.
    record = line is not None and is_metered(line)
    with_channels = line is None or bool(line.channels)
    difficulty = Decimal("1.0") if record else finite_decimal(values["difficulty"], "1.0")
    if difficulty is None:
        errors["difficulty"] = [_("请输入有效的数字。")]
        difficulty = Decimal("1.0")
    units = finite_decimal(values["units"], thousands=True) if record and values["units"] else None
    if record and values["units"] and units is None:
        errors["units"] = [_("请输入有效的数字。")]
    period = (values["period"] or None) if record else None
    for key, limit in (("name", 300), ("code", 100)):
        if not values[key]:
            errors[key] = [_("此项必填。")]
        elif len(values[key]) > limit:
            errors[key] = [_("内容长度不符合要求。")]
    if not values["department"]:
        errors["department"] = [_("请选择需求部门。")]
    if with_channels and not record and not values["channels"]:
        errors["channels"] = [_("请至少选择一个渠道。")]
    if not record and values["mode"] not in MODES:
        errors["mode"] = [_("请选择接入方式。")]
    if len(values["complexity_note"]) > 2000:
        errors["complexity_note"] = [_("内容长度不符合要求。")]
    if difficulty != Decimal("1.0") and not values["complexity_note"] and not _statement_file():
        errors["complexity_note"] = [_("难度系数不是 1.0 时，请写明复杂度说明或上传复杂度说明文件。")]
    attributes: dict[str, Any] = {}
    mode = RECORD_MODE if record else values["mode"]
    if line is not None:
        for field in line_fields(line):
            if not field.is_attribute:
                continue
            if field.kind == "departments":
                chosen = [d for d in values["attr_departments"] if d]
                if values["department"] and chosen and values["department"] not in chosen:
                    chosen.insert(0, values["department"])  # the lead department always takes part
                if field.required and not chosen:
                    errors[f"attributes.{field.name}"] = [_("请选择参与部门。")]
                attributes[field.name] = chosen
            elif field.kind == "choices":
                attributes[field.name] = [p for p in values["attr_parts"] if p]
            else:
                attributes[field.name] = field.name in values["attr_flags"]
        if values["code"] and mode in (*MODES, RECORD_MODE) and db.session.execute(select(WorkItem.id).where(
                WorkItem.contract_id == line.contract_id, WorkItem.code == values["code"],
                WorkItem.mode == mode, WorkItem.status != "cancelled")).first() is not None:
            errors["code"] = [_("该合同下已有相同编码和接入方式的事项。")]
    if values["complexity_note"]:
        attributes["complexity_note"] = values["complexity_note"]
    if errors:
        return _registration_page(values, errors, 422)
    assert line is not None
    context = web_ctx()
    spec = NewItem(contract=contract_code, service_line=line.code, name=values["name"], code=values["code"],
                   department=values["department"],
                   channels=[c for c in CHANNELS if c in values["channels"]] if with_channels and not record else [],
                   mode=mode, difficulty=difficulty, attributes=attributes, units=units, period=period)
    statement = _statement_file()
    store = context.store
    created: list[Any] = []

    def register_with_statement() -> Any:
        # The item and its complexity statement in one unit of work; a statement stored whose row cannot be
        # committed is removed again (record_upload).
        assert statement is not None and store is not None
        created.append(create_item(context, spec))
        return upload_artefact(db.session, store, context.actor, me(), created[0], "complexity_statement",
                               statement.filename or "复杂度说明.pdf", statement.stream,
                               stream_length(statement.stream), current_app.config["ITEMGATE"].max_upload_bytes, None)

    try:
        if statement is None:
            with unit_of_work(db.session):
                item = create_item(context, spec)
        else:
            if store is None:
                raise FormInvalid({"statement": ["the evidence store is not configured"]})
            record_upload(db.session, store, register_with_statement)
            item = created[0]
    except FormInvalid as err:
        db.session.rollback()
        found = {k: [field_text(m) for m in v] for k, v in (err.extra.get("errors") or {}).items()}
        return _registration_page(values, found, 422)
    except NotFound:
        raise
    except DomainError as err:
        db.session.rollback()
        if err.code == "out_of_period":  # the contract refuses records outside its service period
            return _registration_page(values, {"period": [field_text(str(err.detail))]}, 422)
        return _registration_page(values, {"statement": [refusal(err)]}, 422)
    flash(_("事项已登记，流程已启动"), "ok")
    return redirect(url_for("web.item", item_id=item.id))


def _statement_file() -> Any:
    upload = request.files.get("statement")
    return upload if upload is not None and upload.filename else None



# ---------------------------------------------------------------- item actions

@bp.post("/items/<int:item_id>/cancel")
def item_cancel(item_id: int) -> Any:
    from engine.usecases.lifecycle import cancel_item

    reason = (request.form.get("reason") or "").strip()
    return _item_action(item_id, lambda: cancel_item(web_ctx(), item_id, reason), _("事项已取消"))


@bp.post("/items/<int:item_id>/rework")
def item_rework(item_id: int) -> Any:
    from engine.usecases.lifecycle import rework_item

    to = (request.form.get("to") or "").strip()[:100]
    reason = (request.form.get("reason") or "").strip()
    return _item_action(item_id, lambda: rework_item(web_ctx(), item_id, to, reason), _("已退回到所选环节重做"))


@bp.post("/items/<int:item_id>/difficulty")
def item_difficulty(item_id: int) -> Any:
    from engine.usecases.lifecycle import adjust_difficulty

    raw = (request.form.get("difficulty") or "").strip()[:20]
    note = (request.form.get("note") or "").strip()
    return _item_action(item_id, lambda: adjust_difficulty(web_ctx(), item_id, raw, note),
                        _("建议难度系数已调整"))


def _item_action(item_id: int, action: Any, done: str) -> Any:
    load_item_for(db.session, me(), item_id)  # 404 outside the caller's scope, before anything else

    def explain(err: DomainError) -> str:
        problems = [field_text(m) for msgs in (err.extra.get("errors") or {}).values() for m in msgs]
        return _("操作未执行：") + " ".join(problems) if problems else refusal(err)

    act_and_flash(action, done, explain)
    return redirect(url_for("web.item", item_id=item_id))


# ---------------------------------------------------------------- bulk import

_IMPORT_PROBLEMS: list[tuple[str, str]] = [
    (r"^empty$", "此项为空。"),
    (r"^missing column$", "缺少此列。"),
    (r"appears twice$", "此列重复。"),
    (r"^longer than", "内容过长。"),
    (r"^unknown department", "未知的需求部门。"),
    (r"has no service line", "合同中没有此服务类别。"),
    (r"is not new/新增", "接入方式应为“新增接入”或“优化迭代”。"),
    (r"^unknown channel", "未知的渠道（PC端/移动端/自助终端）。"),
    (r"listed twice$", "渠道重复。"),
    (r"is not offered on", "该服务类别不提供此渠道。"),
    (r"is not a number 0.1", "难度系数应为 0.1 至 5 的数字。"),
    (r"^same code and mode as row (\d+)", "与第 {0} 行的编码和接入方式相同。"),
    (r"record needs its units$", "计量类服务类别须填写计量数量。"),
    (r"record needs its period", "计量类服务类别须填写计量期间（如 2026-11）。"),
    (r"is not metered$", "该服务类别不是计量类，不填计量数量。"),
    (r"is not a number > 0$", "计量数量应为大于 0 的数字。"),
    (r"is not a month like", "计量期间应为年月，如 2026-11。"),
]
_COLUMN_NAMES = {"name": "事项名称", "code": "事项编码", "department": "需求部门", "service_line": "服务类别",
                 "channels": "接入渠道", "mode": "接入方式", "difficulty": "难度系数", "units": "计量数量",
                 "period": "计量期间"}


def import_problem(problem: str) -> str:
    for pattern, text in _IMPORT_PROBLEMS:
        match = re.search(pattern, problem)
        if match:
            return _(text).format(*match.groups())
    return field_text(problem)


def _contracts() -> list[Contract]:
    return list(db.session.scalars(select(Contract).order_by(Contract.code)))


def _import_page(status: int = 200, **extra: Any) -> Any:
    from engine.usecases.import_jobs import TEMPLATE_COLUMNS

    return render_template("web/items_import.html", contracts=_contracts(), columns=TEMPLATE_COLUMNS,
                           column_names=_COLUMN_NAMES, problem_text=import_problem,
                           max_mb=20, **extra), status


@bp.get("/items/import")
def items_import() -> Any:
    authorize(me(), "item.import")
    return _import_page(contract=request.args.get("contract") or "")


@bp.get("/items/import/template.xlsx")
def items_import_template() -> Any:
    from engine.usecases.import_jobs import XLSX, template_xlsx

    authorize(me(), "item.import")
    return send_file(io.BytesIO(template_xlsx()), mimetype=XLSX, as_attachment=True,
                     download_name="事项导入模板.xlsx")


@bp.post("/items/import/preview")
def items_import_preview() -> Any:
    """Keep the file, dry-run it and show every row with its problems; nothing is written to the items."""
    from flask import session

    from engine.usecases import import_jobs

    user = me()
    authorize(user, "item.import")
    contract = (request.form.get("contract") or "").strip()[:64]
    upload = request.files.get("file")
    errors: dict[str, list[str]] = {}
    if not contract:
        errors["contract"] = [_("请选择合同。")]
    if upload is None or not upload.filename:
        errors["file"] = [_("请选择要导入的文件。")]
    if errors:
        return _import_page(422, contract=contract, errors=errors)
    assert upload is not None
    context = web_ctx()
    try:
        if context.store is None:
            raise FormInvalid({"file": ["the evidence store is not configured"]})
        staged = import_jobs.stage(context.store, upload.stream, stream_length(upload.stream), upload.filename or "")
        data = import_jobs.load_staged(context.store, staged)
        result = import_jobs.preview(context, contract, data, staged.filename)
    except NotFound:
        raise
    except DomainError as err:
        db.session.rollback()
        detail = err.extra.get("errors") or {}
        if isinstance(detail, dict) and detail.get("contract"):
            errors["contract"] = [_("请选择合同。")]
        elif err.code == "import_invalid":
            errors["file"] = [_("无法读取此文件：请上传 .xlsx（或 .csv）文件，不超过 20 MB。")]
        else:
            errors["file"] = [refusal(err)]
        return _import_page(422, contract=contract, errors=errors)
    db.session.rollback()  # the dry run wrote nothing; make sure of it
    earlier = session.get("item_import")
    if earlier and earlier.get("key", "").startswith(import_jobs.PREFIX) and context.store is not None:
        try:  # a preview nobody imported: its staged copy goes when the next one replaces it
            context.store.delete(earlier["key"], earlier.get("version_id"))
        except Exception:  # noqa: BLE001 - best effort; an unreferenced staged copy harms nothing
            log.warning("could not remove an earlier staged spreadsheet", exc_info=True)
    session["item_import"] = {"key": staged.key, "version_id": staged.version_id, "filename": staged.filename,
                              "size": staged.size, "contract": contract}
    return _import_page(200 if result.ok else 422, contract=contract, preview=result, filename=staged.filename)


@bp.post("/items/import/start")
def items_import_start() -> Any:
    from flask import session

    from api.background import start_job
    from engine.usecases import import_jobs

    with unit_of_work(db.session):
        user = me()
        authorize(user, "item.import")
        kept = session.get("item_import")
        if not kept:
            flash(_("请先上传文件并预览。"), "error")
            return redirect(url_for("web.items_import"))
        staged = import_jobs.StagedFile(kept["key"], kept.get("version_id"), kept["filename"], int(kept["size"]))
        job = import_jobs.queue_import(db.session, user, kept["contract"], staged)
    session.pop("item_import", None)
    start_job(current_app._get_current_object(), job.id)  # type: ignore[attr-defined]
    return redirect(url_for("web.items_import_job", job_id=job.id))


@bp.get("/items/import/jobs/<int:job_id>")
def items_import_job(job_id: int) -> Any:
    from engine.usecases import import_jobs, jobs
    from storage.models import utcnow

    job = jobs.load_job_for(db.session, me(), job_id)
    if job.kind != import_jobs.KIND:
        raise NotFound(f"import job {job_id} not found")
    status, _error = jobs.shown(job, utcnow())
    result = import_jobs.result_of(job) or {}
    created: list[WorkItem] = []
    if status == "done" and result.get("created"):
        created = list(db.session.scalars(select(WorkItem).where(WorkItem.created_by_id == job.requested_by_id)
                                          .order_by(WorkItem.id.desc()).limit(min(int(result["created"]), 20))))
    return render_template("web/import_job.html", job=job, status=status, result=result, created=created,
                           running=status in ("queued", "running"), problem_text=import_problem,
                           column_names=_COLUMN_NAMES)

"""Admin web page for process models: upload and check a BPMN, deploy it, see versions and migrate items."""
from __future__ import annotations

from typing import Any

from flask import Blueprint, flash, g, redirect, render_template, request, url_for
from sqlalchemy import func, select

from api.extensions import db
from api.rest.operations import read_model_upload
from api.web.auth import me
from api.web.i18n import _
from engine.errors import DomainError
from engine.runtime.modelcheck import ModelRejected
from engine.trust import audit
from engine.trust.access import authorize
from engine.usecases.migration import migrate
from engine.usecases.processes import deploy, validate_model
from storage.models import ProcessDefinition, ProcessInstance
from storage.unit_of_work import unit_of_work

bp = Blueprint("admin_processes", __name__, url_prefix="/admin/processes")

# (Its English is in the gettext catalog, api/translations/en/LC_MESSAGES/messages.po.)


def _versions() -> list[dict[str, Any]]:
    counts = {int(r[0]): int(r[1]) for r in db.session.execute(
        select(ProcessInstance.definition_id, func.count()).where(ProcessInstance.status == "running")
        .group_by(ProcessInstance.definition_id))}
    rows = db.session.scalars(select(ProcessDefinition).order_by(ProcessDefinition.process_id,
                                                                 ProcessDefinition.id.desc()))
    return [{"d": d, "running": counts.get(d.id, 0)} for d in rows]


def _page(**extra: Any) -> Any:
    return render_template("admin/processes.html", versions=_versions(), **extra)


@bp.get("", endpoint="index")
def index() -> Any:
    authorize(me(), "process.manage")
    return _page()


def _uploaded() -> tuple[str | None, str, list[dict[str, str]]]:
    upload = request.files.get("file")
    if upload is None or not upload.filename:
        return None, "", [{"element": "(document)", "problem": "no file", "problem_zh": "请选择一个 BPMN 文件。"}]
    filename = upload.filename[:200]
    try:
        return read_model_upload(upload), filename, []
    except DomainError as exc:
        return None, filename, list(exc.extra.get("problems") or [])


@bp.post("/check", endpoint="check")
def check() -> Any:
    """Every problem of the uploaded model, before anything is deployed."""
    authorize(me(), "process.manage")
    xml, filename, problems = _uploaded()
    if xml is not None:
        try:
            validate_model(db.session, xml, filename)
        except ModelRejected as exc:
            problems = [p.as_dict() for p in exc.problems]
    db.session.rollback()
    return _page(checked=filename, problems=problems), 200 if not problems else 422


@bp.post("/deploy", endpoint="deploy")
def deploy_model() -> Any:
    user = me()
    authorize(user, "process.manage")
    xml, filename, problems = _uploaded()
    if xml is None:
        return _page(checked=filename, problems=problems), 422
    try:
        # A refused model keeps the audit record of the refusal (the only thing written).
        with unit_of_work(db.session, commit_on=(DomainError,)):
            result = deploy(db.session, audit.Actor.of(user, g.get("request_id")), user, xml, filename)
    except DomainError as exc:
        return _page(checked=filename, problems=list(exc.extra.get("problems") or [
            {"element": "(document)", "problem": exc.detail, "problem_zh": exc.detail}])), 422
    flash(_("已部署为新版本。") if result.created else _("该版本已存在，已设为当前版本。"), "success")
    return redirect(url_for("admin_processes.index"))


@bp.post("/<int:definition_id>/migrate", endpoint="migrate")
def migrate_items(definition_id: int) -> Any:
    user = me()
    authorize(user, "process.manage")
    dry_run = request.form.get("dry_run") == "1"
    report = migrate(db.session, audit.Actor.of(user, g.get("request_id")), user, definition_id, dry_run=dry_run,
                     commit=db.session.commit, rollback=db.session.rollback)
    return _page(report=report)

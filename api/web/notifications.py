"""Web pages for notifications: the list behind the bell (each entry opens its task), marking read, and where
one's own notifications are also sent (e-mail, chat webhook)."""
from __future__ import annotations

import math
from datetime import UTC, datetime
from typing import Any

from flask import Blueprint, flash, redirect, render_template, request, url_for
from sqlalchemy import func, select

from api.extensions import db
from api.web.auth import me, web_ctx
from api.web.i18n import _
from engine.errors import FormInvalid
from engine.trust import notify
from engine.usecases import admin
from storage.models import Notification
from storage.unit_of_work import unit_of_work

bp = Blueprint("notify_web", __name__)

PER_PAGE = 20
KIND_LABELS = {"returned": "退回", "new_task": "新任务", "difficulty": "难度确认", "handover": "转交",
               "reminder": "超期提醒", "escalation": "超期升级", "settlement": "结算"}


def target_url(note: Notification) -> str:
    """Where a notification leads: its task, else its item, else its settlement."""
    if note.task_id is not None:
        return url_for("web.task", task_id=note.task_id)
    if note.item_id is not None:
        return url_for("web.item", item_id=note.item_id)
    if note.settlement_id is not None:
        return url_for("settle_web.settlement", settlement_id=note.settlement_id)
    return url_for("notify_web.notifications")


@bp.get("/notifications")
def notifications() -> Any:
    user = me()
    unread_only = request.args.get("unread") == "1"
    query = select(Notification).where(notify.mine(user))
    if unread_only:
        query = query.where(Notification.read_at.is_(None))
    total = int(db.session.execute(select(func.count()).select_from(query.subquery())).scalar_one())
    pages = max(1, math.ceil(total / PER_PAGE))
    page = max(1, min(request.args.get("page", type=int) or 1, pages))
    rows = list(db.session.scalars(query.order_by(Notification.id.desc()).offset((page - 1) * PER_PAGE)
                                   .limit(PER_PAGE)))
    return render_template("web/notifications.html", rows=rows, total=total, page=page, pages=pages,
                           unread_only=unread_only, kind_labels=KIND_LABELS, target_url=target_url,
                           text_of=lambda note: notify.text_of(note, _))


@bp.get("/notifications/<int:note_id>/open")
def notification_open(note_id: int) -> Any:
    """Open a notification's task (or item, or settlement), marking it read for me alone."""
    with unit_of_work(db.session):
        note = notify.read_mine(db.session, me(), note_id, datetime.now(UTC))
    return redirect(target_url(note))


@bp.post("/notifications/read-all")
def notifications_read_all() -> Any:
    with unit_of_work(db.session):
        marked = notify.mark_read(db.session, me(), None, datetime.now(UTC))
    flash(_("已将 {n} 条通知标为已读", n=marked), "ok")
    return redirect(url_for("notify_web.notifications"))


@bp.route("/me/channels", methods=["GET", "POST"])
def channels() -> Any:
    user = me()
    errors: dict[str, list[str]] = {}
    if request.method == "POST":
        wanted: dict[str, dict[str, Any] | None] = {
            kind: {"target": (request.form.get(f"{kind}_target") or "").strip()[:500],
                   "enabled": request.form.get(f"{kind}_enabled") == "on"} for kind in ("email", "webhook")}
        try:
            with unit_of_work(db.session):
                admin.set_channels(db.session, web_ctx().actor, "user", user.id, wanted)
            flash(_("通知方式已保存"), "ok")
            return redirect(url_for("notify_web.channels"))
        except FormInvalid as err:
            db.session.rollback()
            errors = err.extra.get("errors", {})
    return render_template("web/channels.html", channels=admin.channels_of(db.session, "user", user.id),
                           errors=errors, form=request.form)

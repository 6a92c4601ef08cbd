"""The web inbox: server-rendered pages for implementers, reviewers and PMs (sessions, CSRF, zh/en)."""
from __future__ import annotations

from datetime import timedelta
from typing import Any

from flask import Flask, g, redirect, render_template, request, session, url_for
from flask_login import current_user

from api.extensions import babel, csrf, db, evidence_lock_state, login_manager
from api.web import i18n
from api.web.auth import SessionUser, load_session_user, touch_web_session
from api.web.i18n import _
from engine.trust.policy import may, scope_of

_SAFE_METHODS = {"GET", "HEAD", "OPTIONS", "TRACE"}
_ERROR_TEXT = {
    400: "请求无效。",
    403: "您没有权限执行此操作。",
    404: "页面不存在，或您无权访问。",
    405: "不支持此操作。",
    409: "数据已被他人更改，请刷新后重试。",
    413: "文件太大。",
    415: "不支持此文件类型。",
    422: "提交的内容有误。",
    502: "存储中的文件无法读取，请联系系统管理员。",
    503: "服务暂时不可用，请稍后再试。",
}
# Refusals whose reason people can act on, by the problem code, where the status alone says too little.
_CODE_TEXT = {
    "invalid_characters": "提交的内容不能包含空字符（NUL）或无效的 Unicode 字符，请删除后重试。",
}


def _remember_language(lang: str) -> None:
    """The language a signed-in user switches to is theirs: their e-mail and chat notifications use it too."""
    if not current_user.is_authenticated or current_user.row.language == lang:
        return
    from sqlalchemy import update

    from storage.models import User
    from storage.unit_of_work import unit_of_work

    with unit_of_work(db.session):
        db.session.execute(update(User).where(User.id == current_user.row.id).values(language=lang))
    current_user.row.language = lang


def register(app: Flask) -> None:
    settings = app.config["ITEMGATE"]
    app.config.update(
        PERMANENT_SESSION_LIFETIME=timedelta(minutes=settings.session_minutes),
        # CSRF is checked by _csrf_for_web below: every web form, but never the bearer-token API.
        WTF_CSRF_CHECK_DEFAULT=False,
        WTF_CSRF_TIME_LIMIT=None,  # the token lives as long as the (timed-out) session
    )
    login_manager.init_app(app)
    login_manager.login_view = "web.login"
    login_manager.login_message = ""
    # For the permanent sessions used here Flask-Login's "strong" mode only marks a session non-fresh when the
    # client changes; load_session_user refuses it outright (the server-side session records its client).
    login_manager.session_protection = "strong"
    login_manager.user_loader(load_session_user)
    csrf.init_app(app)
    # The catalogs Flask-Babel's own gettext reads too (i18n._ reads the same files, with {name} formatting).
    babel.init_app(app, default_locale="zh", default_timezone="Asia/Shanghai",
                   locale_selector=i18n.select_locale, default_translation_directories=str(i18n.TRANSLATIONS))
    i18n.install(app)

    @app.context_processor
    def _evidence_lock_warning() -> dict[str, Any]:
        def evidence_lock_off() -> bool:
            # A standing warning for administrators while the bucket has no object lock (ITEMGATE_EVIDENCE_LOCK=off).
            if not current_user.is_authenticated or not may(current_user, "ops.maintain"):
                return False
            return evidence_lock_state(app) == "off"

        def unread_notifications() -> int:
            # The bell on every page: one indexed count of my own unread rows (ix_notifications_user).
            if not current_user.is_authenticated:
                return 0
            from engine.trust.notify import unread_count

            if "unread_notifications" not in g:
                g.unread_notifications = unread_count(db.session, current_user.row)
            return int(g.unread_notifications)

        def can(action: str, scope: str | None = None) -> bool:
            # Templates ask the matrix what to offer; the routes and use cases enforce the same rules.
            granted = scope_of(getattr(current_user, "role", None), action)
            return granted is not None and (scope is None or granted == scope)

        return {"evidence_lock_off": evidence_lock_off, "can": can, "unread_notifications": unread_notifications}

    @app.before_request
    def _web_context() -> Any:
        if request.path.startswith("/api/") or request.path.startswith("/static/"):
            return None
        touch = g.pop("web_session_touch", None)
        if touch is not None:
            touch_web_session(touch)
        lang = request.args.get("lang")
        if lang in i18n.LANGUAGES:
            session["lang"] = lang
            _remember_language(lang)
        if request.method not in _SAFE_METHODS:
            csrf.protect()
        return None

    from api.web import difficulty, pm, reports, service_orders  # noqa: F401  (their pages join the blueprint before it is registered)
    from api.web.views import bp

    app.register_blueprint(bp)
    from api.web.settlements import bp as settlements_bp

    app.register_blueprint(settlements_bp)
    from api.web.notifications import bp as notifications_bp

    app.register_blueprint(notifications_bp)
    from api.web.admin import bp as admin_bp

    app.register_blueprint(admin_bp)
    from api.web.admin_processes import bp as admin_processes_bp

    app.register_blueprint(admin_processes_bp)

    @app.get("/", endpoint="index")
    def index() -> Any:
        if current_user.is_authenticated:
            return redirect(url_for("web.inbox"))
        return redirect(url_for("web.login"))


def html_error(status: int, detail: str, code: str | None = None) -> Any:
    """A friendly error page for web requests (the detail stays in the log; people get a plain sentence)."""
    db.session.rollback()
    if status == 400 and "CSRF" in (detail or ""):
        message = _("表单已过期或缺少安全令牌，请返回并刷新页面后重试。")
    elif code in _CODE_TEXT:
        message = _(_CODE_TEXT[code])
    else:
        message = _(_ERROR_TEXT.get(status, "出现了错误。"))
    return render_template("web/error.html", status=status, message=message), status


__all__ = ["SessionUser", "html_error", "register"]

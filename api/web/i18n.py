"""Web translations: Chinese is the source language; a dict gives English. Flask-Babel picks the locale."""
from __future__ import annotations

import io
import re
from datetime import date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from babel import support
from babel.messages.mofile import write_mo
from babel.messages.pofile import read_po
from flask import Flask, request, session
from flask_babel import format_date, format_datetime, get_locale

from engine.contract.catalog import ARTEFACT_KINDS
from engine.runtime.workkinds import stage_labels, step_help
from engine.trust.policy import ROLE_LABELS

LANGUAGES = ("zh", "en")
DEFAULT = "zh"

# Stage names and step help come from the BPMN models (engine/runtime/workkinds.py); English is below.
STAGES = stage_labels()
ROLES = {**ROLE_LABELS, "system": "系统"}
STATUSES = {"active": "进行中", "completed": "已完成", "cancelled": "已取消", "ready": "待办"}
MODES = {"new": "新增接入", "iteration": "优化迭代", "record": "计量记录", "deliverable": "交付成果"}
CHANNELS = {"pc": "PC端", "mobile": "移动端", "kiosk": "自助终端"}
EVENTS = {
    "item.created": "事项登记", "item.completed": "事项完成", "item.difficulty_set": "确定难度系数",
    "task.claimed": "认领任务", "task.unclaimed": "放回任务", "task.handed_over": "转交任务",
    "task.completed": "完成任务", "artefact.uploaded": "上传交付物", "artefact.downloaded": "下载交付物",
    "timer.fired": "定时触发", "workload.tallied": "计入工作量",
    "item.cancelled": "事项已取消", "item.reworked": "已退回重做", "item.difficulty_proposed": "建议难度系数已调整",
    "task.reopened": "重新打开任务", "service_order.accepted": "受理运营服务单",
    # Notifications sent about the item (engine/trust/notify.py records each as notification.<kind>).
    "notification.returned": "发出通知：退回", "notification.new_task": "发出通知：新任务",
    "notification.difficulty": "发出通知：难度确认", "notification.handover": "发出通知：转交",
    "notification.reminder": "发出通知：超期提醒", "notification.escalation": "发出通知：超期升级",
    "notification.settlement": "发出通知：结算",
}
DECISIONS = {"approve": "确认通过", "return": "退回修改"}
STEP_HELP = step_help()

# English comes from the gettext catalog api/translations/en/LC_MESSAGES/messages.po (compiled by `make`; see
# `make translations` to extract new texts). EN is kept only for code that still adds texts the old way: it is
# consulted after the catalog, and scripts/en_dict_to_po.py folds it into the catalog.
EN: dict[str, str] = {}


# marshmallow's English messages → Chinese (shown inline under the field).
_MESSAGES = {
    "Missing data for required field.": "此项必填。",
    "Must be equal to True.": "请勾选确认。",
    "Not a valid integer.": "请输入有效的整数。",
    "Not a valid number.": "请输入有效的数字。",
    "Not a valid date.": "请输入有效的日期。",
    "Not a valid URL.": "请输入有效的网址。",
    "Must be one of: approve, return.": "选项无效。",
    "Field may not be null.": "此项必填。",
}


def select_locale() -> str:
    lang = session.get("lang")
    return lang if lang in LANGUAGES else DEFAULT


def lang() -> str:
    locale = get_locale()
    return "en" if locale is not None and locale.language == "en" else "zh"


TRANSLATIONS = Path(__file__).resolve().parents[1] / "translations"
_catalogs: dict[str, Any] = {}


def _catalog(locale: str) -> Any:
    """The compiled catalog (messages.mo, built by `make`); from the .po itself when it has not been built
    (a checkout run straight from pytest), so a missing build step never shows Chinese to English readers."""
    if locale not in _catalogs:
        base = TRANSLATIONS / locale / "LC_MESSAGES"
        mo, po = base / "messages.mo", base / "messages.po"
        if mo.exists() and (not po.exists() or mo.stat().st_mtime >= po.stat().st_mtime):
            with mo.open("rb") as f:
                _catalogs[locale] = support.Translations(f)
        elif po.exists():
            buffer = io.BytesIO()
            with po.open("rb") as f:
                write_mo(buffer, read_po(f, locale=locale))
            buffer.seek(0)
            _catalogs[locale] = support.Translations(buffer)
        else:
            _catalogs[locale] = support.NullTranslations()
    return _catalogs[locale]


def translate(text: str, locale: str = "en") -> str:
    out = _catalog(locale).gettext(text)
    return EN.get(text, out) if out == text else out


def _(text: str, **values: Any) -> str:
    """A Chinese source text in the page's language; `{name}` placeholders filled from `values`."""
    out = translate(text) if lang() == "en" else text
    return out.format(**values) if values else out


_RANGE = [
    (re.compile(r"Must be greater than or equal to (\S+) and less than or equal to (\S+?)\.?$"),
     "必须在 {0}–{1} 之间。"),
    (re.compile(r"Must be greater than (\S+) and less than (\S+?)\.?$"), "必须大于 {0} 且小于 {1}。"),
    (re.compile(r"Must be greater than or equal to (\S+?)\.?$"), "不能小于 {0}。"),
    (re.compile(r"Must be less than or equal to (\S+?)\.?$"), "不能大于 {0}。"),
    (re.compile(r"Must be greater than (\S+?)\.?$"), "必须大于 {0}。"),
    (re.compile(r"Must be less than (\S+?)\.?$"), "必须小于 {0}。"),
    (re.compile(r"Length must be between (\d+) and (\d+)\.?$"), "长度必须在 {0}–{1} 个字之间。"),
    (re.compile(r"Shorter than minimum length (\d+)\.?$"), "不能少于 {0} 个字。"),
    (re.compile(r"Longer than maximum length (\d+)\.?$"), "不能超过 {0} 个字。"),
    (re.compile(r"Length must be (\d+)\.?$"), "长度必须是 {0} 个字。"),
]


def _number(text: str) -> str:
    """1.0 → 1.0, 5 → 5, 100000 → 100,000: limits as people write them."""
    try:
        value = float(text)
    except ValueError:
        return text
    if value.is_integer() and "." not in text:
        return f"{int(value):,}"
    return text


def form_message(message: str, field_title: str | None = None) -> str:
    """A field error in the page's language, with the limits it broke ("难度系数必须在 0.1–5 之间。"):
    known marshmallow texts get a Chinese source first."""
    for pattern, template in _RANGE:
        match = pattern.match(message)
        if match:
            values = [_number(v) for v in match.groups()]
            text = _(template).format(*values)
            if field_title:
                return (f"{field_title} " if lang() == "en" else field_title) + text
            return text
    if message.startswith("退回时必须填写审核意见"):
        message = "退回时必须填写审核意见。"
    return _(_MESSAGES.get(message, message))


def label(table: dict[str, str], key: str | None) -> str:
    if key is None:
        return ""
    return _(table.get(key, key))


def kind_title(kind: str) -> str:
    if kind in ARTEFACT_KINDS:
        return _(ARTEFACT_KINDS[kind])
    # A kind a contract's catalogue declares ([artefact_kinds]): its own title, read once per request.
    from flask import g

    declared = g.get("declared_kinds")
    if declared is None:
        from sqlalchemy import select

        from api.extensions import db
        from storage.models import Contract

        declared = {}
        for settings in db.session.scalars(select(Contract.settings)):
            declared.update((settings or {}).get("artefact_kinds") or {})
        g.declared_kinds = declared
    spec = declared.get(kind)
    if spec is None:
        return kind
    return str(spec.get("title_en") or spec["title"]) if lang() == "en" else str(spec["title"])


def fmt_datetime(value: datetime | str | None) -> str:
    if not value:
        return ""
    if isinstance(value, str):
        value = datetime.fromisoformat(value.replace("Z", "+00:00"))
    return format_datetime(value, "yyyy-MM-dd HH:mm")


def fmt_date(value: date | datetime | None) -> str:
    if not value:
        return ""
    if isinstance(value, datetime):
        return format_datetime(value, "yyyy-MM-dd")
    return format_date(value, "yyyy-MM-dd")


def filesize(size: int | None) -> str:
    size = int(size or 0)
    if size < 1024:
        return f"{size} B"
    if size < 1024 * 1024:
        return f"{size / 1024:.1f} KB"
    return f"{size / 1024 / 1024:.1f} MB"


def quantity(value: Any) -> str:
    """A metered record's units for people: every digit kept, no exponent, thousands grouped (1,440,000,000)."""
    if value is None:
        return ""
    number = Decimal(str(value))
    return f"{number.normalize():,f}" if number.is_finite() else str(value)


def url_with(**changes: Any) -> str:
    """The current page's URL with some query arguments changed (None removes one)."""
    args = {k: v for k, v in request.args.items()}
    for key, value in changes.items():
        if value is None or value == "":
            args.pop(key, None)
        else:
            args[key] = str(value)
    query = urlencode(args)
    return request.path + (f"?{query}" if query else "")


def _shown_data(form_key: str, data: dict[str, Any]) -> Any:
    from api.web.formfields import shown_data

    return shown_data(form_key, data)


def install(app: Flask) -> None:
    env = app.jinja_env
    env.globals.update(
        _=_, lang=lang, url_with=url_with, kind_title=kind_title,
        stage_label=lambda k: label(STAGES, k), role_label=lambda k: label(ROLES, k),
        status_label=lambda k: label(STATUSES, k), mode_label=lambda k: label(MODES, k),
        channel_label=lambda k: label(CHANNELS, k), event_label=lambda k: label(EVENTS, k),
        decision_label=lambda k: label(DECISIONS, k),
        step_help=lambda form: _(STEP_HELP[form]) if form in STEP_HELP else "",
        shown_data=_shown_data,
    )
    env.filters.update(dt=fmt_datetime, d=fmt_date, filesize=filesize, quantity=quantity)

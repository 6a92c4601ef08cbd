"""Web translations: Chinese is the source language; a dict gives English. Flask-Babel picks the locale."""
from __future__ import annotations

import io
import re
from datetime import date, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from babel import support
from babel.messages.mofile import write_mo
from babel.messages.pofile import read_po
from flask import Flask, request, session
from flask_babel import format_date, format_datetime, get_locale

from engine.catalog import ARTEFACT_KINDS
from engine.policy import ROLE_LABELS
from engine.workkinds import stage_labels, step_help

LANGUAGES = ("zh", "en")
DEFAULT = "zh"

# Stage names and step help come from the BPMN models (engine/workkinds.py); English is below.
STAGES = stage_labels()
ROLES = {**ROLE_LABELS, "system": "系统"}
STATUSES = {"active": "进行中", "completed": "已完成", "cancelled": "已取消", "ready": "待办"}
MODES = {"new": "新增接入", "iteration": "优化迭代"}
CHANNELS = {"pc": "PC端", "mobile": "移动端", "kiosk": "自助终端"}
EVENTS = {
    "item.created": "事项登记", "item.completed": "事项完成", "item.difficulty_set": "确定难度系数",
    "task.claimed": "认领任务", "task.unclaimed": "放回任务", "task.handed_over": "转交任务",
    "task.completed": "完成任务", "artefact.uploaded": "上传交付物", "artefact.downloaded": "下载交付物",
    "timer.fired": "定时触发", "workload.tallied": "计入工作量",
    "item.cancelled": "事项已取消", "item.reworked": "已退回重做", "item.difficulty_proposed": "建议难度系数已调整",
    "task.reopened": "重新打开任务", "service_order.accepted": "受理运营服务单",
}
DECISIONS = {"approve": "确认通过", "return": "退回修改"}
STEP_HELP = step_help()

# English comes from the gettext catalog api/translations/en/LC_MESSAGES/messages.po (compiled by `make`; see
# `make translations` to extract new texts). EN is kept only for code that still adds texts the old way: it is
# consulted after the catalog, and scripts/en_dict_to_po.py folds it into the catalog.
EN: dict[str, str] = {}


# The admin console and notifications (api/web/admin.py, api/web/notifications.py).
EN.update({
    "系统管理": "Administration", "新建部门": "New department", "部门代码": "Department code",
    "中文名称": "Chinese name", "创建": "Create", "牵头审核人": "Lead reviewer",
    "群机器人（通知）": "Group robot (notifications)",
    "群机器人 Webhook": "Group robot webhook", "移除机器人": "Remove the robot",
    "企业微信/钉钉 Webhook 地址": "WeCom/DingTalk webhook URL", "工作日历": "Working-day calendar",
    "覆盖的年份": "Years covered", "年份": "Year", "来源": "Source", "录入时间": "Entered at",
    "未覆盖：按周一至周五计算": "Not covered: Monday to Friday are counted", "查看/录入": "View / enter",
    "{year} 年": "{year}",
    "{year} 年的节假日尚未录入，期限按周一至周五计算。请录入法定节假日和调休上班日。":
        "The holidays of {year} are not entered yet; deadlines count Monday to Friday. Enter the public holidays and "
        "make-up workdays.",
    "日历包已覆盖此年份；在此录入将以管理员录入为准。":
        "The calendar package covers this year; an entry here takes precedence.",
    "切换": "Go", "法定节假日（每行一天：YYYY-MM-DD 备注）": "Public holidays (one a line: YYYY-MM-DD note)",
    "调休上班日（周六或周日，每行一天）": "Make-up workdays (a Saturday or Sunday, one a line)",
    "保存 {year} 年日历": "Save the {year} calendar", "系统状态": "System status", "就绪状态": "Readiness",
    "就绪": "Ready", "未就绪": "Not ready", "正常": "OK", "证据锁定": "Evidence lock",
    "对象锁定已启用": "Object lock is on", "存储桶未启用对象锁定": "The bucket has no object lock",
    "暂时无法确认": "Cannot tell right now", "审计链": "Audit chain", "最近校验": "Last verification",
    "通过": "Passed", "未通过": "Failed", "{n} 条事件": "{n} events", "从未校验": "Never verified",
    "最近锚定": "Last anchor", "最近 7 天没有锚定": "No anchor in the last 7 days",
    "证据完整性检查 (fsck)": "Evidence check (fsck)", "无问题": "Clean", "发现问题": "Problems found",
    "检查 {c} 个，问题 {p} 个，孤立对象 {o} 个": "{c} checked, {p} problems, {o} orphans",
    "从未运行": "Never run", "后台任务": "Background work", "到期未触发的定时器": "Due timers not yet fired",
    "导出任务": "Export jobs", "无": "none", "通知发送": "Notification delivery", "待发送": "pending",
    "已发送": "sent", "邮件服务器": "Mail server", "已配置": "configured",
    "未配置（ITEMGATE_SMTP_HOST），不发送邮件": "not configured (ITEMGATE_SMTP_HOST): no e-mail is sent",
    "未覆盖": "not covered", "录入": "Enter", "发送失败的通知": "Failed notification deliveries",
    "方式": "Channel", "目标": "Target", "标题": "Title", "尝试次数": "Attempts", "最后错误": "Last error",
    "重试": "Retry", "没有发送失败的通知。": "No failed deliveries.", "合同与服务目录": "Contracts and catalogues",
    "检查结果": "Check result", "发现 {n} 个错误，未载入任何内容。": "{n} problem(s) found; nothing was loaded.",
    "第 {n} 行": "Line {n}", "新合同": "New contract", "与已载入的版本完全相同": "Identical to the loaded version",
    "与已载入版本的差异如下": "Differences from the loaded version", "合同信息": "Contract",
    "字段": "Field", "原值": "Old", "新值": "New", "服务条目": "Service lines", "编号": "Code",
    "变化": "Change", "明细": "Details",
    "文件中未列出的已有条目保留不变（已有事项和台账引用它们）：":
        "Loaded lines the file does not list stay as they are (items and the ledger refer to them): ",
    "确认载入": "Load it", "已载入的合同": "Loaded contracts", "合同编号": "Contract code",
    "载入时间": "Loaded at", "还没有合同。": "No contracts yet.", "上传服务目录文件": "Upload a catalogue file",
    ("上传 TOML 格式的合同服务目录（格式见 docs/CATALOG.md）。"
     "先检查：列出每个错误及其行号，或与已载入版本的差异；确认后再载入。"):
        "Upload a contract catalogue in TOML (format: docs/CATALOG.md). It is checked first: every problem with its "
        "line, or the differences from the loaded version; then you load it.",
    "目录文件": "Catalogue file", "检查": "Check", "流程模型": "Process models", "用户": "Users",
    "新建用户": "New user", "姓名": "Name", "角色": "Role", "初始密码": "Initial password", "搜索": "Search",
    "全部": "All", "有效": "Active", "已停用": "Deactivated", "角色与部门": "Role and department",
    "重置密码": "Reset password", "停用": "Deactivate", "启用": "Activate", "新密码": "New password",
    "重置": "Reset",
    "停用后该用户的所有登录立即结束，已认领的任务退回队列。确定停用？":
        "Deactivating ends all of this user's sign-ins at once and returns their claimed tasks to the queue. "
        "Deactivate?",
    "通知": "Notifications", "未读": "Unread", "全部标为已读": "Mark all read",
    "通知方式（邮件、群机器人）": "Where else to send them (e-mail, group robot)", "内容": "Message",
    "已读": "Read", "没有通知。": "No notifications.", "通知方式": "Notification channels",
    "通知始终显示在页面右上角的铃铛中；也可以同时发送到邮箱或聊天群机器人（企业微信、钉钉）。发送在后台进行，失败会自动重试。":
        "Notifications always appear under the bell at the top right; they can also go to an e-mail address or a "
        "chat group robot (WeCom, DingTalk). Sending happens in the background and failures are retried.",
    "电子邮件": "E-mail", "例如 li@example.org": "e.g. li@example.org", "聊天机器人 Webhook": "Chat robot webhook",
    "企业微信群机器人的 Webhook 地址，或 wecombot://KEY、dingtalk://TOKEN":
        "A WeCom group robot's webhook URL, or wecombot://KEY, dingtalk://TOKEN",
    "{n} 条未读": "{n} unread", "提交的内容有误：": "The form has errors: ",
    "已重新排队发送": "Queued for sending again", "该发送记录不是失败状态。": "That delivery has not failed.",
    "2–64 位字母、数字、._-": "2–64 letters, digits, . _ -", "密码至少 8 位": "at least 8 characters",
    "未知部门": "unknown department", "已创建用户 {name}": "User {name} created", "未知角色": "unknown role",
    "已停用 {name}": "{name} deactivated", "已启用 {name}": "{name} activated",
    "已重置 {name} 的密码，其所有登录已结束": "{name}'s password was reset; all of their sign-ins ended",
    "已保存 {name}": "{name} saved", "；{n} 个已认领任务已退回队列": "; {n} claimed task(s) returned to the queue",
    "已创建部门": "Department created", "已保存部门 {code}": "Department {code} saved",
    "文件不是 UTF-8 文本（TOML）": "The file is not UTF-8 text (TOML)", "请选择目录文件": "Choose a catalogue file",
    "已载入合同 {code} 的服务目录": "The catalogue of contract {code} was loaded",
    "合同 {code} 的服务目录与已载入的版本相同，未做更改":
        "The catalogue of contract {code} is the same as the loaded one; nothing changed",
    "第 {n} 行不是“YYYY-MM-DD 备注”：{line}": "Line {n} is not “YYYY-MM-DD note”: {line}",
    "已保存 {year} 年的工作日历": "The {year} calendar was saved",
    "已将 {n} 条通知标为已读": "{n} notification(s) marked read", "通知方式已保存": "Notification channels saved",
    "数据库": "Database", "对象存储": "Object store", "日历包": "calendar package", "管理员录入": "entered by an admin",
    "邮件": "E-mail", "新增": "added", "修改": "changed", "不变": "unchanged",
    "日历包 (chinese-calendar)": "calendar package (chinese-calendar)", "新任务": "New task",
    "难度确认": "Difficulty", "超期提醒": "Reminder", "超期升级": "Escalation",
})

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
    return _(ARTEFACT_KINDS.get(kind, kind))


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
    env.filters.update(dt=fmt_datetime, d=fmt_date, filesize=filesize)
